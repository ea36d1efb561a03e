"""The acknowledge / retry rules of SPEC section 5, in process: ``handler.process`` with a
scripted DLI (``FakeDli``) and an in-memory sink. A return is an acknowledgement; a
``RetryLater`` is a redelivery. The same rules run through the real servers in the e2e tier."""

from __future__ import annotations

import json

import pytest

from cancel_handler import handler
from cancel_handler.dli.types import CallOutcome
from cancel_handler.envelopes import EnvelopeError
from cancel_handler.errors import RetryLater
from cancel_handler.results import PublishError
from tests.unit.fakes import (
    FANOUT_TOPIC,
    OTHER_PROJECT_ID,
    PROJECT_ID,
    Unit,
    credentials_missing,
    delivery,
    iam_refused,
    job_id,
    misconfigured,
    refused,
    transient,
)

OLD_S = 2 * 3600.0  # older than MAX_EVENT_AGE_S (3600 s by default)
RESULT_FIELDS = [
    "event_type",
    "source_event_id",
    "project_id",
    "job_id",
    "job_kind",
    "outcome",
    "is_success",
    "error_code",
    "message",
    "http_status",
    "dli_request_id",
    "attempts",
    "dry_run",
    "reason",
    "handled_at",
]


def budget(*jobs: str, queues: tuple[str, ...] = (), **extra: object) -> dict[str, object]:
    body: dict[str, object] = {"event_type": "budget-exceeded", **extra}
    if jobs:
        body["job_ids"] = list(jobs)
    if queues:
        body["queue_names"] = list(queues)
    return body


# -- a job that is cancelled -----------------------------------------------------------------


def test_a_cancelled_job_is_published_and_returned_as_the_spec_writes_it() -> None:
    unit = Unit()
    job = job_id()
    event = delivery({"job_id": job, "reason": "ran 3700 s, limit 3600 s"}, event_id="e-1")

    report = handler.process(event, unit.runtime)

    [message] = unit.sink.messages
    published = json.loads(message.data)
    assert list(published) == RESULT_FIELDS  # names and order of SPEC section 3
    assert {k: v for k, v in published.items() if k != "handled_at"} == {
        "event_type": "job-timeout",
        "source_event_id": "e-1",
        "project_id": PROJECT_ID,
        "job_id": job,
        "job_kind": "sql",
        "outcome": "cancelled",
        "is_success": True,
        "error_code": None,
        "message": "",
        "http_status": 200,
        "dli_request_id": "req-ok",
        "attempts": 1,
        "dry_run": False,
        "reason": "ran 3700 s, limit 3600 s",
    }
    assert message.attributes == {
        "event_type": "job-timeout",
        "outcome": "cancelled",
        "is_success": "true",
        "job_id": job,
        "project_id": PROJECT_ID,
    }
    assert [r.to_dict() for r in report.results] == [published]
    assert unit.dli.called("cancel") == [job]
    assert unit.dli.deadlines and unit.dli.deadlines[0] is not None  # the event's time budget


# -- bad and ignored events ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "body", "field"),
    [
        ("job-timeout", {"job_id": "not-a-uuid"}, "job_id"),
        ("job-timeout", b"{not json", "data"),
        ("budget-exceeded", {"event_type": "budget-exceeded"}, "job_ids"),
        ("job-timeout", {"event_type": "budget-exceeded", "job_ids": [job_id()]}, "event_type"),
    ],
    ids=["bad-id", "not-json", "no-targets", "contradicts-topic"],
)
def test_a_bad_event_is_acknowledged_with_invalid_event_and_never_reaches_dli(
    topic: str, body: dict[str, object] | bytes, field: str
) -> None:
    unit = Unit()

    report = handler.process(delivery(body, topic), unit.runtime)

    [result] = unit.published
    assert report.invalid and [r.to_dict() for r in report.results] == [result]
    assert (result["outcome"], result["error_code"]) == ("invalid_event", "INVALID_EVENT")
    assert result["is_success"] is False and result["attempts"] == 0
    assert field in result["message"]
    assert unit.dli.calls == []


def test_a_bad_event_names_what_did_validate() -> None:
    unit = Unit()
    job = job_id()

    handler.process(delivery({"job_id": job, "job_kind": "cobol"}), unit.runtime)

    [result] = unit.published
    assert (result["outcome"], result["job_id"], result["event_type"]) == (
        "invalid_event",
        job,
        "job-timeout",
    )
    assert result["message"].startswith("job_kind")


