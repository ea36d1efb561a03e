"""What an instance builds once and every delivery shares: the settings, the DLI client (its
connection pool and credentials), the result sink, the fan-out sink, the event rules, the
approval keys.

``runtime()`` is the instance's one ``Runtime``, built on the first event. While the
configuration is wrong it raises ``RetryLater`` naming every problem, and is built as soon as
an event finds it fixed (a mounted secret may appear after the start).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import requests

from cancel_handler import logs
from cancel_handler.approvals import KeyFile, KeyFileError, KeyRing
from cancel_handler.boot import register_secrets
from cancel_handler.config import ConfigError, Settings, load_settings
from cancel_handler.dli.auth import build_auth
from cancel_handler.dli.client import DliClient, RetryPolicy, new_pool
from cancel_handler.dli.types import Jobs
from cancel_handler.errors import RetryLater
from cancel_handler.events import EventRules
from cancel_handler.results import PrintSink, Publisher, PubSubSink, Sink

__all__ = ["ProgressHook", "Runtime", "build_runtime", "load_settings_or_raise", "runtime"]


class ProgressHook(Protocol):
    """Told how many results an event will have, then each outcome as it is settled: the
    CLI's progress line for a bulk cancel (the deployed function has none)."""

    def planned(self, total: int) -> None: ...

    def settled(self, outcomes: Iterable[str]) -> None: ...


KEPT_CONNECTIONS = 64


@dataclass
class Runtime:
    settings: Settings
    client: Jobs
    sink: Sink  # results
    rules: EventRules
    fanout: Sink | None = None  # FANOUT_TOPIC, when set
    approval_keys: KeyFile | None = None  # APPROVAL_KEY_FILE, when set
    progress: ProgressHook | None = None  # the CLI's progress line

    def approval_ring(self) -> KeyRing | None:
        """The approval keys as the file holds them now (read again after a rotation); None
        when no APPROVAL_KEY_FILE is set. ``RetryLater`` while the file is unreadable."""
        if self.approval_keys is None:
            return None
        try:
            ring = self.approval_keys.ring()
        except KeyFileError as error:
            raise RetryLater(f"invalid configuration: {error}") from None
        for key in ring.keys:
            logs.register_secret(key.secret.decode("utf-8", "replace"))
        return ring


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                _runtime = build_runtime(load_settings_or_raise())
    return _runtime


def load_settings_or_raise() -> Settings:
    """The settings, read again (a mounted secret may have appeared since the start);
    ``RetryLater`` naming every problem while the configuration is wrong."""
    try:
        return load_settings()
    except ConfigError as error:
        raise RetryLater(str(error)) from None


def build_runtime(settings: Settings, sink: Sink | None = None) -> Runtime:
    """The runtime of ``settings``. ``sink`` replaces the result topic (the CLI prints, the
    in-process demo keeps results in memory); without one, results go to RESULT_TOPIC, or
    to stdout when none is set (local runs)."""
    register_secrets(settings)
    publisher = Publisher(settings.publish_timeout_s, settings.pubsub_emulator_host)
    if sink is None:
        sink = (
            PubSubSink(settings.result_topic, publisher) if settings.result_topic else PrintSink()
        )
    fanout = PubSubSink(settings.fanout_topic, publisher) if settings.fanout_topic else None
    keys = KeyFile(settings.approval_key_file) if settings.approval_key_file else None
    return Runtime(
        settings, _dli_client(settings), sink, EventRules.from_settings(settings), fanout, keys
    )


def _dli_client(settings: Settings) -> DliClient:
    session = requests.Session()  # IAM token requests only: a few per day
    session.trust_env = False  # TLS verification stays on (certifi)
    policy = RetryPolicy(
        max_attempts=settings.dli_max_attempts,
        timeout_s=settings.dli_timeout_s,
        base_delay_s=settings.retry_base_delay_s,
        max_delay_s=settings.retry_max_delay_s,
    )
    # Connections kept for reuse (only those a burst actually opened): every request thread of
    # the server (deploy.yaml runs 32) and a bulk event's cancels at once, without the pool
    # discarding connections (a new TLS handshake each, and a warning line each).
    pool = new_pool(max(KEPT_CONNECTIONS, settings.cancel_concurrency * 2))
    return DliClient(settings.dli_endpoint, build_auth(settings, session), policy, pool)
