"""Baseline: hello world that also imports google-cloud-pubsub at module level."""

from typing import Any

import functions_framework
import google.cloud.pubsub_v1  # noqa: F401


@functions_framework.http
def hello(request: Any) -> str:
    return "ok"
