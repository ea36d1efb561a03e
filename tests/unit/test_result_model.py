"""How a result is written: its published JSON, the HTTP answer that lists results, its time."""

from __future__ import annotations

import json
import secrets
import time
from datetime import datetime

from cancel_handler import logs
from cancel_handler.outcomes import Outcome
from cancel_handler.results import ResultEvent, results_json
from cancel_handler.results.model import utc_now_text


def result(message: str, **extra: object) -> ResultEvent:
    fields: dict[str, object] = {
        "event_type": "budget-exceeded",
        "source_event_id": "evt-1",
        "project_id": "0123456789abcdef0123456789abcdef",
        "job_id": "5a3a2c2e-1111-4222-8333-944455556666",
        "job_kind": "sql",
        "outcome": Outcome.REJECTED,
        "is_success": False,
        "error_code": "DLI.0001",
        "message": message,
        "http_status": 400,
        "dli_request_id": "req-1",
        "attempts": 1,
        "dry_run": False,
        "reason": "budget über",
        **extra,
    }
    return ResultEvent(**fields)  # type: ignore[arg-type]


def test_the_http_answer_lists_each_result_as_published_with_the_extra_fields() -> None:
    leaked = f"sk-{secrets.token_urlsafe(12)}"
    logs.register_secret(leaked)
    results = [
        result(f"refused: key {leaked} is wrong"),
        result("Authorization: SDK-HMAC-SHA256 Access=AKID", queue_name="q1", context={"a": 1}),
    ]

    answer = json.loads(results_json(results, ignored="nothing", fanned_out=2))

    assert answer == {
        "results": [json.loads(r.to_bytes()) for r in results],
        "ignored": "nothing",
        "fanned_out": 2,
    }
    assert answer["results"] == [r.to_dict() for r in results]
    assert answer["results"][0]["message"] == "refused: key [REDACTED] is wrong"
    assert answer["results"][1]["message"] == "Authorization: [REDACTED]"
    assert answer["results"][0]["reason"] == "budget über"
    assert leaked not in results_json(results) and "AKID" not in results_json(results)
    assert json.loads(results_json([])) == {"results": []}


def test_the_published_json_is_compact_utf8_and_written_once() -> None:
    one = result("job is RUNNING")

    data = one.to_bytes()

    assert data is one.to_bytes() is one.to_message().data
    assert b": " not in data and "über".encode() in data
    assert json.loads(data)["outcome"] == "rejected"


def test_handled_at_is_utc_with_milliseconds_and_reads_the_clock() -> None:
    before = time.time()
    texts = [utc_now_text() for _ in range(3)]
    after = time.time()

    for text in texts:
        assert len(text) == len("2026-11-29T12:00:00.123Z") and text.endswith("Z")
        moment = datetime.fromisoformat(text).timestamp()
        assert before - 0.001 <= moment <= after
    assert texts == sorted(texts)


def test_the_publish_request_carries_each_message_as_the_generated_types_would() -> None:
    from google.pubsub_v1 import PublishRequest, PubsubMessage

    from cancel_handler.results.pubsub import _publish_request

    topic = "projects/unit/topics/results"
    chunk = [result("one").to_message(), result("two", queue_name="q").to_message()]

    request = _publish_request(topic, chunk)

    expected = PublishRequest(
        topic=topic, messages=[PubsubMessage(data=d, attributes=a) for d, a in chunk]
    )
    assert isinstance(request, PublishRequest)
    assert PublishRequest.pb(request) == PublishRequest.pb(expected)  # map order aside
    assert [dict(m.attributes) for m in request.messages] == [a for _, a in chunk]
