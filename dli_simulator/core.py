"""The simulator's request handling, independent of the HTTP plumbing: routing, auth, faults,
the request log and the admin API."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote

from dli_simulator.auth import AkSkVerifier, SignedRequest, TokenService, auth_kind
from dli_simulator.model import (
    NO_SUCH_API,
    PARAM_ERROR,
    PROJECT_ID_RE,
    SERVER_ERROR,
    THROTTLED,
    USER_AUTH_ERROR,
    ApiError,
    Fault,
    Headers,
    RequestRecord,
    Response,
)
from dli_simulator.ratelimit import RateLimit, retry_after_header
from dli_simulator.store import JobStore, sql_job_type

PID = r"(?P<pid>[^/]+)"
ID = r"(?P<job_id>[^/]+)"
CANCEL_RE = re.compile(
    r"^(DELETE /v1\.0/[^/]+/jobs/[^/]+|DELETE /v2\.0/[^/]+/batches/[^/]+"
    r"|POST /v1\.0/[^/]+/streaming/jobs/stop)/?$"
)
# The DLI code of an injected fault without its own ``error_code``: by status, else DLI.0999
# for a 5xx and DLI.0001 for any other status.
FAULT_CODES = {
    400: PARAM_ERROR,
    401: USER_AUTH_ERROR,
    403: "DLI.0003",
    404: "DLI.0023",
    429: THROTTLED,
}


def is_cancel(method: str, path: str) -> bool:
    return CANCEL_RE.match(f"{method} {path}") is not None


@dataclass
class Incoming:
    """One HTTP request as received."""

    method: str
    raw_path: str
    query_pairs: list[tuple[str, str]]
    headers: Headers
    body: bytes

    def query(self) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {}
        for key, value in self.query_pairs:
            result.setdefault(key, []).append(value)
        return result

    def json_body(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            raise ApiError(400, PARAM_ERROR, "The request body is not valid JSON.") from None


Handler = Callable[[Incoming, dict[str, str]], Response]


class SimCore:
    """State and behaviour of one simulator; the HTTP server calls ``handle``/``admin``."""

    def __init__(
        self,
        credentials: dict[str, str],
        security_tokens: set[str] | None,
        iam_users: dict[tuple[str, str], str],
        token_ttl_s: float,
        clock_skew_s: float,
    ) -> None:
        self.store = JobStore()
        self.tokens = TokenService(iam_users, token_ttl_s)
        self.verifier = AkSkVerifier(credentials, security_tokens, clock_skew_s)
        self.cancel_delay_s = 0.0
        self.rate_limit: RateLimit | None = None  # the API gateway's, when set
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._log: list[RequestRecord] = []
        self._moves_after_listing: list[tuple[str, str, str]] = []
        self._routes: list[tuple[str, re.Pattern[str], Handler, bool]] = []
        self._add_routes()

    # ---- request log and faults -----------------------------------------------------------
    def begin(self, request: Incoming) -> RequestRecord:
        kind, access_key = auth_kind(request.headers)
        record = RequestRecord(
            method=request.method,
            path=request.raw_path,
            query={k: v[0] for k, v in request.query().items()},
            headers=request.headers,
            auth=kind,
            access_key=access_key,
            query_pairs=list(request.query_pairs),
            body=request.body.decode("utf-8", "replace"),
            request_id=uuid.uuid4().hex,
            received_at=time.time(),
        )
        with self._lock:
            self._log.append(record)
        return record

    def finish(self, record: RequestRecord, status: int) -> None:
        with self._lock:
            record.status = status

    def records(self, cancel_only: bool = False) -> list[RequestRecord]:
        with self._lock:
            copies = [replace(r, headers=Headers(r.headers)) for r in self._log]
        return [r for r in copies if not cancel_only or is_cancel(r.method, r.path)]

    def clear_records(self) -> None:
        with self._lock:
            self._log.clear()

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(replace(fault))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def take_fault(self, method: str, path: str) -> Fault | None:
        """Consume one use of the first matching fault."""
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.matches(method, path):
                    fault.count -= 1
                    if fault.count <= 0:
                        del self._faults[index]
                    return replace(fault)
        return None

    def set_rate_limit(self, per_s: int | None) -> None:
        """At most ``per_s`` DLI requests a second, the rest 429 (``None`` or 0: no limit)."""
        self.rate_limit = RateLimit(per_s) if per_s else None

    def throttle(self, request: Incoming) -> Response | None:
        """The gateway's 429 when ``request`` is over the rate limit (IAM is not counted)."""
        limit = self.rate_limit
        if limit is None or request.raw_path.startswith("/v3/"):
            return None
        wait_s = limit.admit()
        if wait_s is None:
            return None
        body = {"error_code": THROTTLED, "error_msg": "The throttling threshold has been reached."}
        return Response.json(429, body, {"Retry-After": retry_after_header(wait_s)})

    # ---- DLI / IAM requests ---------------------------------------------------------------
    def handle(self, request: Incoming) -> Response:
        try:
            return self._dispatch(request)
        except ApiError as error:
            return Response.error(error)
        except Exception as exc:  # a simulator bug: answer like a server error, keep serving
            return Response.error(ApiError(500, SERVER_ERROR, f"Internal error: {exc!r}"))

    def _dispatch(self, request: Incoming) -> Response:
        for method, pattern, handler, cancel in self._routes:
            match = pattern.match(request.raw_path)
            if match is None or method != request.method:
                continue
            params = {k: unquote(v) for k, v in match.groupdict().items()}
            if "pid" in params:
                self._authenticate(request, params["pid"])
                if not PROJECT_ID_RE.match(params["pid"]):
                    raise ApiError(400, PARAM_ERROR, f"Invalid project id: {params['pid']}")
            if cancel and self.cancel_delay_s > 0:
                time.sleep(self.cancel_delay_s)
            return handler(request, params)
        raise ApiError(
            404, NO_SUCH_API, "The API does not exist or has not been published in the environment"
        )

    def _authenticate(self, request: Incoming, project_id: str) -> None:
        kind, _ = auth_kind(request.headers)
        if kind == "aksk":
            signed = SignedRequest(
                request.method, request.raw_path, request.query_pairs, request.headers, request.body
            )
            self.verifier.verify(signed, project_id)
        elif kind == "token":
            self.tokens.verify(request.headers["X-Auth-Token"], project_id)
        else:
            raise ApiError(
                401,
                USER_AUTH_ERROR,
                "X-Auth-Token is not defined in request. It is mandatory. "
                "Please define and send the request.",
            )

    def _add_routes(self) -> None:
        store = self.store

        def route(method: str, path: str, handler: Handler, cancel: bool = False) -> None:
            self._routes.append((method, re.compile(f"^{path}/?$"), handler, cancel))

        def query_view(fn: Callable[[str, dict[str, list[str]]], Any]) -> Handler:
            return lambda req, p: Response.json(200, fn(p["pid"], req.query()))

        def id_view(fn: Callable[[str, str], Any]) -> Handler:
            return lambda req, p: Response.json(200, fn(p["pid"], p["job_id"]))

        route("POST", r"/v3/auth/tokens", lambda req, p: self._issue_token(req))
        route("POST", rf"/v1\.0/{PID}/jobs/submit-job", self._submit_sql)
        route("GET", rf"/v1\.0/{PID}/jobs", self._list_sql)
        route("GET", rf"/v1\.0/{PID}/jobs/{ID}/status", id_view(store.sql_status))
        route("DELETE", rf"/v1\.0/{PID}/jobs/{ID}", id_view(store.cancel_sql), cancel=True)
        route("GET", rf"/v2\.0/{PID}/batches", query_view(store.list_spark))
        route("GET", rf"/v2\.0/{PID}/batches/{ID}", id_view(store.spark_batch))
        route("GET", rf"/v2\.0/{PID}/batches/{ID}/state", id_view(store.spark_state))
        route("DELETE", rf"/v2\.0/{PID}/batches/{ID}", id_view(store.cancel_spark), cancel=True)
        route("POST", rf"/v1\.0/{PID}/streaming/jobs/stop", self._stop_flink, cancel=True)
        route("GET", rf"/v1\.0/{PID}/streaming/jobs", query_view(store.list_flink))
        route("GET", rf"/v1\.0/{PID}/streaming/jobs/{ID}", id_view(store.flink_detail))

    def _list_sql(self, request: Incoming, params: dict[str, str]) -> Response:
        """A SQL listing; the moves planned for "after the next listing" happen once it is
        answered (a job that starts running between two listings)."""
        response = Response.json(200, self.store.list_sql(params["pid"], request.query()))
        with self._lock:
            moves, self._moves_after_listing = self._moves_after_listing, []
        for project_id, job_id, status in moves:
            self.store.set_status(project_id, job_id, status)
        return response

    def move_after_next_listing(self, project_id: str, job_id: str, status: str) -> None:
        """Move the job to ``status`` right after the next SQL listing request is answered
        (whatever state that listing asked for)."""
        with self._lock:
            self._moves_after_listing.append((project_id, job_id, status))

    def _issue_token(self, request: Incoming) -> Response:
        try:
            body = json.loads(request.body or b"null")
        except ValueError:
            body = None
        return self.tokens.issue(body)

    def _submit_sql(self, request: Incoming, params: dict[str, str]) -> Response:
        body = request.json_body()
        if not isinstance(body, dict):
            raise ApiError(400, PARAM_ERROR, "The request body must be a JSON object.")
        sql = body.get("sql")
        queue = body.get("queue_name") or "default"
        if not isinstance(sql, str) or not sql.strip() or not isinstance(queue, str):
            raise ApiError(400, PARAM_ERROR, "Parameter sql is required (a non-empty string).")
        job_type = sql_job_type(sql)
        job_id = self.store.add_sql(params["pid"], queue, "RUNNING", sql, job_type)
        payload = {
            "is_success": True,
            "message": "",
            "job_id": job_id,
            "job_type": job_type,
            "job_mode": "async",
        }
        return Response.json(200, payload)

    def _stop_flink(self, request: Incoming, params: dict[str, str]) -> Response:
        body = request.json_body()
        ids = body.get("job_ids") if isinstance(body, dict) else None
        valid = isinstance(ids, list) and ids and all(_is_int(i) for i in ids)
        if not valid or not isinstance(ids, list):
            raise ApiError(400, PARAM_ERROR, "Parameter job_ids must be a non-empty integer list.")
        return Response.json(200, self.store.stop_flink(params["pid"], ids))

    def fault_response(self, fault: Fault, status: int) -> Response:
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        if fault.body is not None:
            headers["Content-Type"] = fault.content_type or "text/html"
            return Response(status, fault.body.encode("utf-8"), headers)
        default = SERVER_ERROR if status >= 500 else PARAM_ERROR
        code = fault.error_code or FAULT_CODES.get(status, default)
        message = "The request is throttled." if status == 429 else "Simulated fault."
        return Response.json(status, {"error_code": code, "error_msg": message}, headers)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
