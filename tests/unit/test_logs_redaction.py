"""Structured logs: one JSON object per line, and no secret in any of them."""

from __future__ import annotations

import io
import json
import re
import secrets
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.exceptions import NotFound

from cancel_handler import entry, handler, logs
from cancel_handler.config import load_settings
from cancel_handler.envelopes import Delivery
from cancel_handler.errors import RetryLater
from cancel_handler.results import MemorySink, ResultEvent
from cancel_handler.runtime import build_runtime


def secret(prefix: str) -> str:
    value = f"{prefix}-{secrets.token_urlsafe(12)}"
    logs.register_secret(value)
    return value


def logged(message: str = "m", severity: str = "INFO", **fields: Any) -> dict[str, Any]:
    stream = io.StringIO()
    logs.log(severity, message, stream=stream, **fields)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record: dict[str, Any] = json.loads(lines[0])
    return record


def test_one_json_object_per_line_with_severity_message_time_and_fields() -> None:
    record = logged(
        "job x: cancelled\nsecond line",
        "WARNING",
        event_id="123",
        job_id="j",
        outcome="cancelled",
        attempts=2,
        error_code=None,
    )

    assert record["severity"] == "WARNING"
    assert record["message"] == "job x: cancelled\nsecond line"
    assert record["time"].endswith("Z")
    assert (record["event_id"], record["job_id"], record["outcome"]) == ("123", "j", "cancelled")
    assert record["attempts"] == 2
    assert "error_code" not in record  # None fields are left out


def test_values_that_are_not_json_are_written_as_text() -> None:
    record = logged(when=object(), items=("a", 1), nested={"k": [1, {"x": b"raw"}]})

    assert record["when"].startswith("<object object")
    assert record["items"] == ["a", 1]
    assert record["nested"]["k"][1]["x"] == "b'raw'"


def test_the_helpers_write_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("DEBUG")
    try:
        logs.debug("d")
        logs.info("i")
        logs.warning("w")
        logs.error("e", event_id="1")
    finally:
        logs.setup("INFO")

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["severity"], r["message"]) for r in lines] == [
        ("DEBUG", "d"),
        ("INFO", "i"),
        ("WARNING", "w"),
        ("ERROR", "e"),
    ]


def test_registered_secrets_are_masked_in_message_and_every_field() -> None:
    sk = secret("sk")
    token = secret("tok")

    record = logged(
        f"signing with {sk}",
        error=f"401: token {token} expired",
        nested={"list": [f"x{sk}x"], "deeper": {"t": token}},
    )

    text = json.dumps(record)
    assert sk not in text and token not in text
    assert record["message"] == "signing with [REDACTED]"
    assert record["nested"]["list"] == ["x[REDACTED]x"]


def test_a_secret_that_is_a_json_word_cannot_break_the_line() -> None:
    logs.register_secret("true")  # a silly password, but the line must stay valid JSON
    try:
        record = logged(flag=True, text="it is true")
    finally:
        logs._secrets.discard("true")

    assert record["flag"] is True
    assert record["text"] == "it is [REDACTED]"


def test_short_or_empty_values_are_not_registered() -> None:
    logs.register_secret("")
    logs.register_secret(None)
    logs.register_secret("abc")

    assert logs.redact("abc is fine") == "abc is fine"


def test_longer_secret_is_masked_whole_when_it_contains_a_shorter_one() -> None:
    short = secret("inner")
    longer = f"outer-{short}-tail"
    logs.register_secret(longer)

    assert logs.redact(f"x {longer} y") == "x [REDACTED] y"


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        # an SDK-HMAC-SHA256 header: every part of it, commas included
        (
            "Authorization: SDK-HMAC-SHA256 Access=AKID, SignedHeaders=host, Signature=f00d\n"
            "Host: dli",
            "Host: dli",
        ),
        ("{'Authorization': 'SDK-HMAC-SHA256 Access=AKID, Signature=f00d', 'Host': 'dli'}", "Host"),
        ('{"Authorization": "Bearer eyJhbGciOi.payload.sig", "Host": "dli"}', '"Host": "dli"'),
        ('"{\\"X-Auth-Token\\": \\"MIIE-token-value\\"}"', "X-Auth-Token"),
        ("X-Subject-Token: MIIE-token-value", "X-Subject-Token: [REDACTED]"),
        ("x-security-token=abc-token; next", "x-security-token=[REDACTED]"),
        ("headers={'X-Security-Token': 'abc-token'}", "'X-Security-Token': '[REDACTED]'"),
    ],
)
def test_credential_headers_are_masked_in_any_shape(text: str, kept: str) -> None:
    masked = logs.redact(text)

    for value in ("AKID", "f00d", "eyJhbGciOi", "MIIE-token-value", "abc-token"):
        assert value not in masked
    assert "[REDACTED]" in masked
    assert kept in masked


