"""Event models: good paths of every format with the real-format fixtures, and the rules."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cancel_handler.config import BudgetTarget, load_settings
from cancel_handler.envelopes import Delivery, from_cloud_event, from_http_body
from cancel_handler.events import (
    CancelEvent,
    EventRules,
    Ignored,
    InvalidEvent,
    detect_format,
    parse_event,
)
from cancel_handler.events.common import MAX_DEPTH, field_path, load_json_object
from tests.corpus import (
    JOB_ID,
    PROJECT_ID,
    encode,
    fixture_cloud_event,
    fixture_message,
    pubsub_cloud_event,
    push_envelope,
)

U2 = "7d1b4f60-2222-4333-8444-a55566667777"
U3 = "9e2c5a71-3333-4444-9555-b66677778888"
SPARK_ID = "0a324461-d9d9-45da-a52a-3b3c7a3d809e"
BUDGET_ID = "de72f49d-779b-4945-a127-4d6ce8def0bb"
RULES = EventRules(default_project_id=PROJECT_ID)
TARGETED = EventRules(
    default_project_id=PROJECT_ID,
    budget_targets={BUDGET_ID: BudgetTarget(PROJECT_ID, queue_names=("etl",))},
)


def message(name: str, topic: str | None) -> Delivery:
    data, attributes = fixture_message(name)
    return from_cloud_event(pubsub_cloud_event(data, attributes, topic), 65536)


def http(payload: Any) -> Delivery:
    return from_http_body(encode(payload), 65536)


def parse(delivery: Delivery, rules: EventRules = RULES) -> CancelEvent:
    event = parse_event(delivery, rules)
    assert isinstance(event, CancelEvent)
    return event


def invalid(delivery: Delivery, rules: EventRules = RULES) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(delivery, rules)
    return caught.value


def test_eventarc_job_timeout() -> None:
    delivery = from_cloud_event(fixture_cloud_event("eventarc_job_timeout.json"), 65536)
    assert parse(delivery) == CancelEvent(
        event_type="job-timeout",
        project_id=PROJECT_ID,
        job_kind="sql",
        job_ids=(JOB_ID,),
        queue_names=(),
        dry_run=False,
        reason="ran 3700 s, limit 3600 s",
        context={},
        source_format="event",
    )


def test_push_envelope_takes_the_event_type_from_the_attribute() -> None:
    payload = {"job_id": JOB_ID, "project_id": PROJECT_ID}
    body = push_envelope(encode(payload), {"event_type": "job-timeout"})
    event = parse(from_http_body(body, 65536))
    assert (event.event_type, event.job_ids) == ("job-timeout", (JOB_ID,))


def test_spark_job_timeout() -> None:
    event = parse(message("job_timeout_spark.json", "job-timeout"))
    assert (event.job_kind, event.job_ids) == ("spark", (SPARK_ID,))
    assert event.reason == "batch ran 7300 s, limit 7200 s"


def test_flink_job_timeout_with_integer_id_and_unknown_fields() -> None:
    event = parse(message("job_timeout_flink.json", "job-timeout"))
    assert (event.job_kind, event.job_ids, event.dry_run) == ("flink", ("298765",), True)
    assert event.context == {}


@pytest.mark.parametrize(
    ("job_id", "expected"),
    [("0042", "42"), (2**63 - 1, str(2**63 - 1)), ("9223372036854775807", str(2**63 - 1))],
)
def test_flink_ids_are_normalised(job_id: Any, expected: str) -> None:
    payload = {"event_type": "job-timeout", "job_id": job_id, "job_kind": "flink"}
    assert parse(http(payload)).job_ids == (expected,)


def test_uuid_case_is_kept() -> None:
    payload = {"event_type": "job-timeout", "job_id": JOB_ID.upper()}
    assert parse(http(payload)).job_ids == (JOB_ID.upper(),)


def test_event_type_from_the_topic_when_the_body_has_none() -> None:
    delivery = from_cloud_event(
        pubsub_cloud_event(encode({"job_id": JOB_ID}), {}, "job-timeout"), 1024
    )
    event = parse(delivery)
    assert event.event_type == "job-timeout"
    assert event.project_id is None


def test_event_type_agreeing_everywhere() -> None:
    data = encode({"event_type": "job-timeout", "job_id": JOB_ID})
    cloud_event = pubsub_cloud_event(data, {"event_type": "job-timeout"}, "job-timeout")
    assert parse(from_cloud_event(cloud_event, 1024)).event_type == "job-timeout"


def test_other_topic_falls_back_to_the_body() -> None:
    data = encode({"event_type": "budget-exceeded", "job_ids": [JOB_ID], "source_event_id": "99"})
    event = parse(from_cloud_event(pubsub_cloud_event(data, {}, "dli-cancel-fanout"), 1024))
    assert (event.event_type, event.source_event_id) == ("budget-exceeded", "99")


def test_reason_is_truncated() -> None:
    payload = {"event_type": "job-timeout", "job_id": JOB_ID, "reason": "r" * 5000}
    assert parse(http(payload)).reason == "r" * 1000


def test_budget_exceeded_with_queues() -> None:
    event = parse(message("budget_exceeded_queues.json", "budget-exceeded"))
    assert event == CancelEvent(
        event_type="budget-exceeded",
        project_id=PROJECT_ID,
        job_kind="sql",
        job_ids=(JOB_ID, U2),
        queue_names=("etl", "adhoc_reports"),
        dry_run=False,
        reason=None,
        context={
            "budget": {"name": "dli-monthly", "cost": 1043.2, "amount": 1000, "currency": "EUR"}
        },
        source_format="event",
    )


def test_budget_exceeded_queue_names_are_lowercased_and_deduplicated() -> None:
    payload = {"event_type": "budget-exceeded", "queue_names": ["ETL", "etl", "Ad_Hoc2"]}
    event = parse(http(payload))
    assert (event.queue_names, event.job_ids) == (("etl", "ad_hoc2"), ())


def test_budget_exceeded_at_the_job_limit() -> None:
    ids = [f"5a3a2c2e-1111-4222-8333-{n:012x}" for n in range(3)]
    rules = EventRules(max_jobs_per_event=3)
    assert len(parse(http({"event_type": "budget-exceeded", "job_ids": ids}), rules).job_ids) == 3
    error = invalid(http({"event_type": "budget-exceeded", "job_ids": [*ids, JOB_ID]}), rules)
    assert error.field == "job_ids"
    assert error.job_ids == ()


def test_budget_object_echo_is_bounded() -> None:
    budget = {f"k{i}": "v" * 500 for i in range(50)} | {"nested": {"a": 1}}
    payload = {"event_type": "budget-exceeded", "job_ids": [JOB_ID], "budget": budget}
    echoed = parse(http(payload)).context["budget"]
    assert len(echoed) == 20
    assert all(len(v) == 200 for v in echoed.values())


def test_budget_notification_over_threshold() -> None:
    event = parse(message("budget_notification_over.json", "budget-exceeded"), TARGETED)
    assert event == CancelEvent(
        event_type="budget-exceeded",
        project_id=PROJECT_ID,
        job_kind="sql",
        job_ids=(),
        queue_names=("etl",),
        dry_run=False,
        reason="budget 'dli-monthly' cost 1043.2 >= 1000 x 1.0",
        context={
            "budget_id": BUDGET_ID,
            "budgetDisplayName": "dli-monthly",
            "costAmount": 1043.2,
            "budgetAmount": 1000.0,
            "currencyCode": "EUR",
            "alertThresholdExceeded": 1.0,
            "costIntervalStart": "2026-11-01T08:00:00Z",
        },
        source_format="budget_notification",
    )


def test_budget_notification_without_topic_is_budget_exceeded() -> None:
    event = parse(message("budget_notification_over.json", None), TARGETED)
    assert event.event_type == "budget-exceeded"


def test_budget_notification_uses_the_wildcard_target() -> None:
    target = BudgetTarget(None, job_ids=(JOB_ID,))
    event = parse(
        message("budget_notification_over.json", None), EventRules(budget_targets={"*": target})
    )
    assert (event.project_id, event.job_ids, event.queue_names) == (None, (JOB_ID,), ())


def test_budget_notification_without_target_is_ignored() -> None:
    result = parse_event(message("budget_notification_over.json", "budget-exceeded"), RULES)
    assert isinstance(result, Ignored)
    assert "no target in BUDGET_TARGETS" in result.reason
    assert BUDGET_ID in result.reason


@pytest.mark.parametrize(
    ("name", "share"),
    [("budget_notification_under.json", "80%"), ("budget_notification_no_threshold.json", "41%")],
)
def test_budget_notification_below_threshold_is_ignored(name: str, share: str) -> None:
    result = parse_event(message(name, "budget-exceeded"), TARGETED)
    assert result == Ignored(f"budget 'dli-monthly' at {share} of its amount, below threshold 1.0")


def test_budget_threshold_is_configurable() -> None:
    rules = EventRules(budget_threshold=0.8, budget_targets=TARGETED.budget_targets)
    event = parse(message("budget_notification_under.json", "budget-exceeded"), rules)
    assert event.reason == "budget 'dli-monthly' cost 800.5 >= 1000 x 0.8"


def test_budget_alert_threshold_alone_acts() -> None:
    data, attributes = fixture_message("budget_notification_over.json")
    payload = json.loads(data) | {"costAmount": 500.0}
    delivery = from_cloud_event(pubsub_cloud_event(encode(payload), attributes, None), 65536)
    event = parse(delivery, TARGETED)
    assert event.reason == "budget 'dli-monthly' alertThresholdExceeded 1.0 >= 1.0"


def test_budget_notification_recognised_by_attributes() -> None:
    _, attributes = fixture_message("budget_notification_over.json")
    assert detect_format({"costAmount": 1}, attributes) == "budget_notification"
    assert detect_format({"costAmount": 1, "budgetAmount": 2}, {}) == "budget_notification"
    assert detect_format({"costAmount": 1}, {}) == "event"


def test_budget_target_ids_are_validated() -> None:
    rules = EventRules(budget_targets={"*": BudgetTarget(None, job_ids=("../x",))})
    error = invalid(message("budget_notification_over.json", None), rules)
    assert error.field == "BUDGET_TARGETS['*'].job_ids[0]"


def test_incident_open() -> None:
    event = parse(message("incident_open.json", "job-timeout"))
    assert event == CancelEvent(
        event_type="job-timeout",
        project_id=PROJECT_ID,
        job_kind="sql",
        job_ids=(U3,),
        queue_names=(),
        dry_run=False,
        reason=(f"DLI job run time for {U3} is above the threshold of 3600 with a value of 3702."),
        context={
            "incident_id": "0.ncg2rvbqh5yr",
            "policy_name": "dli-job-runtime",
            "url": "https://console.cloud.google.com/monitoring/alerting/incidents/"
            "0.ncg2rvbqh5yr?project=acme-ops",
            "dli_queue_name": "etl",
        },
        source_format="incident",
    )


def test_incident_closed_is_ignored() -> None:
    result = parse_event(message("incident_closed.json", "job-timeout"), RULES)
    assert result == Ignored("incident '0.ncg2rvbqh5yr' is closed")


def test_incident_with_the_job_in_policy_labels() -> None:
    event = parse(message("incident_policy_labels.json", None))
    assert (event.event_type, event.job_kind, event.job_ids) == (
        "job-timeout",
        "spark",
        (SPARK_ID,),
    )
    assert event.project_id is None
    assert event.context["dli_queue_name"] is None


def _incident(**labels: dict[str, str]) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(fixture_message("incident_open.json")[0])
    payload["incident"]["metric"]["labels"] = labels.get("metric", {})
    payload["incident"]["resource"]["labels"] = labels.get("resource", {"project_id": "acme-ops"})
    payload["incident"]["policy_user_labels"] = labels.get("policy", {})
    return payload


def test_incident_label_lookup_order() -> None:
    payload = _incident(
        metric={"job_id": JOB_ID},
        resource={"dli_job_id": U2, "project_id": "acme-ops", "dli_project_id": PROJECT_ID},
        policy={"dli_job_id": U3, "event_type": "budget-exceeded"},
    )
    event = parse(from_cloud_event(pubsub_cloud_event(encode(payload)), 65536))
    assert (event.job_ids, event.project_id) == ((JOB_ID,), PROJECT_ID)
    assert event.event_type == "budget-exceeded"


def test_incident_reason_falls_back_to_the_policy() -> None:
    payload = _incident(metric={"dli_job_id": JOB_ID})
    payload["incident"]["summary"] = None
    event = parse(from_cloud_event(pubsub_cloud_event(encode(payload), {}, "job-timeout"), 65536))
    assert event.reason == "incident of policy dli-job-runtime"


def test_incident_topic_budget_exceeded() -> None:
    event = parse(message("incident_open.json", "budget-exceeded"))
    assert (event.event_type, event.job_ids, event.queue_names) == ("budget-exceeded", (U3,), ())


def test_invalid_event_carries_what_did_validate() -> None:
    payload = {"event_type": "job-timeout", "job_id": JOB_ID, "project_id": PROJECT_ID}
    error = invalid(http(payload | {"dry_run": "yes"}))
    assert (error.field, error.event_type) == ("dry_run", "job-timeout")
    assert (error.job_ids, error.project_id) == ((JOB_ID,), PROJECT_ID)


def test_invalid_event_takes_the_event_type_from_the_topic() -> None:
    delivery = from_cloud_event(pubsub_cloud_event(b"not json", {}, "budget-exceeded"), 1024)
    error = invalid(delivery)
    assert (error.field, error.event_type) == ("data", "budget-exceeded")


def test_error_messages_quote_little_caller_input() -> None:
    error = invalid(http({"event_type": "job-timeout", "job_id": "x" * 20000}))
    assert len(error.message) < 200
    assert error.message.startswith("job_id must be a UUID (8-4-4-4-12 hex), got 'xxx")


def test_field_path() -> None:
    assert field_path(("incident", "metric", "labels")) == "incident.metric.labels"
    assert field_path(("job_ids", 2)) == "job_ids[2]"
    assert field_path(("a", 0, "b", 1)) == "a[0].b[1]"
    assert field_path(()) == "data"


def test_nesting_limit() -> None:
    def nested(depth: int) -> bytes:
        return ('{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)).encode()

    assert load_json_object(nested(MAX_DEPTH))
    with pytest.raises(InvalidEvent, match="nested deeper"):
        load_json_object(nested(MAX_DEPTH + 1))


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = json.dumps({"reason": "[{" * 500 + '\\"]', "x": ['a\\"[[']})
    assert load_json_object(text.encode())["x"] == ['a\\"[[']


def test_rules_from_settings() -> None:
    settings = load_settings(
        {
            "DLI_REGION": "eu-de",
            "DLI_PROJECT_ID": PROJECT_ID,
            "HUAWEICLOUD_SDK_AK": "ak",
            "HUAWEICLOUD_SDK_SK": "sk",
            "DLI_LOCAL_RUN": "true",
            "BUDGET_THRESHOLD": "0.9",
            "MAX_JOBS_PER_EVENT": "5",
            "BUDGET_TARGETS": json.dumps({"*": {"queue_names": ["etl"]}}),
        }
    )
    rules = EventRules.from_settings(settings)
    assert rules.default_project_id == PROJECT_ID
    assert (rules.budget_threshold, rules.max_jobs_per_event) == (0.9, 5)
    assert rules.budget_targets["*"].queue_names == ("etl",)