def test_a_malformed_envelope_is_acknowledged_with_invalid_event() -> None:
    unit = Unit()
    error = EnvelopeError("message.data", "not base64", event_id="e-env", topic="job-timeout")

    report = handler.reject_envelope(unit.runtime, error)

    [result] = unit.published
    assert report.invalid and result["outcome"] == "invalid_event"
    assert (result["source_event_id"], result["message"]) == ("e-env", "message.data: not base64")


def test_an_ignored_event_publishes_nothing_and_calls_no_dli() -> None:
    unit = Unit()
    under = {"costAmount": 10.0, "budgetAmount": 1000.0, "currencyCode": "EUR"}
    attributes = {"budgetId": "b-1", "billingAccountId": "acct", "schemaVersion": "1.0"}

    report = handler.process(
        delivery(under, "budget-exceeded", attributes=attributes), unit.runtime
    )

    assert report.ignored and report.results == [] and not report.invalid
    assert unit.published == [] and unit.dli.calls == []


# -- transient DLI faults --------------------------------------------------------------------


def test_transient_fault_on_a_young_event_publishes_the_definitive_results_then_retries() -> None:
    unit = Unit()
    ok, flaky, gone = job_id(), job_id(), job_id()
    unit.dli.cancels[flaky] = transient()
    unit.dli.cancels[gone] = CallOutcome("not_found", False, "DLI.0002", "no such job", 400)

    with pytest.raises(RetryLater) as raised:
        handler.process(delivery(budget(ok, flaky, gone), "budget-exceeded"), unit.runtime)

    assert "1 job(s) hit transient faults" in str(raised.value)
    outcomes = {job: r["outcome"] for job, r in unit.by_job().items()}
    assert outcomes == {ok: "cancelled", gone: "not_found"}  # nothing for the flaky job yet
    assert sorted(unit.dli.called("cancel")) == sorted([ok, flaky, gone])


def test_transient_fault_on_an_old_event_publishes_failed_and_returns() -> None:
    unit = Unit()
    ok, flaky = job_id(), job_id()
    unit.dli.cancels[flaky] = transient("DLI_TIMEOUT", attempts=3)

    report = handler.process(
        delivery(budget(ok, flaky), "budget-exceeded", age_s=OLD_S), unit.runtime
    )

    results = unit.by_job()
    assert results[ok]["outcome"] == "cancelled"
    failed = results[flaky]
    assert (failed["outcome"], failed["error_code"], failed["attempts"]) == (
        "failed",
        "DLI_TIMEOUT",
        3,
    )
    assert (failed["http_status"], failed["dli_request_id"]) == (503, "req-503")
    assert failed["is_success"] is False
    assert [r.job_id for r in report.results] == [ok, flaky]


def test_a_young_event_whose_queue_cannot_be_listed_comes_again_with_nothing_published() -> None:
    unit = Unit()
    explicit = job_id()
    unit.dli.listings["etl"] = transient()

    with pytest.raises(RetryLater):
        handler.process(
            delivery(budget(explicit, queues=("etl",)), "budget-exceeded"), unit.runtime
        )

    assert unit.published == []
    assert unit.dli.called("cancel") == []  # not even the explicit job: the event comes again


def test_an_old_event_whose_queue_cannot_be_listed_publishes_failed_for_everything() -> None:
    unit = Unit()
    explicit = job_id()
    unit.dli.listings["etl"] = transient("DLI_UNREACHABLE")
    event = budget(explicit, queues=("etl",))

    report = handler.process(delivery(event, "budget-exceeded", age_s=OLD_S), unit.runtime)

    by_subject = {r["job_id"] or r["queue_name"]: r for r in unit.published}
    assert set(by_subject) == {explicit, "etl"}
    for result in by_subject.values():
        assert (result["outcome"], result["error_code"]) == ("failed", "DLI_UNREACHABLE")
        assert result["message"].startswith("listing queues etl: ")
        assert result["project_id"] == PROJECT_ID
    assert len(report.results) == 2 and unit.dli.called("cancel") == []


