"""BUDGET_ACTION=propose and approvals (SPEC section 8), in process: ``handler.process`` with a
scripted DLI and an in-memory sink. The same flows run through the real servers in
tests/e2e/test_approval.py."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from cancel_handler import approvals, handler
from cancel_handler.config import ConfigError, load_settings
from cancel_handler.errors import RetryLater
from tests.unit.fakes import OTHER_PROJECT_ID, PROJECT_ID, Unit, delivery, job_id

KEY = b"unit-approval-key-0123456789abcdefghij"
OTHER_KEY = b"another-deployment-key-0123456789abcdef"
BASE_URL = "https://fn.example.run.app/dli-cancel-http"
BUDGET = {"name": "dli-monthly", "cost": 1043.2, "amount": 1000, "currency": "EUR"}


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "approval-keys"
    path.write_bytes(KEY + b"\n")
    return path


def proposing(key_file: Path, **env: str) -> Unit:
    return Unit({"BUDGET_ACTION": "propose", "APPROVAL_KEY_FILE": str(key_file), **env})


def budget(*jobs: str, queues: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"event_type": "budget-exceeded", **extra}
    if jobs:
        body["job_ids"] = list(jobs)
    if queues:
        body["queue_names"] = list(queues)
    return body


def approve(token: str, **extra: Any) -> dict[str, Any]:
    return {"event_type": "budget-exceeded", "approve": token, **extra}


def propose(unit: Unit, body: dict[str, Any], event_id: str = "proposal-1") -> str:
    """The token of a proposal of ``body`` (the same in every awaiting_approval result)."""
    handler.process(delivery(body, "budget-exceeded", event_id=event_id), unit.runtime)
    tokens = {r["approval_token"] for r in unit.published if r["outcome"] == "awaiting_approval"}
    assert len(tokens) == 1
    unit.sink.messages.clear()
    return tokens.pop()


# -- propose ---------------------------------------------------------------------------------


def test_a_budget_event_proposes_and_cancels_nothing(key_file: Path) -> None:
    unit = proposing(key_file, APPROVAL_BASE_URL=BASE_URL)
    explicit, listed = job_id(), job_id()
    unit.dli.listings["etl"] = [listed]
    body = budget(explicit, queues=("etl",), budget=BUDGET, reason="over budget")

    report = handler.process(delivery(body, "budget-exceeded", event_id="b-1"), unit.runtime)

    assert unit.dli.called("cancel") == [] and unit.dli.called("list") == ["etl"]
    by_job = unit.by_job()
    assert set(by_job) == {explicit, listed}
    token = by_job[explicit]["approval_token"]
    for result in by_job.values():
        assert result["outcome"] == "awaiting_approval" and result["is_success"] is False
        assert result["approval_token"] == token
        assert result["approval_url"] == f"{BASE_URL}?approve={token}"
        assert result["source_event_id"] == "b-1" and result["reason"] == "over budget"
        assert result["message"].startswith("proposed, not cancelled: approve before ")
    assert by_job[listed]["queue_name"] == "etl"
    assert [r.outcome for r in report.results] == ["awaiting_approval"] * 2
    ring = approvals.parse_key_file(KEY)
    proposal = approvals.verify(token, ring, time.time())
    assert [(j.job_id, j.kind, j.queue_name) for j in proposal.jobs] == [
        (explicit, "sql", None),
        (listed, "sql", "etl"),
    ]
    assert proposal.project_id == PROJECT_ID and proposal.source_event_id == "b-1"
    assert proposal.budget == approvals.BudgetFigures("dli-monthly", 1043.2, 1000.0, "EUR")
    assert proposal.expires_at - proposal.issued_at == 86400
    assert not proposal.dry_run


def test_without_a_base_url_a_proposal_has_no_link(key_file: Path) -> None:
    unit = proposing(key_file, APPROVAL_TTL_S="600")
    token = propose(unit, budget(job_id()))
    proposal = approvals.verify(token, approvals.parse_key_file(KEY), time.time())
    assert proposal.expires_at - proposal.issued_at == 600
    handler.process(delivery(budget(job_id()), "budget-exceeded"), unit.runtime)
    assert "approval_url" not in unit.published[0]


def test_a_cloud_billing_notification_is_proposed_with_its_figures(key_file: Path) -> None:
    target = json.dumps({"*": {"project_id": PROJECT_ID, "queue_names": ["etl"]}})
    unit = proposing(key_file, BUDGET_TARGETS=target)
    unit.dli.listings["etl"] = [job_id()]
    note = {
        "budgetDisplayName": "team budget",
        "costAmount": 120.5,
        "budgetAmount": 100.0,
        "currencyCode": "USD",
    }
    attributes = {"budgetId": "b-123", "schemaVersion": "1.0"}
    handler.process(
        delivery(note, "budget-exceeded", attributes=attributes, event_id="n-1"), unit.runtime
    )
    token = unit.published[0]["approval_token"]
    proposal = approvals.verify(token, approvals.parse_key_file(KEY), time.time())
    assert proposal.budget == approvals.BudgetFigures("team budget", 120.5, 100.0, "USD")
    assert unit.dli.called("cancel") == []


def test_job_timeouts_still_cancel_in_propose_mode(key_file: Path) -> None:
    unit = proposing(key_file)
    job = job_id()
    handler.process(delivery({"job_id": job}, "job-timeout"), unit.runtime)
    assert unit.dli.called("cancel") == [job]
    assert unit.published[0]["outcome"] == "cancelled"
    assert "approval_token" not in unit.published[0]


def test_a_proposal_publishes_the_plans_verdicts_as_usual(key_file: Path) -> None:
    unit = proposing(key_file)
    handler.process(delivery(budget(queues=("idle",)), "budget-exceeded"), unit.runtime)
    [result] = unit.published
    assert result["outcome"] == "nothing_to_cancel" and "approval_token" not in result
    unit.sink.messages.clear()
    body = budget(job_id(), project_id=OTHER_PROJECT_ID)
    handler.process(delivery(body, "budget-exceeded"), unit.runtime)
    assert [r["outcome"] for r in unit.published] == ["not_allowed"]
    assert unit.dli.calls == [("list", "idle")]


def test_a_dry_run_proposal_is_approved_as_a_dry_run(key_file: Path) -> None:
    unit = proposing(key_file)
    job = job_id()
    token = propose(unit, budget(job, dry_run=True))
    assert approvals.verify(token, approvals.parse_key_file(KEY), time.time()).dry_run
    handler.process(delivery(approve(token), "budget-exceeded"), unit.runtime)
    assert unit.dli.called("cancel") == []
    assert [(r["outcome"], r["dry_run"]) for r in unit.published] == [("dry_run", True)]


def test_a_key_file_that_disappears_sends_proposals_back(key_file: Path) -> None:
    unit = proposing(key_file)
    key_file.unlink()
    with pytest.raises(RetryLater, match="APPROVAL_KEY_FILE"):
        handler.process(delivery(budget(job_id()), "budget-exceeded"), unit.runtime)
    assert unit.published == []


# -- approve ---------------------------------------------------------------------------------


def test_an_approval_cancels_exactly_the_plan_without_listing(key_file: Path) -> None:
    unit = proposing(key_file)
    first, second, later = job_id(), job_id(), job_id()
    unit.dli.listings["etl"] = [first, second]
    token = propose(unit, budget(queues=("etl",)), event_id="proposal-9")
    unit.dli.listings["etl"] = [first, second, later]  # a job started since
    unit.dli.calls.clear()

    report = handler.process(
        delivery(approve(token), "budget-exceeded", event_id="a-1"), unit.runtime
    )

    assert sorted(unit.dli.called("cancel")) == sorted([first, second])
    assert unit.dli.called("list") == []
    for result in unit.published:
        assert result["outcome"] == "cancelled" and result["reason"] == "approved"
        assert result["source_event_id"] == "a-1"
        assert result["context"] == {"proposal_event_id": "proposal-9"}
        assert result["queue_name"] == "etl"
        assert "approval_token" not in result
    assert not report.invalid


def test_approvals_work_whatever_the_budget_action(key_file: Path) -> None:
    """Switching back to cancel keeps the outstanding tokens approvable."""
    token = propose(proposing(key_file), budget(job := job_id()))
    unit = Unit({"APPROVAL_KEY_FILE": str(key_file)})
    handler.process(delivery(approve(token), "budget-exceeded"), unit.runtime)
    assert unit.dli.called("cancel") == [job]


def test_approving_twice_reports_already_finished(key_file: Path) -> None:
    from cancel_handler.dli.types import CallOutcome

    unit = proposing(key_file)
    job = job_id()
    token = propose(unit, budget(job))
    handler.process(delivery(approve(token), "budget-exceeded"), unit.runtime)
    unit.dli.cancels[job] = CallOutcome("already_finished", False, None, "", 400, "r", 1)
    handler.process(delivery(approve(token), "budget-exceeded"), unit.runtime)
    assert [(r["outcome"], r["reason"]) for r in unit.published] == [
        ("cancelled", "approved"),
        ("already_finished", "approved"),
    ]


def _mangled(token: str) -> str:
    i = len(token) // 2
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (_mangled, "changed after it was signed"),
        (lambda t: t + "x", "base64url"),
        (lambda t: "", "approve must be the approval_token"),
        (None, "was signed with key"),
        ("expired", "expired at"),
    ],
)
def test_a_token_that_approves_nothing_is_one_invalid_event_and_no_call(
    key_file: Path, make: Any, why: str
) -> None:
    unit = proposing(key_file)
    token = propose(unit, budget(job_id(), job_id()))
    if make is None:
        other = approvals.parse_key_file(OTHER_KEY)
        token = approvals.sign(approvals.verify(token, approvals.parse_key_file(KEY), 0), other)
    elif make == "expired":
        plan = approvals.verify(token, approvals.parse_key_file(KEY), 0)
        old = approvals.new_proposal(
            plan.project_id, plan.jobs, "p", now=time.time() - 100, ttl_s=50
        )
        token = approvals.sign(old, approvals.parse_key_file(KEY))
    else:
        token = make(token)
    unit.dli.calls.clear()

    report = handler.process(delivery(approve(token), "budget-exceeded"), unit.runtime)

    [result] = unit.published
    assert result["outcome"] == "invalid_event" and result["job_id"] == ""
    assert result["error_code"] == "INVALID_EVENT" and why in result["message"]
    assert unit.dli.calls == [] and report.invalid


def test_without_keys_an_approval_is_refused(key_file: Path) -> None:
    token = propose(proposing(key_file), budget(job_id()))
    unit = Unit()
    handler.process(delivery(approve(token), "budget-exceeded"), unit.runtime)
    [result] = unit.published
    assert result["outcome"] == "invalid_event" and "not enabled" in result["message"]
    assert unit.dli.calls == []


@pytest.mark.parametrize(
    ("env", "body_extra", "outcome"),
    [
        ({"DRY_RUN": "true"}, {}, "dry_run"),
        ({}, {"dry_run": True}, "dry_run"),
        ({"DLI_ALLOWED_PROJECT_IDS": OTHER_PROJECT_ID}, {}, "not_allowed"),
    ],
)
def test_dry_run_and_the_allow_list_apply_to_approvals(
    key_file: Path, env: dict[str, str], body_extra: dict[str, Any], outcome: str
) -> None:
    job = job_id()
    token = propose(proposing(key_file), budget(job))
    unit = proposing(key_file, **env)
    handler.process(delivery(approve(token, **body_extra), "budget-exceeded"), unit.runtime)
    assert [(r["job_id"], r["outcome"]) for r in unit.published] == [(job, outcome)]
    assert unit.dli.called("cancel") == []


@pytest.mark.parametrize(
    ("body", "topic", "field"),
    [
        ({"approve": "x", "job_ids": [job_id()]}, "budget-exceeded", "job_ids"),
        ({"approve": "x", "queue_names": ["etl"]}, "budget-exceeded", "queue_names"),
        ({"approve": "x", "project_id": PROJECT_ID}, "budget-exceeded", "project_id"),
        ({"approve": "x"}, "job-timeout", "event_type"),
        ({"approve": 12}, "budget-exceeded", "approve"),
        ({"approve": "x", "dry_run": "yes"}, "budget-exceeded", "dry_run"),
    ],
)
def test_malformed_approval_events_are_invalid(
    key_file: Path, body: dict[str, Any], topic: str, field: str
) -> None:
    unit = proposing(key_file)
    report = handler.process(delivery(body, topic), unit.runtime)
    [result] = unit.published
    assert result["outcome"] == "invalid_event" and result["message"].startswith(field)
    assert report.invalid and unit.dli.calls == []


# -- configuration ---------------------------------------------------------------------------

BASE_ENV = {
    "DLI_ENDPOINT": "https://dli.example.com",
    "DLI_PROJECT_ID": PROJECT_ID,
    "HUAWEICLOUD_SDK_AK": "AK",
    "HUAWEICLOUD_SDK_SK": "SK",
    "RESULT_TOPIC": "projects/p/topics/r",
}


def problems(**env: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings({**BASE_ENV, **env})
    return caught.value.problems


def test_propose_needs_a_readable_key_file(tmp_path: Path, key_file: Path) -> None:
    assert problems(BUDGET_ACTION="propose") == [
        "BUDGET_ACTION=propose needs APPROVAL_KEY_FILE (the keys that sign approval tokens)"
    ]
    missing = tmp_path / "missing"
    [problem] = problems(BUDGET_ACTION="propose", APPROVAL_KEY_FILE=str(missing))
    assert problem.startswith(f"APPROVAL_KEY_FILE {missing} unreadable")
    short = tmp_path / "short"
    short.write_bytes(b"too-short\n")
    [problem] = problems(BUDGET_ACTION="PROPOSE", APPROVAL_KEY_FILE=str(short))
    assert problem == f"APPROVAL_KEY_FILE {short} key 1 is 9 bytes long; at least 32 needed"
    settings = load_settings(
        {**BASE_ENV, "BUDGET_ACTION": "Propose", "APPROVAL_KEY_FILE": str(key_file)}
    )
    assert settings.budget_action == "propose" and settings.approval_ttl_s == 86400


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("BUDGET_ACTION", "ask", "BUDGET_ACTION must be 'cancel' or 'propose', got 'ask'"),
        ("APPROVAL_TTL_S", "0", "APPROVAL_TTL_S must be >= 1"),
        ("APPROVAL_TTL_S", "1.5", "APPROVAL_TTL_S must be an integer"),
        ("APPROVAL_BASE_URL", "http://fn.example.com", "must be an https:// URL"),
        ("APPROVAL_BASE_URL", "ftp://localhost/x", "must be an https:// URL"),
        ("APPROVAL_BASE_URL", "https://fn.example.com/?a=1", "without query or fragment"),
        ("APPROVAL_BASE_URL", "https://", "without query or fragment"),
    ],
)
def test_approval_settings_are_checked(name: str, value: str, problem: str) -> None:
    [found] = problems(**{name: value})
    assert problem in found


def test_loopback_base_urls_may_be_http() -> None:
    for url in ("http://127.0.0.1:8080", "http://localhost:9/fn", "https://x.run.app/f"):
        assert load_settings({**BASE_ENV, "APPROVAL_BASE_URL": url}).approval_base_url == url
