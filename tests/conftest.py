"""Shared pytest set-up: the three tiers, the `emulator` mark, one Pub/Sub emulator per
session, name helpers.

Tiers: ``tests/unit`` runs in process (no gcloud, Java or server subprocesses; enforced here),
``tests/e2e`` through the real servers, ``tests/deploy`` checks deploy.yaml, the uploaded
source and the wheel.

Tests marked ``@pytest.mark.emulator`` need gcloud with the Pub/Sub emulator. Without it they
are skipped on a developer machine and fail under ``CI=true`` (a CI run must not pass by
skipping the end-to-end tests).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from devstack.stack import REPO_ROOT, FunctionServer, PubSubEmulator, gcloud_available
from tests.e2e_support import LocalStack, start_stack, stop_stack
from tests.webdriver import browser_available

EMULATOR_MISSING = "gcloud (Pub/Sub emulator) not installed"
BROWSER_MISSING = "chromium and chromedriver not installed (make browser)"
UNIT = Path(__file__).resolve().parent / "unit"
IN_PROCESS_ONLY = "tests/unit runs in process (no gcloud, Java or servers): move it to tests/e2e"

# Property-based tests: a moderate number of examples per test by default (CI), many more with
# HYPOTHESIS_PROFILE=deep (`make fuzz`). No deadline: a loaded CI machine is slow, not wrong.
settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
# `make test-unit`, the fast tier a developer runs between edits: fewer examples per property
# (the full count still runs in `make test` and CI).
settings.register_profile(
    "quick", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "deep",
    max_examples=10000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _require_gcloud() -> None:
    if gcloud_available():
        return
    if _in_ci():
        pytest.fail(
            f"{EMULATOR_MISSING}: CI=true, so emulator tests must run, not be skipped. "
            "Install the Google Cloud CLI with the pubsub-emulator component and Java.",
            pytrace=False,
        )
    pytest.skip(EMULATOR_MISSING)


def _in_unit_tier(node: pytest.Item) -> bool:
    return UNIT in node.path.resolve().parents


def _require_browser() -> None:
    if browser_available():
        return
    if _in_ci():
        pytest.fail(
            f"{BROWSER_MISSING}: CI=true, so browser tests must run, not be skipped "
            "(.ci/run installs them with `make browser`).",
            pytrace=False,
        )
    pytest.skip(BROWSER_MISSING)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in ("emulator", "browser"):
        if item.get_closest_marker(mark) is not None and _in_unit_tier(item):
            pytest.fail(f"marked {mark}: {IN_PROCESS_ONLY}", pytrace=False)
    if item.get_closest_marker("emulator") is not None:
        _require_gcloud()
    if item.get_closest_marker("browser") is not None:
        _require_browser()


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if isinstance(request.node, pytest.Item) and _in_unit_tier(request.node):

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"started a process: {IN_PROCESS_ONLY}")

        monkeypatch.setattr(subprocess, "Popen", refuse)


@pytest.fixture(scope="session")
def emulator() -> Iterator[PubSubEmulator]:
    """One started Pub/Sub emulator for the whole session (stopped at the end)."""
    _require_gcloud()
    emu = PubSubEmulator()
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """``unique_name("jobs")`` -> ``"jobs-1a2b3c4d"``: topic/subscription names per test."""

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def function_server() -> Iterator[Callable[..., FunctionServer]]:
    """Factory: ``function_server(target, env, **kwargs)`` -> a started FunctionServer.

    Every server it started is stopped when the test ends. ``kwargs`` go to FunctionServer
    (``source`` defaults to the repo's main.py); ``timeout_s`` goes to ``start``.
    """
    started: list[FunctionServer] = []

    def make(
        target: str,
        env: Mapping[str, str],
        *,
        source: str | Path = REPO_ROOT / "main.py",
        timeout_s: float = 30,
        **kwargs: Any,
    ) -> FunctionServer:
        server = FunctionServer(target, env, source=source, **kwargs)
        started.append(server)
        server.start(timeout_s)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def stack(emulator: PubSubEmulator) -> Iterator[LocalStack]:
    """The local stack (simulator, function, emulator project) shared by one test module."""
    local = start_stack(emulator)
    try:
        yield local
    finally:
        stop_stack(local)