def test_a_queue_dli_refuses_to_list_is_rejected_and_the_rest_goes_ahead() -> None:
    unit = Unit()
    listed, explicit = job_id(), job_id()
    unit.dli.listings["etl"] = [listed]
    unit.dli.listings["locked"] = refused("DLI.0003")

    handler.process(
        delivery(budget(explicit, queues=("locked", "etl")), "budget-exceeded"), unit.runtime
    )

    [rejected] = [r for r in unit.published if r["job_id"] == ""]
    assert (rejected["outcome"], rejected["error_code"], rejected["queue_name"]) == (
        "rejected",
        "DLI.0003",
        "locked",
    )
    assert rejected["message"] == "listing queue locked: no permission on this queue"
    cancelled = {r["job_id"]: r for r in unit.published if r["job_id"]}
    assert {job: r["outcome"] for job, r in cancelled.items()} == {
        explicit: "cancelled",
        listed: "cancelled",
    }
    assert cancelled[listed]["queue_name"] == "etl"


# -- configuration faults: retried whatever the event's age -----------------------------------


@pytest.mark.parametrize("age_s", [None, OLD_S], ids=["young", "old"])
def test_unreadable_credentials_make_the_event_come_again(age_s: float | None) -> None:
    unit = Unit()
    ok, blocked = job_id(), job_id()
    unit.dli.cancels[blocked] = credentials_missing()

    with pytest.raises(RetryLater) as raised:
        handler.process(delivery(budget(ok, blocked), "budget-exceeded", age_s=age_s), unit.runtime)

    assert "unreadable" in str(raised.value)
    assert {job: r["outcome"] for job, r in unit.by_job().items()} == {ok: "cancelled"}


@pytest.mark.parametrize("age_s", [None, OLD_S], ids=["young", "old"])
def test_unreadable_credentials_while_listing_make_the_event_come_again(
    age_s: float | None,
) -> None:
    unit = Unit()
    unit.dli.listings["etl"] = credentials_missing()

    with pytest.raises(RetryLater):
        handler.process(
            delivery(budget(queues=("etl",)), "budget-exceeded", age_s=age_s), unit.runtime
        )

    assert unit.published == [] and unit.dli.called("cancel") == []


# -- configuration faults DLI or IAM reports: retried while young, failed when old -------------

CONFIG_FAULTS = {
    "dli-401": (misconfigured, "DLI.0014", 401),
    "gateway-404": (lambda: misconfigured("APIG.0101", 404), "APIG.0101", 404),
    "iam-refused": (iam_refused, "IAM_HTTP_401", 401),
}


@pytest.mark.parametrize("fault", sorted(CONFIG_FAULTS))
def test_a_configuration_fault_on_a_young_event_comes_again_without_a_result(fault: str) -> None:
    make, code, _ = CONFIG_FAULTS[fault]
    unit = Unit()
    ok, hit = job_id(), job_id()
    unit.dli.cancels[hit] = make()

    with pytest.raises(RetryLater) as raised:
        handler.process(delivery(budget(ok, hit), "budget-exceeded"), unit.runtime)

    assert "configuration fault" in str(raised.value) and code in str(raised.value)
    assert {job: r["outcome"] for job, r in unit.by_job().items()} == {ok: "cancelled"}


@pytest.mark.parametrize("fault", sorted(CONFIG_FAULTS))
def test_a_configuration_fault_on_an_old_event_publishes_failed_with_the_code(fault: str) -> None:
    make, code, status = CONFIG_FAULTS[fault]
    unit = Unit()
    ok, hit = job_id(), job_id()
    unit.dli.cancels[hit] = make()

    handler.process(delivery(budget(ok, hit), "budget-exceeded", age_s=OLD_S), unit.runtime)

    results = unit.by_job()
    assert results[ok]["outcome"] == "cancelled"
    failed = results[hit]
    assert (failed["outcome"], failed["error_code"], failed["http_status"]) == (
        "failed",
        code,
        status,
    )
    assert failed["is_success"] is False


@pytest.mark.parametrize("age_s", [None, OLD_S], ids=["young", "old"])
def test_a_configuration_fault_while_listing_is_no_rejected_queue(age_s: float | None) -> None:
    unit = Unit()
    explicit = job_id()
    unit.dli.listings["etl"] = iam_refused()
    event = delivery(budget(explicit, queues=("etl",)), "budget-exceeded", age_s=age_s)

    if age_s is None:
        with pytest.raises(RetryLater):
            handler.process(event, unit.runtime)
        assert unit.published == []
    else:
        handler.process(event, unit.runtime)
        outcomes = {(r["job_id"] or r["queue_name"]): r["outcome"] for r in unit.published}
        assert outcomes == {explicit: "failed", "etl": "failed"}
        assert {(r["error_code"], r["http_status"]) for r in unit.published} == {
            ("IAM_HTTP_401", 401)
        }
    assert unit.dli.called("cancel") == []


# -- publishing ------------------------------------------------------------------------------


