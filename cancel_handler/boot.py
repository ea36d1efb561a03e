"""What an instance does once at start: set up logging, validate the configuration and say
what is wrong.

Light on purpose (configuration and logs only): it runs while the server starts, before it
answers its first request.
"""

from __future__ import annotations

from cancel_handler import logs
from cancel_handler.config import ConfigError, Settings, load_log_settings, load_settings


def startup() -> None:
    """Validate the configuration once, at instance start, and say what is wrong (one log
    line naming every problem), before any event arrives. Events then raise until it is
    fixed; the process keeps running."""
    log_settings = load_log_settings()
    logs.setup(log_settings.level, log_settings.gcp_project)
    try:
        settings = load_settings()
    except ConfigError as error:
        logs.error(
            "configuration error: " + "; ".join(error.problems) + ". Every event will be "
            "answered with an error (and delivered again) until the configuration is fixed",
            problems=error.problems,
        )
        return
    register_secrets(settings)
    logs.info(
        "dli-cancel ready",
        dli_endpoint=settings.dli_endpoint,
        auth=settings.auth_mode,
        result_topic=settings.result_topic or "(stdout: local run)",
        dli_max_attempts=settings.dli_max_attempts,
        dli_timeout_s=settings.dli_timeout_s,
        event_budget_s=settings.event_budget_s,
        max_event_age_s=settings.max_event_age_s,
        dry_run=settings.dry_run,
        budget_action=settings.budget_action,
        log_level=settings.log_level,
    )


def register_secrets(settings: Settings) -> None:
    for secret in (settings.access_key, settings.secret_key, settings.security_token):
        if secret:
            logs.register_secret(secret.reveal())
    if settings.iam and settings.iam.password:
        logs.register_secret(settings.iam.password.reveal())
