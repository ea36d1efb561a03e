"""Approval before cancelling (SPEC section 8, issue 13) through the real servers.

Pub/Sub emulator -> push subscription -> functions-framework (``cancel_dli_job``, with
BUDGET_ACTION=propose) -> DLI simulator -> result topic; beside it ``cancel_dli_job_http`` with
the same configuration serves the approval page (APPROVAL_BASE_URL points at it). The
real-browser test is in tests/e2e/test_approval_browser.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from cancel_handler import approvals
from devstack.stack import REPO_ROOT, FunctionServer, PubSubEmulator, child_env, free_port
from dli_simulator import Simulator
from tests.e2e_support import (
    ACCESS_KEY,
    PROJECT_ID,
    SECRET_KEY,
    LocalStack,
    post_cloud_event,
    start_stack,
    stop_stack,
)
from tests.webdriver import Browser

pytestmark = pytest.mark.emulator

KEY = b"e2e-approval-key-one-0123456789abcdefgh"
NEW_KEY = b"e2e-approval-key-two-9876543210zyxwvuts"
OTHER_KEY = b"another-deployments-key-0123456789abcdef"
RING = approvals.KeyRing.from_secrets([KEY])
MAX_BODY_BYTES = 65536


class ApprovalStack:
    """The propose-mode stack: ``local`` (CloudEvent function on the emulator) and ``page``
    (the HTTP function, same configuration), sharing one key file."""

    def __init__(self, local: LocalStack, page: FunctionServer, key_file: Path) -> None:
        self.local = local
        self.page = page
        self.key_file = key_file

    @property
    def sim(self) -> Simulator:
        return self.local.sim

    def propose(self, body: dict[str, Any], count: int) -> tuple[str, list[dict[str, Any]]]:
        """Publish a budget event; its message id and its ``count`` results."""
        event_id = self.local.publish("budget-exceeded", body)
        results = self.local.results_for(event_id, count, timeout_s=60)
        assert len(results) == count, results
        return event_id, results

    def approve(self, token: str, count: int, **extra: Any) -> tuple[str, list[dict[str, Any]]]:
        body = {"event_type": "budget-exceeded", "approve": token, **extra}
        event_id = self.local.publish("budget-exceeded", body)
        results = self.local.results_for(event_id, count, timeout_s=60)
        assert len(results) == count, results
        return event_id, results


@pytest.fixture(scope="module")
def approval_stack(
    emulator: PubSubEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApprovalStack]:
    key_file = tmp_path_factory.mktemp("approval") / "keys"
    key_file.write_bytes(KEY + b"\n")
    page_port = free_port()
    env = {
        "BUDGET_ACTION": "propose",
        "APPROVAL_KEY_FILE": str(key_file),
        "APPROVAL_BASE_URL": f"http://127.0.0.1:{page_port}",
        "CANCEL_CONCURRENCY": "8",
    }
    sim = Simulator(credentials={ACCESS_KEY: SECRET_KEY})
    sim.start()
    local = start_stack(emulator, env=env, sim=sim)
    page = FunctionServer("cancel_dli_job_http", local.server.env, port=page_port)
    try:
        page.start()
        yield ApprovalStack(local, page, key_file)
    finally:
        page.stop()
        stop_stack(local)


@pytest.fixture
def stack(approval_stack: ApprovalStack) -> ApprovalStack:
    approval_stack.sim.clear_requests()
    return approval_stack


def token_of(results: list[dict[str, Any]]) -> str:
    tokens = {r["approval_token"] for r in results}
    assert len(tokens) == 1, "one token for the whole proposal"
    return tokens.pop()


def dli_calls(sim: Simulator) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in sim.requests()]


def listings(sim: Simulator) -> list[str]:
    return [r.path for r in sim.requests() if r.method == "GET" and r.path.endswith("/jobs")]


def changed(token: str, at: int) -> str:
    return token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]


# -- propose and approve ---------------------------------------------------------------------


def test_a_budget_event_proposes_tokens_and_cancels_nothing(stack: ApprovalStack) -> None:
    queued = stack.sim.add_sql_jobs(PROJECT_ID, 3, queue_name="propose_q")
    explicit = stack.sim.submit_sql_job(PROJECT_ID, queue_name="other")
    body = {
        "event_type": "budget-exceeded",
        "job_ids": [explicit],
        "queue_names": ["propose_q"],
        "budget": {"name": "dli-monthly", "cost": 1043.2, "amount": 1000, "currency": "EUR"},
    }

    event_id, results = stack.propose(body, 4)

    assert {r["job_id"] for r in results} == {explicit, *queued}
    assert {r["outcome"] for r in results} == {"awaiting_approval"}
    assert {r["_attributes"]["outcome"] for r in results} == {"awaiting_approval"}
    token = token_of(results)
    for result in results:
        assert result["approval_url"] == f"{stack.page.url}/?approve={token}"
        assert result["source_event_id"] == event_id and result["is_success"] is False
    assert [m for m, _ in dli_calls(stack.sim) if m in ("DELETE", "POST")] == []
    assert all(stack.sim.job_status(PROJECT_ID, j) == "RUNNING" for j in [explicit, *queued])
    plan = approvals.verify(token, RING, time.time())
    assert (plan.jobs[0].job_id, plan.jobs[0].queue_name) == (explicit, None)
    assert {(j.job_id, j.queue_name) for j in plan.jobs[1:]} == {(j, "propose_q") for j in queued}
    assert plan.source_event_id == event_id


def test_an_approval_cancels_exactly_the_plan(stack: ApprovalStack) -> None:
    queued = stack.sim.add_sql_jobs(PROJECT_ID, 3, queue_name="approve_q")
    proposal_id, proposed = stack.propose(
        {"event_type": "budget-exceeded", "queue_names": ["approve_q"]}, 3
    )
    later = stack.sim.submit_sql_job(PROJECT_ID, queue_name="approve_q")  # after the proposal
    stack.sim.clear_requests()

    approval_id, results = stack.approve(token_of(proposed), 3)

    assert {r["job_id"]: r["outcome"] for r in results} == {j: "cancelled" for j in queued}
    for result in results:
        assert result["reason"] == "approved" and result["source_event_id"] == approval_id
        assert result["context"] == {"proposal_event_id": proposal_id}
        assert result["queue_name"] == "approve_q" and result["is_success"] is True
    assert listings(stack.sim) == []  # no listing: the token is the plan
    cancelled = sorted(r.path for r in stack.sim.cancel_requests())
    assert cancelled == sorted(f"/v1.0/{PROJECT_ID}/jobs/{j}" for j in queued)
    assert stack.sim.job_status(PROJECT_ID, later) == "RUNNING"
    assert all(stack.sim.job_status(PROJECT_ID, j) == "CANCELLED" for j in queued)

    # approving twice is harmless
    _, again = stack.approve(token_of(proposed), 3)
    assert {(r["outcome"], r["reason"]) for r in again} == {("already_finished", "approved")}
    assert stack.sim.job_status(PROJECT_ID, later) == "RUNNING"


def test_an_approval_can_be_a_dry_run(stack: ApprovalStack) -> None:
    job = stack.sim.submit_sql_job(PROJECT_ID, queue_name="dry_q")
    _, proposed = stack.propose({"event_type": "budget-exceeded", "job_ids": [job]}, 1)
    _, results = stack.approve(token_of(proposed), 1, dry_run=True)
    assert [(r["outcome"], r["dry_run"], r["reason"]) for r in results] == [
        ("dry_run", True, "approved")
    ]
    assert stack.sim.cancel_requests() == []
    assert stack.sim.job_status(PROJECT_ID, job) == "RUNNING"


# -- tokens that approve nothing -------------------------------------------------------------


def _expired(token: str) -> str:
    plan = approvals.verify(token, RING, 0)
    old = approvals.new_proposal(
        plan.project_id, plan.jobs, plan.source_event_id, now=time.time() - 7200, ttl_s=3600
    )
    return approvals.sign(old, RING)


def _other_key(token: str) -> str:
    plan = approvals.verify(token, RING, 0)
    return approvals.sign(plan, approvals.KeyRing.from_secrets([OTHER_KEY]))


@pytest.mark.parametrize(
    ("spoil", "why"),
    [
        (lambda t: changed(t, 0), "unknown token version"),  # header: version
        (lambda t: changed(t, 5), "was signed with key"),  # header: key id
        (lambda t: changed(t, 30), "changed after it was signed"),  # the plan
        (lambda t: changed(t, len(t) - 10), "changed after it was signed"),  # the signature
        (_expired, "expired at"),
        (_other_key, "was signed with key"),
    ],
    ids=["version", "key-id", "plan", "signature", "expired", "another-key"],
)
def test_a_token_that_approves_nothing_is_refused_without_calling_dli(
    stack: ApprovalStack, spoil: Callable[[str], str], why: str
) -> None:
    jobs = stack.sim.add_sql_jobs(PROJECT_ID, 2, queue_name="refused_q")
    _, proposed = stack.propose({"event_type": "budget-exceeded", "job_ids": jobs}, 2)
    stack.sim.clear_requests()

    _, [result] = stack.approve(spoil(token_of(proposed)), 1)

    assert result["outcome"] == "invalid_event" and result["job_id"] == ""
    assert result["error_code"] == "INVALID_EVENT" and why in result["message"]
    assert dli_calls(stack.sim) == []
    assert all(stack.sim.job_status(PROJECT_ID, j) == "RUNNING" for j in jobs)


def test_a_key_rotation_keeps_old_tokens_and_signs_with_the_new_key(stack: ApprovalStack) -> None:
    old_jobs = stack.sim.add_sql_jobs(PROJECT_ID, 2, queue_name="rotate_q")
    _, before = stack.propose({"event_type": "budget-exceeded", "job_ids": old_jobs}, 2)
    old_token = token_of(before)
    assert approvals.token_key_id(old_token) == approvals.key_id(KEY).hex()
    stack.key_file.write_bytes(NEW_KEY + b"\n" + KEY + b"\n")  # the new key signs
    try:
        new_jobs = stack.sim.add_sql_jobs(PROJECT_ID, 1, queue_name="rotate_q2")
        _, after = stack.propose({"event_type": "budget-exceeded", "job_ids": new_jobs}, 1)
        new_token = token_of(after)
        assert approvals.token_key_id(new_token) == approvals.key_id(NEW_KEY).hex()

        _, approved_old = stack.approve(old_token, 2)
        _, approved_new = stack.approve(new_token, 1)
    finally:
        stack.key_file.write_bytes(KEY + b"\n")
    assert {r["outcome"] for r in approved_old + approved_new} == {"cancelled"}
    # the new key retired again: its token now names an unknown key
    _, [refused] = stack.approve(new_token, 1)
    assert refused["outcome"] == "invalid_event" and "was signed with key" in refused["message"]


def test_a_plan_of_1000_jobs_is_approved_in_one_message(stack: ApprovalStack) -> None:
    jobs = stack.sim.add_sql_jobs(PROJECT_ID, 1000, queue_name="big_q")
    _, proposed = stack.propose({"event_type": "budget-exceeded", "queue_names": ["big_q"]}, 1000)
    token = token_of(proposed)
    body = json.dumps({"event_type": "budget-exceeded", "approve": token}).encode()
    assert len(body) < MAX_BODY_BYTES // 2

    _, results = stack.approve(token, 1000)

    assert {r["job_id"] for r in results} == set(jobs)
    assert {r["outcome"] for r in results} == {"cancelled"}
    assert len(stack.sim.cancel_requests()) == 1000


# -- over HTTP: a pipeline, the page, the form -----------------------------------------------


def test_a_pipeline_approves_over_http(stack: ApprovalStack) -> None:
    job = stack.sim.submit_sql_job(PROJECT_ID, queue_name="http_q")
    _, proposed = stack.propose({"event_type": "budget-exceeded", "job_ids": [job]}, 1)
    body = {"event_type": "budget-exceeded", "approve": token_of(proposed)}

    answer = requests.post(stack.page.url, json=body, timeout=30)

    assert answer.status_code == 200
    [result] = answer.json()["results"]
    assert (result["job_id"], result["outcome"], result["reason"]) == (job, "cancelled", "approved")
    refused = requests.post(
        stack.page.url, json={**body, "approve": changed(body["approve"], 30)}, timeout=30
    )
    assert refused.status_code == 400
    assert refused.json()["results"][0]["outcome"] == "invalid_event"


def test_the_page_shows_the_plan_and_a_form_only_for_a_valid_token(stack: ApprovalStack) -> None:
    jobs = stack.sim.add_sql_jobs(PROJECT_ID, 2, queue_name="page_q")
    _, proposed = stack.propose({"event_type": "budget-exceeded", "queue_names": ["page_q"]}, 2)
    url = proposed[0]["approval_url"]

    page = requests.get(url, timeout=30)

    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert all(f"<code>{j}</code></td><td>sql</td><td>page_q</td>" in page.text for j in jobs)
    assert 'id="approve-form"' in page.text and PROJECT_ID in page.text
    token = token_of(proposed)
    tampered = requests.get(f"{stack.page.url}?approve={changed(token, 30)}", timeout=30)
    assert tampered.status_code == 400
    assert 'data-problem="tampered"' in tampered.text and "<form" not in tampered.text
    assert requests.get(stack.page.url, timeout=30).status_code == 405  # no token: no page
    assert all(stack.sim.job_status(PROJECT_ID, j) == "RUNNING" for j in jobs)


def test_the_form_needs_its_proof_and_refuses_other_sites(stack: ApprovalStack) -> None:
    jobs = stack.sim.add_sql_jobs(PROJECT_ID, 1, queue_name="form_q")
    _, proposed = stack.propose({"event_type": "budget-exceeded", "job_ids": jobs}, 1)
    token = token_of(proposed)
    proof = approvals.form_proof(token, RING)
    assert (
        proof is not None
        and f'value="{proof}"' in requests.get(proposed[0]["approval_url"], timeout=30).text
    )
    stack.sim.clear_requests()

    def post_form(fields: dict[str, str], **headers: str) -> requests.Response:
        data = urllib.parse.urlencode(fields)
        kind = {"Content-Type": "application/x-www-form-urlencoded"}
        return requests.post(stack.page.url, data=data, headers={**kind, **headers}, timeout=30)

    forged = post_form({"approve": token})  # the token alone, as another site could send it
    assert forged.status_code == 403 and "not sent from this function" in forged.text
    wrong = post_form({"approve": token, "confirm": proof[:-2] + "AA"})
    assert wrong.status_code == 403
    other_site = post_form(
        {"approve": token, "confirm": proof},
        Origin="https://evil.example",
        **{"Sec-Fetch-Site": "cross-site"},
    )
    assert other_site.status_code == 403 and "another site" in other_site.text
    as_json = requests.post(
        stack.page.url,
        data=json.dumps({"event_type": "budget-exceeded", "approve": token}),
        headers={"Content-Type": "text/plain", "Sec-Fetch-Site": "cross-site"},
        timeout=30,
    )
    assert as_json.status_code == 403  # a text/plain form from another site, shaped as JSON
    assert dli_calls(stack.sim) == []

    approved = post_form(
        {"approve": token, "confirm": proof},
        Origin=stack.page.url,
        **{"Sec-Fetch-Site": "same-origin"},
    )
    assert approved.status_code == 200
    assert '<p id="summary">1 cancelled</p>' in approved.text
    assert stack.sim.job_status(PROJECT_ID, jobs[0]) == "CANCELLED"


# -- configuration ---------------------------------------------------------------------------


def test_propose_without_a_key_file_is_a_configuration_error_until_it_appears(
    tmp_path: Path, emulator: PubSubEmulator
) -> None:
    key_file = tmp_path / "keys"  # not there yet
    local = start_stack(
        emulator, env={"BUDGET_ACTION": "propose", "APPROVAL_KEY_FILE": str(key_file)}
    )
    try:
        job = local.sim.submit_sql_job(PROJECT_ID, queue_name="cfg_q")
        event = {"event_type": "budget-exceeded", "job_ids": [job]}
        for _ in range(2):
            answer = post_cloud_event(local.server.url, event, topic="budget-exceeded")
            assert answer.status_code == 500  # Pub/Sub delivers it again
            assert "APPROVAL_KEY_FILE" in answer.text
        lines = local.server.output().splitlines()
        startup = json.loads(next(line for line in lines if line.startswith("{")))
        assert startup["severity"] == "ERROR" and "APPROVAL_KEY_FILE" in startup["message"]
        assert local.sim.requests() == []

        key_file.write_bytes(KEY + b"\n")  # the secret is mounted: the next delivery works
        event_id = "after-the-fix"
        answer = post_cloud_event(
            local.server.url, event, topic="budget-exceeded", event_id=event_id
        )
        assert answer.status_code == 200
        [result] = local.results_for(event_id, 1)
        assert result["outcome"] == "awaiting_approval"
        assert local.sim.cancel_requests() == []
    finally:
        stop_stack(local)


# -- in a real browser -----------------------------------------------------------------------


@pytest.mark.browser
def test_in_a_browser_the_link_shows_the_jobs_and_approve_cancels_them(
    stack: ApprovalStack,
) -> None:
    jobs = stack.sim.add_sql_jobs(PROJECT_ID, 2, queue_name="browser_q")
    _, proposed = stack.propose(
        {
            "event_type": "budget-exceeded",
            "queue_names": ["browser_q"],
            "budget": {"name": "team <b>budget</b>", "cost": 1200, "amount": 1000},
        },
        2,
    )
    url = proposed[0]["approval_url"]

    with Browser() as browser:
        browser.open(url)
        assert browser.text("h1") == "Approve cancelling 2 DLI jobs"
        table = browser.text("#jobs")
        assert all(job in table for job in jobs) and "browser_q" in table
        assert "team <b>budget</b> cost 1,200 of 1,000 (120%)" in browser.text("#plan")
        assert all(stack.sim.job_status(PROJECT_ID, j) == "RUNNING" for j in jobs)

        browser.click("#approve")

        assert browser.wait_for("#summary") == "2 cancelled"
        assert browser.text("h1") == "Approved"
        assert all(stack.sim.job_status(PROJECT_ID, j) == "CANCELLED" for j in jobs)

        browser.open(f"{stack.page.url}?approve={changed(token_of(proposed), 30)}")
        assert "changed after it was signed" in browser.text("#refusal")
        assert browser.count("#approve") == 0 and browser.count("form") == 0


# -- dli-cancel approve ----------------------------------------------------------------------


def test_dli_cancel_approve_publishes_the_approval_of_a_link(stack: ApprovalStack) -> None:
    job = stack.sim.submit_sql_job(PROJECT_ID, queue_name="cli_q")
    _, proposed = stack.propose({"event_type": "budget-exceeded", "job_ids": [job]}, 1)
    command = [sys.executable, "-m", "cancel_handler.cli", "approve", proposed[0]["approval_url"]]

    done = subprocess.run(
        command,
        env=child_env(stack.local.pubsub.env()),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )

    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["event"] == {"event_type": "budget-exceeded", "approve": token_of(proposed)}
    assert printed["topic"].endswith("/topics/budget-exceeded")
    [result] = stack.local.results_for(printed["message_id"], 1)
    assert (result["job_id"], result["outcome"], result["reason"]) == (job, "cancelled", "approved")