def test_a_result_that_cannot_be_published_makes_the_event_come_again() -> None:
    unit = Unit()
    unit.sink.fail = PublishError("publishing to results failed: NotFound")
    job = job_id()

    with pytest.raises(RetryLater) as raised:
        handler.process(delivery({"job_id": job}), unit.runtime)

    assert "NotFound" in str(raised.value)
    assert unit.dli.called("cancel") == [job]


def test_an_invalid_event_result_that_cannot_be_published_makes_the_event_come_again() -> None:
    unit = Unit()
    unit.sink.fail = PublishError("publishing to results failed: Unavailable")

    with pytest.raises(RetryLater):
        handler.process(delivery({"job_id": "nope"}), unit.runtime)


def test_results_of_a_big_event_go_out_in_batches_while_it_is_handled() -> None:
    unit = Unit({"FANOUT_THRESHOLD": "1000"})
    jobs = [job_id() for _ in range(250)]

    report = handler.process(delivery(budget(*jobs), "budget-exceeded"), unit.runtime)

    assert sorted(r["job_id"] for r in unit.published) == sorted(jobs)
    assert [r.job_id for r in report.results] == jobs  # the answer keeps the event's order
    assert len(unit.sink.messages) == 250


# -- fan-out ---------------------------------------------------------------------------------


def test_a_big_budget_event_is_shared_out_and_only_the_plans_verdicts_are_published() -> None:
    unit = Unit({"FANOUT_THRESHOLD": "2"})
    listed = [job_id() for _ in range(3)]
    unit.dli.listings["etl"] = listed
    unit.dli.listings["locked"] = refused()
    budget_info = {"name": "dli-monthly", "cost": 1043.2, "amount": 1000, "currency": "EUR"}
    event = budget(queues=("etl", "locked"), budget=budget_info, reason="over budget")

    report = handler.process(delivery(event, "budget-exceeded", event_id="big-1"), unit.runtime)

    assert report.fanned_out == 3 and unit.dli.called("cancel") == []
    shares = [json.loads(m.data) for m in unit.fanout.messages]
    assert [s["job_ids"] for s in shares] == [[job] for job in listed]
    assert shares[0] == {
        "event_type": "budget-exceeded",
        "project_id": PROJECT_ID,
        "job_ids": [listed[0]],
        "job_kind": "sql",
        "source_event_id": "big-1",
        "dry_run": False,
        "reason": "over budget",
        "budget": budget_info,
    }
    assert {m.attributes["event_type"] for m in unit.fanout.messages} == {"budget-exceeded"}
    [verdict] = unit.published
    assert (verdict["outcome"], verdict["queue_name"]) == ("rejected", "locked")
    assert unit.settings.fanout_topic == FANOUT_TOPIC


def test_a_fan_out_share_is_cancelled_here_and_never_split_again() -> None:
    unit = Unit({"FANOUT_THRESHOLD": "1"})
    jobs = [job_id(), job_id()]  # over the threshold, but it names its source event
    share = budget(*jobs, source_event_id="big-1", reason="over budget")

    report = handler.process(delivery(share, "budget-exceeded"), unit.runtime)

    assert report.fanned_out == 0 and unit.fanout.messages == []
    assert {r["outcome"] for r in unit.published} == {"cancelled"}
    assert {r["source_event_id"] for r in unit.published} == {"big-1"}  # the original event
    assert sorted(unit.dli.called("cancel")) == sorted(jobs)


def test_a_fan_out_that_cannot_be_published_makes_the_event_come_again() -> None:
    unit = Unit({"FANOUT_THRESHOLD": "1"})
    unit.fanout.fail = PublishError("publishing to fanout failed: NotFound")

    with pytest.raises(RetryLater):
        handler.process(delivery(budget(job_id(), job_id()), "budget-exceeded"), unit.runtime)

    assert unit.published == [] and unit.dli.called("cancel") == []


def test_without_a_fan_out_topic_a_big_event_is_cancelled_here() -> None:
    unit = Unit({"FANOUT_TOPIC": "", "FANOUT_THRESHOLD": "1"})
    jobs = [job_id(), job_id()]

    report = handler.process(delivery(budget(*jobs), "budget-exceeded"), unit.runtime)

    assert report.fanned_out == 0 and sorted(unit.dli.called("cancel")) == sorted(jobs)


# -- dry run, allow-list, repeated budget notifications --------------------------------------