def test_words_that_only_mention_authorization_are_kept() -> None:
    text = "Authorization failed for the request; see X-Auth-Token docs"

    assert logs.redact(text) == text


_HEADER_WORDS = ["Authorization", "x-auth-token", "X-SUBJECT-TOKEN", "X-Security-Token", "Host"]


@given(
    st.lists(
        st.one_of(
            st.sampled_from([*_HEADER_WORDS, ":", "=", " ", "'", '"', "\\", "\n", ", "]),
            st.text(max_size=8),
        ),
        max_size=12,
    ).map("".join)
)
def test_redact_masks_exactly_what_a_full_scan_of_every_text_masks(text: str) -> None:
    """``redact`` skips the header scan for a text without ':' or '=' (no header value can
    follow a name without one): the same output as scanning every text."""
    expected = re.sub(logs._AUTH_HEADER, logs._mask_header, text, flags=re.IGNORECASE)
    for registered in sorted(logs._secrets, key=len, reverse=True):
        expected = expected.replace(registered, logs.REDACTED)

    assert logs.redact(text) == expected


def test_exception_text_and_stack_trace_are_masked() -> None:
    sk = secret("sk")
    try:
        raise ValueError(f"bad signature with key {sk}\nAuthorization: SDK Access=AKID")
    except ValueError as error:
        text = logs.exception_text(error)
        trace = logs.stack_trace(error)

    assert text.startswith("ValueError: bad signature with key [REDACTED]")
    assert "\n" not in text
    assert "Traceback" in trace and "ValueError" in trace
    assert sk not in text + trace and "AKID" not in text + trace
    assert logs.exception_text(KeyError()) == "KeyError"


def test_retry_later_message_is_masked() -> None:
    token = secret("tok")

    error = RetryLater(f"DLI_HTTP_503 after 3 attempts: echo X-Auth-Token: {token}")

    assert token not in str(error) and token not in repr(error)
    assert str(error).startswith("DLI_HTTP_503 after 3 attempts")


def test_results_are_masked_in_body_and_attributes() -> None:
    sk = secret("sk")
    result = ResultEvent(
        event_type="job-timeout",
        source_event_id="1",
        project_id="p",
        job_id="j",
        job_kind="sql",
        outcome="failed",
        is_success=False,
        error_code="DLI_HTTP_503",
        message=f"answer is not JSON: <html>{sk}</html>",
        http_status=503,
        dli_request_id=None,
        attempts=3,
        dry_run=False,
        reason=f"operator pasted {sk}",
        context={"note": sk},
    )

    body = result.to_bytes().decode()
    assert sk not in body and sk not in json.dumps(result.attributes())
    assert json.loads(body)["message"] == "answer is not JSON: <html>[REDACTED]</html>"
    assert json.loads(body)["is_success"] is False


def test_an_unexpected_error_is_one_structured_line(capsys: pytest.CaptureFixture[str]) -> None:
    sk = secret("sk")
    try:
        raise RuntimeError(f"bug while holding {sk}")
    except RuntimeError as error:
        body, status, headers = entry.on_error(error)

    assert status == 500 and headers["X-Google-Status"] == "crash"
    assert sk not in body
    [line] = capsys.readouterr().out.splitlines()
    record = json.loads(line)
    assert record["severity"] == "ERROR"
    assert record["error"] == "RuntimeError: bug while holding [REDACTED]"
    assert "Traceback" in record["stack_trace"] and sk not in line


def test_retry_later_and_http_errors_pass_through_the_error_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    body, status, _ = entry.on_error(RetryLater("DLI_HTTP_503 after 3 attempts"))
    not_found = NotFound()

    assert (status, body) == (500, "retry later: DLI_HTTP_503 after 3 attempts")
    assert entry.on_error(not_found) is not_found
    assert capsys.readouterr().out == ""  # both were logged where they were decided


def test_a_payload_that_crashes_the_validators_is_still_acknowledged(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(delivery: Delivery, rules: Any) -> None:
        raise TypeError("unforeseen shape")

    monkeypatch.setattr(handler, "parse_event", broken)
    sink = MemorySink()
    settings = load_settings(
        {
            "DLI_ENDPOINT": "http://127.0.0.1:9",
            "HUAWEICLOUD_SDK_AK": "ak00",
            "HUAWEICLOUD_SDK_SK": "sk00",
        },
        local_run=True,
    )
    rt = build_runtime(settings, sink=sink)
    delivery = Delivery(b"{}", {}, "job-timeout", "e-crash", None, "cloudevent")

    report = handler.process(delivery, rt)

    [result] = sink.results
    assert report.invalid and result["outcome"] == "invalid_event"
    assert result["message"] == "event: could not be read (TypeError)"
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert (record["severity"], record["event_id"]) == ("ERROR", "e-crash")
    assert "unforeseen shape" in record["stack_trace"]
