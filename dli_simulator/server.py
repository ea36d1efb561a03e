"""HTTP plumbing of the simulator: a ThreadingHTTPServer whose handler parses each request into
an ``Incoming`` and hands it to ``SimCore`` (DLI / IAM) or to the admin API (``/_sim/``)."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from dli_simulator.core import Incoming, SimCore
from dli_simulator.model import Fault, Headers, RequestRecord, Response, Seed

ADMIN_PREFIX = "/_sim/"
MAX_BODY = 16 * 1024 * 1024


class SimServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], core: SimCore) -> None:
        self.core = core
        self.admin = AdminApi(core)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, SimRequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timeout, dropped connection) is normal here, not an error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut every open (keep-alive) connection, so a stopped simulator answers nothing."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class SimRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "DLISimulator/1.0"
    # Headers and body go out in two writes: with Nagle on, a keep-alive client's delayed ACK
    # held every answer back ~40 ms.
    disable_nagle_algorithm = True
    server: SimServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log (``Simulator.requests()``) records everything."""

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def _serve(self) -> None:
        request = self._parse()
        if request.raw_path.startswith(ADMIN_PREFIX):
            self._write(self.server.admin.handle(request))
            return
        core = self.server.core
        record = core.begin(request)
        response = self._faulted(record) or core.throttle(request) or core.handle(request)
        response.headers["X-Request-Id"] = record.request_id
        core.finish(record, 0 if response.drop else response.status)  # before the client sees it
        if response.drop:
            self._drop()
        else:
            self._write(response)

    def _faulted(self, record: RequestRecord) -> Response | None:
        fault = self.server.core.take_fault(record.method, record.path)
        if fault is None:
            return None
        if fault.delay_s > 0:
            time.sleep(fault.delay_s)
        if fault.drop:
            return Response(0, drop=True)
        status = fault.answer_status()
        return None if status is None else self.server.core.fault_response(fault, status)

    def _parse(self) -> Incoming:
        raw_path, _, raw_query = self.path.partition("?")
        headers = Headers()
        for name, value in self.headers.items():
            headers.setdefault(name, value)
        pairs = parse_qsl(raw_query, keep_blank_values=True)
        return Incoming(self.command, raw_path, pairs, headers, self._read_body())

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(min(length, MAX_BODY)) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def _write(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def _drop(self) -> None:
        """Close the connection without answering."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class AdminApi:
    """``/_sim/`` endpoints (no auth, not recorded in the request log)."""

    def __init__(self, core: SimCore) -> None:
        self.core = core

    def handle(self, request: Incoming) -> Response:
        parts = [p for p in request.raw_path[len(ADMIN_PREFIX) :].split("/") if p]
        try:
            return self._route(request, parts)
        except (ValueError, TypeError, KeyError) as exc:
            return Response.json(400, {"error": str(exc)})

    def _route(self, request: Incoming, parts: list[str]) -> Response:
        key = (request.method, parts[0] if parts else "", len(parts))
        body = json.loads(request.body) if request.body else {}
        if key == ("POST", "faults", 1):
            self.core.add_fault(Fault.from_json(body))
            return _ok()
        if key == ("DELETE", "faults", 1):
            self.core.clear_faults()
            return _ok()
        if key == ("POST", "jobs", 1):
            return Response.json(200, {"job_ids": self._add_jobs(body)})
        if key[1] == "jobs" and len(parts) == 3:
            return self._job(request.method, parts[1], parts[2], body)
        if key == ("GET", "requests", 1):
            cancel_only = request.query().get("cancel_only", ["0"])[0] in ("1", "true")
            records = self.core.records(cancel_only=cancel_only)
            return Response.json(200, [r.to_json() for r in records])
        if key == ("DELETE", "requests", 1):
            self.core.clear_records()
            return _ok()
        if key == ("POST", "config", 1):
            self._config(body)
            return _ok()
        if key == ("POST", "moves", 1):
            job = (str(body["project_id"]), str(body["job_id"]), str(body["status"]))
            self.core.move_after_next_listing(*job)
            return _ok()
        if key == ("GET", "tokens", 1):
            return Response.json(200, {"tokens": self.core.tokens.issued()})
        if key == ("POST", "tokens", 2) and parts[1] == "revoke":
            found = self.core.tokens.revoke(str(body["token"]))
            return Response.json(200 if found else 404, {"ok": found})
        return Response.json(
            404, {"error": f"no admin endpoint {request.method} /_sim/{'/'.join(parts)}"}
        )

    def _add_jobs(self, body: dict[str, Any]) -> list[str | int]:
        """``{"project_id", "kind", "queue_name", "count", "status", "age_s", "tags"}``."""
        return self.core.store.seed(str(body["project_id"]), Seed.from_json(body))

    def _job(self, method: str, project_id: str, job_id: str, body: dict[str, Any]) -> Response:
        if method == "POST":
            self.core.store.set_status(project_id, job_id, str(body["status"]))
        found = self.core.store.find(project_id, job_id)
        if found is None:
            return Response.json(404, {"error": f"no job {job_id} in project {project_id}"})
        kind, status = found
        payload = {"project_id": project_id, "job_id": job_id, "kind": kind, "status": status}
        return Response.json(200, payload)

    def _config(self, body: dict[str, Any]) -> None:
        if "cancel_delay_s" in body:
            self.core.cancel_delay_s = float(body["cancel_delay_s"])
        if "token_ttl_s" in body:
            self.core.tokens.ttl_s = float(body["token_ttl_s"])
        if "rate_limit_per_s" in body:
            self.core.set_rate_limit(int(body["rate_limit_per_s"] or 0))
        if "page_cap" in body:
            cap = body["page_cap"]
            self.core.store.page_cap = None if cap is None else int(cap)


def _ok() -> Response:
    return Response.json(200, {"ok": True})