@pytest.mark.parametrize(
    ("env", "body"),
    [({}, {"dry_run": True}), ({"DRY_RUN": "true"}, {})],
    ids=["event", "setting"],
)
def test_dry_run_calls_no_cancel_api(env: dict[str, str], body: dict[str, object]) -> None:
    unit = Unit(env)
    jobs = [job_id(), job_id()]
    unit.dli.listings["etl"] = [jobs[1]]

    handler.process(
        delivery(budget(jobs[0], queues=("etl",), **body), "budget-exceeded"), unit.runtime
    )

    assert unit.dli.called("cancel") == []
    for result in unit.published:
        assert (result["outcome"], result["dry_run"], result["is_success"]) == (
            "dry_run",
            True,
            False,
        )
        assert result["message"] == "dry run: the cancel API was not called"
    assert {r["job_id"] for r in unit.published} == set(jobs)


def test_a_project_outside_the_allow_list_is_not_allowed_and_dli_is_never_called() -> None:
    unit = Unit()
    jobs = [job_id(), job_id()]
    event = budget(*jobs, queues=("etl",), project_id=OTHER_PROJECT_ID)

    handler.process(delivery(event, "budget-exceeded"), unit.runtime)

    assert unit.dli.calls == []
    assert len(unit.published) == 3  # two jobs and the queue
    for result in unit.published:
        assert (result["outcome"], result["error_code"]) == ("not_allowed", "PROJECT_NOT_ALLOWED")
        assert result["project_id"] == OTHER_PROJECT_ID


def test_a_repeated_budget_notification_does_not_cancel_finished_jobs_again() -> None:
    done, running, unknown = job_id(), job_id(), job_id()
    targets = {"b-repeat": {"job_ids": [done, running, unknown]}}
    unit = Unit({"BUDGET_TARGETS": json.dumps(targets)})
    unit.dli.states.update({done: "CANCELLED", unknown: None})
    notification = {"costAmount": 1043.2, "budgetAmount": 1000.0, "currencyCode": "EUR"}
    attributes = {"budgetId": "b-repeat", "billingAccountId": "acct", "schemaVersion": "1.0"}

    handler.process(delivery(notification, "budget-exceeded", attributes=attributes), unit.runtime)

    results = unit.by_job()
    assert (results[done]["outcome"], results[done]["attempts"]) == ("already_finished", 0)
    assert results[done]["message"] == "job is CANCELLED: not cancelled again"
    assert results[running]["outcome"] == "cancelled"
    assert sorted(unit.dli.called("cancel")) == sorted([running, unknown])
    assert sorted(unit.dli.called("state")) == sorted([done, running, unknown])


def test_a_queue_with_no_active_job_publishes_nothing_to_cancel() -> None:
    unit = Unit()

    handler.process(delivery(budget(queues=("idle",)), "budget-exceeded"), unit.runtime)

    [result] = unit.published
    assert (result["outcome"], result["queue_name"], result["job_id"]) == (
        "nothing_to_cancel",
        "idle",
        "",
    )
    assert unit.dli.called("cancel") == []


def test_more_listed_jobs_than_the_limit_is_invalid_and_nothing_is_cancelled() -> None:
    unit = Unit({"MAX_JOBS_PER_EVENT": "2"})
    unit.dli.listings["etl"] = [job_id() for _ in range(3)]

    handler.process(delivery(budget(queues=("etl",)), "budget-exceeded"), unit.runtime)

    [result] = unit.published
    assert result["outcome"] == "invalid_event"
    assert "MAX_JOBS_PER_EVENT=2" in result["message"]
    assert unit.dli.called("cancel") == []


def test_a_configuration_fault_reading_a_notifications_job_leaves_the_cancel_to_report_it() -> None:
    job = job_id()
    unit = Unit({"BUDGET_TARGETS": json.dumps({"b-gateway": {"job_ids": [job]}})})
    unit.dli.states[job] = misconfigured("APIG.0101", 404)
    unit.dli.cancels[job] = misconfigured("APIG.0101", 404)
    notification = {"costAmount": 1043.2, "budgetAmount": 1000.0, "currencyCode": "EUR"}
    attributes = {"budgetId": "b-gateway", "billingAccountId": "acct", "schemaVersion": "1.0"}
    event = delivery(notification, "budget-exceeded", attributes=attributes, age_s=OLD_S)

    handler.process(event, unit.runtime)

    [result] = unit.published
    assert (result["outcome"], result["error_code"], result["http_status"]) == (
        "failed",
        "APIG.0101",
        404,
    )
    assert unit.dli.called("cancel") == [job]
