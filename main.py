"""functions-framework entry points. All behaviour lives in ``cancel_handler``."""

from typing import Any

import functions_framework

from cancel_handler import entry

entry.start()
# One structured log line instead of a traceback on stderr; 500 for a raised event.
functions_framework.errorhandler(Exception)(entry.on_error)


@functions_framework.cloud_event
def cancel_dli_job(cloud_event: Any) -> None:
    """Pub/Sub (Eventarc CloudEvent or raw push): returns to acknowledge, raises to retry."""
    entry.on_cloud_event(cloud_event)


@functions_framework.http
def cancel_dli_job_http(request: Any) -> tuple[str, int, dict[str, str]]:
    """Pipelines: POST an event JSON or a push envelope; the results come back."""
    return entry.on_http(request)
