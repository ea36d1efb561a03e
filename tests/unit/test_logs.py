"""Logging on the standard ``logging`` module: Cloud Logging's JSON shape, trace and labels per
event (worker threads included), LOG_LEVEL, and redaction of every record, libraries' too.

In-process: the entry points are called with a real runtime (dry runs, or a DLI endpoint that
refuses connections), no server and no emulator.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import secrets
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import flask
import pytest
from cloudevents.http import CloudEvent
from werkzeug.datastructures import Headers

from cancel_handler import boot, entry, logs
from cancel_handler import runtime as runtime_module
from cancel_handler.config import ConfigError, load_log_settings, load_settings
from cancel_handler.results import MemorySink

GCP_PROJECT = "my-gcp-project"
DLI_PROJECT = "0123456789abcdef0123456789abcdef"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"
CLOUD_TRACE_ID = "105445aa7843bc8bf206b12000100000"
TRACE_FIELD = "logging.googleapis.com/trace"
SPAN_FIELD = "logging.googleapis.com/spanId"
SAMPLED_FIELD = "logging.googleapis.com/trace_sampled"
LABELS_FIELD = "logging.googleapis.com/labels"
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")

Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def lines() -> Iterator[Lines]:
    """Logging set up as at a start in Cloud Run (INFO, a Google Cloud project), into a buffer;
    returns the JSON objects written so far. Each line must be one JSON object."""
    stream = io.StringIO()
    logs.setup("INFO", GCP_PROJECT, stream)

    def read() -> list[dict[str, Any]]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    yield read
    logs.setup("INFO")
    logs.send_to(None)


def secret(prefix: str) -> str:
    value = f"{prefix}-{secrets.token_urlsafe(12)}"
    logs.register_secret(value)
    return value


# -- shape -----------------------------------------------------------------------------------


def test_a_record_is_one_json_line_in_cloud_loggings_structured_format(lines: Lines) -> None:
    logs.warning("job j: failed\nsecond line", event_id="e-1", attempts=2, error_code=None)

    [record] = lines()
    assert record["severity"] == "WARNING"
    assert record["message"] == "job j: failed\nsecond line"
    assert RFC3339_UTC.fullmatch(record["time"])
    written = datetime.strptime(record["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - written).total_seconds()) < 60
    assert record[LABELS_FIELD] == {"event_id": "e-1"}
    assert (record["event_id"], record["attempts"]) == ("e-1", 2)  # jsonPayload fields
    assert "error_code" not in record  # None fields are left out
    assert "logger" not in record  # our own lines name no logger
    assert TRACE_FIELD not in record  # no event, no trace


def test_fields_cannot_replace_cloud_logging_fields(lines: Lines) -> None:
    logs.info("m", time="yesterday", **{TRACE_FIELD: "projects/p/traces/1", "ok": 1})
    logging.getLogger("some.library").info("n", extra={"severity": "EMERGENCY"})

    ours, library = lines()
    assert RFC3339_UTC.fullmatch(ours["time"])
    assert TRACE_FIELD not in ours and ours["ok"] == 1
    assert library["severity"] == "INFO"


def test_a_library_record_has_the_same_shape_and_names_its_logger(lines: Lines) -> None:
    logging.getLogger("google.api_core.retry").warning(
        "retrying %s in %.1f s", "publish", 0.5, extra={"attempt": 2}
    )
    logging.getLogger("some.library").critical("disk full")

    first, second = lines()
    assert first["severity"] == "WARNING"
    assert first["message"] == "retrying publish in 0.5 s"
    assert (first["logger"], first["attempt"]) == ("google.api_core.retry", 2)
    assert RFC3339_UTC.fullmatch(first["time"])
    assert (second["severity"], second["logger"]) == ("CRITICAL", "some.library")


def test_a_library_error_carries_its_traceback_in_the_message(lines: Lines) -> None:
    try:
        raise TimeoutError("deadline exceeded")
    except TimeoutError:
        logging.getLogger("grpc._channel").exception("stream failed")

    [record] = lines()
    assert record["severity"] == "ERROR"
    assert record["message"].startswith("stream failed\nTraceback (most recent call last):")
    assert record["message"].endswith("TimeoutError: deadline exceeded")


def test_a_library_record_whose_arguments_do_not_fit_is_kept(lines: Lines) -> None:
    logging.getLogger("some.library").warning("%s and %s", "only one")

    [record] = lines()
    assert record["message"].startswith("%s and %s (arguments that do not fit:")
    assert "only one" in record["message"]


def test_only_our_handler_writes_even_after_others_were_added_to_the_root_logger(
    lines: Lines,
) -> None:
    """functions-framework adds root handlers of its own (LOG_EXECUTION_ID's dictConfig,
    ENTRY_POINT's two stream handlers): setting up again removes them, so that every record
    is written once."""
    plain = io.StringIO()
    logging.getLogger().addHandler(logging.StreamHandler(plain))
    logs.setup("INFO", GCP_PROJECT)

    logs.info("once")

    assert plain.getvalue() == ""
    assert [r["message"] for r in lines()] == ["once"]
    assert logging.getLogger().handlers == [logs._handler]


def test_a_server_logger_with_its_own_handler_is_adopted(lines: Lines) -> None:
    plain = io.StringIO()
    server_log = logging.getLogger("test.gunicorn.error")
    server_log.addHandler(logging.StreamHandler(plain))
    server_log.propagate = False

    logs.adopt("test.gunicorn.error")
    server_log.error("Worker (pid:42) was sent SIGKILL!")

    assert plain.getvalue() == ""
    [record] = lines()
    assert (record["logger"], record["severity"]) == ("test.gunicorn.error", "ERROR")


def test_an_explicit_stream_gets_the_line_whatever_the_level(lines: Lines) -> None:
    """The results a local run prints go through ``log(stream=...)``: they are output, not
    diagnostics, and LOG_LEVEL must not hide them."""
    logs.setup("ERROR", GCP_PROJECT)
    results = io.StringIO()

    logs.log("INFO", "result", stream=results, result={"outcome": "cancelled"})
    logs.info("dropped")

    [line] = results.getvalue().splitlines()
    assert json.loads(line)["result"] == {"outcome": "cancelled"}
    assert lines() == []


# -- trace and labels ------------------------------------------------------------------------


def test_traceparent_gives_trace_span_and_sampling(lines: Lines) -> None:
    with logs.event_context("e-1", traceparent=TRACEPARENT):
        logs.info("inside")
    with logs.event_context("e-2", traceparent=f"00-{TRACE_ID}-{SPAN_ID}-00"):
        logs.info("not sampled")
    logs.info("after")

    inside, not_sampled, after = lines()
    assert inside[TRACE_FIELD] == f"projects/{GCP_PROJECT}/traces/{TRACE_ID}"
    assert (inside[SPAN_FIELD], inside[SAMPLED_FIELD]) == (SPAN_ID, True)
    assert inside[LABELS_FIELD] == {"event_id": "e-1"}
    assert not_sampled[SAMPLED_FIELD] is False
    assert TRACE_FIELD not in after and LABELS_FIELD not in after


@pytest.mark.parametrize(
    ("header", "span", "sampled"),
    [
        (f"{CLOUD_TRACE_ID}/1;o=1", "0000000000000001", True),
        (f"{CLOUD_TRACE_ID}/18446744073709551615;o=0", "ffffffffffffffff", False),
        (f"{CLOUD_TRACE_ID}/2", "0000000000000002", None),
        (CLOUD_TRACE_ID, None, None),
    ],
)
def test_x_cloud_trace_context_gives_trace_and_a_hex_span(
    lines: Lines, header: str, span: str | None, sampled: bool | None
) -> None:
    with logs.event_context("e-1", cloud_trace=header):
        logs.info("inside")

    [record] = lines()
    assert record[TRACE_FIELD] == f"projects/{GCP_PROJECT}/traces/{CLOUD_TRACE_ID}"
    assert record.get(SPAN_FIELD) == span
    assert record.get(SAMPLED_FIELD) == sampled


def test_a_valid_traceparent_wins_and_a_bad_one_falls_back(lines: Lines) -> None:
    with logs.event_context(traceparent=TRACEPARENT, cloud_trace=f"{CLOUD_TRACE_ID}/1"):
        logs.info("both")
    with logs.event_context(traceparent="01-bad", cloud_trace=f"{CLOUD_TRACE_ID}/1"):
        logs.info("bad traceparent")

    both, fallback = lines()
    assert both[TRACE_FIELD].endswith(TRACE_ID)
    assert fallback[TRACE_FIELD].endswith(CLOUD_TRACE_ID)


@pytest.mark.parametrize(
    "traceparent",
    [
        "garbage",
        f"00-{'0' * 32}-{SPAN_ID}-01",  # all-zero trace id
        f"ff-{TRACE_ID}-{SPAN_ID}-01",  # version ff
        f"00-{TRACE_ID.upper()}-{SPAN_ID}-01",  # upper-case hex
        f"00-{TRACE_ID}-{SPAN_ID}-01-extra",  # version 00 has four fields
        f'00-{TRACE_ID}-{SPAN_ID}-01\n{{"severity": "EMERGENCY"}}',
    ],
)
def test_a_malformed_trace_header_is_ignored(lines: Lines, traceparent: str) -> None:
    with logs.event_context("e-1", traceparent=traceparent, cloud_trace=traceparent):
        logs.info("inside")

    [record] = lines()
    assert TRACE_FIELD not in record and SPAN_FIELD not in record
    assert record[LABELS_FIELD] == {"event_id": "e-1"}


def test_without_a_google_cloud_project_the_trace_id_stands_alone(lines: Lines) -> None:
    logs.setup("INFO", None)
    with logs.event_context(traceparent=TRACEPARENT):
        logs.info("local run")

    [record] = lines()
    assert record[TRACE_FIELD] == TRACE_ID


def test_a_record_about_one_job_has_its_job_id_as_a_label(lines: Lines) -> None:
    with logs.event_context("e-1"):
        logs.info("job j-1: cancelled", job_id="j-1")
        logs.info("job j-2: cancelled", event_id="e-other", job_id="j-2")
        logs.info("queue q: nothing_to_cancel", job_id="")

    first, second, queue = lines()
    assert first[LABELS_FIELD] == {"event_id": "e-1", "job_id": "j-1"}
    assert second[LABELS_FIELD] == {"event_id": "e-other", "job_id": "j-2"}
    assert queue[LABELS_FIELD] == {"event_id": "e-1"}


def test_carry_takes_the_event_into_worker_threads_with_the_job_id(lines: Lines) -> None:
    library = logging.getLogger("google.auth.transport.requests")

    def work(job_id: str) -> str:
        library.warning("refreshing credentials for %s", job_id)
        return threading_name()

    with logs.event_context("e-1", traceparent=TRACEPARENT), ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(logs.carry(work, job_id=j), j) for j in ("j-1", "j-2", "j-3")]
        names = [future.result() for future in futures]
        mapped = list(pool.map(logs.carry(work), ["j-4", "j-5"]))  # one wrapper, many threads
        pool.submit(work, "j-6").result()  # not carried: no event

    assert all(name != "MainThread" for name in names + mapped)
    records = lines()
    by_message = {r["message"].rsplit(" ", 1)[1]: r for r in records}
    for job in ("j-1", "j-2", "j-3"):
        assert by_message[job][LABELS_FIELD] == {"event_id": "e-1", "job_id": job}
        assert by_message[job][TRACE_FIELD].endswith(TRACE_ID)
    for job in ("j-4", "j-5"):
        assert by_message[job][LABELS_FIELD] == {"event_id": "e-1"}
    assert LABELS_FIELD not in by_message["j-6"] and TRACE_FIELD not in by_message["j-6"]


def threading_name() -> str:
    import threading

    return threading.current_thread().name


# -- through the entry points ----------------------------------------------------------------


def runtime(monkeypatch: pytest.MonkeyPatch, **env: str) -> runtime_module.Runtime:
    """A real runtime (DLI at a port that refuses connections, results kept in memory), the
    one the entry points use."""
    settings = load_settings(
        {
            "DLI_ENDPOINT": "http://127.0.0.1:9",
            "DLI_PROJECT_ID": DLI_PROJECT,
            "HUAWEICLOUD_SDK_AK": "ak-unit-logs",
            "HUAWEICLOUD_SDK_SK": "sk-unit-logs",
            "DLI_MAX_ATTEMPTS": "1",
            "DLI_TIMEOUT_S": "2",
            **env,
        },
        local_run=True,
    )
    rt = runtime_module.build_runtime(settings, sink=MemorySink())
    monkeypatch.setattr(runtime_module, "runtime", lambda: rt)
    return rt


def cloud_event(event: dict[str, Any], **extensions: str) -> CloudEvent:
    event_id = f"ce-{uuid.uuid4().hex[:12]}"
    message = {
        "data": base64.b64encode(json.dumps(event).encode()).decode(),
        "messageId": event_id,
        "publishTime": datetime.now(UTC).isoformat(),
    }
    attributes = {
        "id": event_id,
        "source": "//pubsub.googleapis.com/projects/p/topics/job-timeout",
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
        "specversion": "1.0",
        **extensions,
    }
    return CloudEvent(attributes, {"message": message, "subscription": "projects/p/s/s"})


class _Request:
    """What ``entry.on_http`` reads of a Flask request."""

    def __init__(self, body: dict[str, Any], headers: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.method = "POST"
        self.path = "/"
        self.headers = Headers(headers)
        self.content_length = len(data)
        self.stream = io.BytesIO(data)


def dry_run_job(job_id: str) -> dict[str, Any]:
    return {"event_type": "job-timeout", "job_id": job_id, "dry_run": True}


def lines_about(records: Sequence[dict[str, Any]], job_id: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("job_id") == job_id]


def test_a_cloud_events_traceparent_extension_traces_its_lines(
    lines: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime(monkeypatch)
    job = str(uuid.uuid4())
    event = cloud_event(dry_run_job(job), traceparent=TRACEPARENT)

    entry.on_cloud_event(event)

    [record] = lines_about(lines(), job)
    assert record["message"] == f"job {job}: dry_run"
    assert record[TRACE_FIELD] == f"projects/{GCP_PROJECT}/traces/{TRACE_ID}"
    assert record[SPAN_FIELD] == SPAN_ID
    assert record[LABELS_FIELD] == {"event_id": event["id"], "job_id": job}


def test_a_cloud_event_without_the_extension_is_traced_by_its_request(
    lines: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime(monkeypatch)
    job = str(uuid.uuid4())
    app = flask.Flask("unit")
    headers = {"X-Cloud-Trace-Context": f"{CLOUD_TRACE_ID}/7;o=1"}

    with app.test_request_context("/", method="POST", headers=headers):
        entry.on_cloud_event(cloud_event(dry_run_job(job)))

    [record] = lines_about(lines(), job)
    assert record[TRACE_FIELD].endswith(f"/traces/{CLOUD_TRACE_ID}")
    assert record[SPAN_FIELD] == "0000000000000007"


@pytest.mark.parametrize(
    ("headers", "trace_id"),
    [
        ({"traceparent": TRACEPARENT}, TRACE_ID),
        ({"X-Cloud-Trace-Context": f"{CLOUD_TRACE_ID}/1;o=1"}, CLOUD_TRACE_ID),
        ({"traceparent": TRACEPARENT, "X-Cloud-Trace-Context": CLOUD_TRACE_ID}, TRACE_ID),
    ],
)
def test_an_http_requests_trace_header_traces_its_lines(
    lines: Lines, monkeypatch: pytest.MonkeyPatch, headers: dict[str, str], trace_id: str
) -> None:
    runtime(monkeypatch)
    job = str(uuid.uuid4())

    body, status, _ = entry.on_http(_Request(dry_run_job(job), headers))

    assert status == 200
    [result] = json.loads(body)["results"]
    [record] = lines_about(lines(), job)
    assert record[TRACE_FIELD] == f"projects/{GCP_PROJECT}/traces/{trace_id}"
    assert record[LABELS_FIELD] == {"event_id": result["source_event_id"], "job_id": job}


def test_library_lines_from_the_cancel_workers_carry_the_event_and_their_job(
    lines: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two jobs are cancelled on worker threads; DLI refuses connections, so the event is to be
    retried. urllib3's DEBUG lines come from those threads."""
    runtime(monkeypatch)
    logs.setup("DEBUG", GCP_PROJECT)
    jobs = [str(uuid.uuid4()), str(uuid.uuid4())]
    event = {"event_type": "budget-exceeded", "project_id": DLI_PROJECT, "job_ids": jobs}

    _, status, _ = entry.on_http(_Request(event, {"traceparent": TRACEPARENT}))

    assert status == 503
    records = lines()
    [retry] = [r for r in records if r["message"].startswith("transient DLI fault")]
    event_id = retry[LABELS_FIELD]["event_id"]
    library = [r for r in records if r.get("logger", "").startswith("urllib3")]
    assert library, "urllib3 logged the connections at DEBUG"
    assert all(r[LABELS_FIELD]["event_id"] == event_id for r in library)
    assert all(r[TRACE_FIELD].endswith(TRACE_ID) for r in library)
    assert {r[LABELS_FIELD].get("job_id") for r in library} >= set(jobs)


# -- LOG_LEVEL -------------------------------------------------------------------------------


def emit_all() -> None:
    logs.debug("ours debug")
    logs.info("ours info")
    logs.warning("ours warning")
    logs.error("ours error")
    for name in ("urllib3.connectionpool", "google.auth._default", "grpc._cython", "werkzeug"):
        library = logging.getLogger(name)
        library.debug(f"{name} debug")
        library.info(f"{name} info")
        library.warning(f"{name} warning")
        library.error(f"{name} error")


@pytest.mark.parametrize(
    ("level", "ours", "libraries"),
    [
        ("DEBUG", ["debug", "info", "warning", "error"], ["debug", "info", "warning", "error"]),
        ("INFO", ["info", "warning", "error"], ["warning", "error"]),
        ("WARNING", ["warning", "error"], ["warning", "error"]),
        ("ERROR", ["error"], ["error"]),
    ],
)
def test_log_level_filters_ours_and_keeps_libraries_quiet_unless_debug(
    lines: Lines, level: str, ours: list[str], libraries: list[str]
) -> None:
    logs.setup(level, GCP_PROJECT)

    emit_all()

    records = lines()
    assert [r["message"] for r in records if "logger" not in r] == [f"ours {w}" for w in ours]
    for name in ("urllib3.connectionpool", "google.auth._default", "grpc._cython", "werkzeug"):
        written = [r["message"] for r in records if r.get("logger") == name]
        assert written == [f"{name} {w}" for w in libraries]
    assert all(r["severity"] in ("DEBUG", "INFO", "WARNING", "ERROR") for r in records)


def test_log_level_is_read_by_config_and_a_bad_one_is_a_configuration_error() -> None:
    base = {
        "DLI_ENDPOINT": "https://dli.example.com",
        "HUAWEICLOUD_SDK_AK": "ak",
        "HUAWEICLOUD_SDK_SK": "sk",
        "RESULT_TOPIC": "projects/p/topics/t",
    }

    assert load_settings(base).log_level == "INFO"
    assert load_settings({**base, "LOG_LEVEL": " debug "}).log_level == "DEBUG"
    with pytest.raises(ConfigError) as bad:
        load_settings({**base, "LOG_LEVEL": "verbose"})
    assert bad.value.problems == [
        "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, got 'verbose'"
    ]
    # Logging itself starts anyway (at INFO), so that the error can be reported.
    assert load_log_settings({"LOG_LEVEL": "verbose"}).level == "INFO"
    assert load_log_settings({"LOG_LEVEL": "warning", "GOOGLE_CLOUD_PROJECT": "g"}) == (
        load_log_settings({"LOG_LEVEL": "WARNING", "GOOGLE_CLOUD_PROJECT": "g"})
    )


def test_a_bad_log_level_is_reported_at_start(
    lines: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "DLI_ENDPOINT": "https://dli.example.com",
        "HUAWEICLOUD_SDK_AK": "ak",
        "HUAWEICLOUD_SDK_SK": "sk",
        "RESULT_TOPIC": "projects/p/topics/t",
        "LOG_LEVEL": "loud",
        "GOOGLE_CLOUD_PROJECT": GCP_PROJECT,
    }.items():
        monkeypatch.setenv(name, value)

    boot.startup()
    logs.info("still logging at INFO")
    logs.debug("not at DEBUG")

    error, info = lines()
    assert error["severity"] == "ERROR"
    assert error["message"].startswith("configuration error: LOG_LEVEL must be one of")
    assert "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, got 'loud'" in error["problems"]
    assert info["message"] == "still logging at INFO"


def test_the_start_line_names_the_log_level(lines: Lines, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "DLI_ENDPOINT": "https://dli.example.com",
        "HUAWEICLOUD_SDK_AK": "ak",
        "HUAWEICLOUD_SDK_SK": "sk",
        "RESULT_TOPIC": "projects/p/topics/t",
        "LOG_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(name, value)

    boot.startup()
    logs.warning("a warning")
    logs.info("an info")

    assert [r["message"] for r in lines()] == ["a warning"]  # "ready" is INFO: not shown
    monkeypatch.setenv("LOG_LEVEL", "info")
    boot.startup()
    assert [r.get("log_level") for r in lines() if r["message"] == "dli-cancel ready"] == ["INFO"]


# -- redaction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "logger_name",
    ["urllib3.connectionpool", "google.auth.transport.requests", "werkzeug", "grpc._channel"],
)
def test_a_library_record_with_credentials_comes_out_redacted_and_in_json(
    lines: Lines, logger_name: str
) -> None:
    logs.setup("DEBUG", GCP_PROJECT)
    ak = "AKUNIT" + secrets.token_hex(6).upper()
    sk = secret("sk")
    token = secret("token")
    logs.register_secret(ak)
    library = logging.getLogger(logger_name)

    library.debug(
        "send: %r",
        f"POST /v1.0/p/jobs/x HTTP/1.1\r\nAuthorization: SDK-HMAC-SHA256 Access={ak}, "
        "SignedHeaders=host;x-sdk-date, Signature=f00dcafe\r\nHost: dli\r\n",
    )
    library.info("headers %s", {"X-Auth-Token": "MIIEunit-token", "Host": "dli"})
    library.warning("refresh failed", extra={"request": {"body": f"secret={sk}"}, "k": [token]})
    try:
        raise PermissionError(f"401 with X-Security-Token: {token}")
    except PermissionError:
        library.exception("call failed for %s", ak)

    records = lines()
    assert len(records) == 4
    text = "\n".join(json.dumps(r) for r in records)
    for value in (ak, sk, token, "f00dcafe", "MIIEunit-token"):
        assert value not in text
    assert all(r["logger"] == logger_name for r in records)
    assert "Authorization: [REDACTED]" in records[0]["message"]
    assert records[1]["message"] == "headers {'X-Auth-Token': '[REDACTED]', 'Host': 'dli'}"
    assert records[2]["request"] == {"body": "secret=[REDACTED]"}
    assert records[2]["k"] == ["[REDACTED]"]
    assert "Traceback" in records[3]["message"] and "[REDACTED]" in records[3]["message"]


def test_our_fields_are_redacted_whatever_their_type(lines: Lines) -> None:
    sk = secret("sk")

    class Holder:
        def __str__(self) -> str:
            return f"holder of {sk}"

    logs.error("m", obj=Holder(), items=(sk, 1, None), nested={1: {"deep": [sk]}}, flag=True)

    [record] = lines()
    assert sk not in json.dumps(record)
    assert record["obj"] == "holder of [REDACTED]"
    assert record["items"] == ["[REDACTED]", 1, None]
    assert record["nested"] == {"1": {"deep": ["[REDACTED]"]}}
    assert record["flag"] is True


def test_google_records_still_reach_the_log_after_google_api_core_turned_propagation_off(
    lines: Lines,
) -> None:
    # google-api-core's client logging sets propagate=False on an unconfigured "google" logger
    logging.getLogger("google").propagate = False
    logs.setup("INFO", GCP_PROJECT)

    logging.getLogger("google.api_core.retry").warning("retrying publish")

    [record] = lines()
    assert record["message"] == "retrying publish"
    assert record["logger"] == "google.api_core.retry"
