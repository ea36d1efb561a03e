"""A local DLI (Data Lake Insight) simulator: a real HTTP server that speaks the documented DLI
API closely enough that the official ``huaweicloudsdkdli`` client works against it.

For tests, the demo and ``dli-cancel simulator``; never imported on the function's path.
Standard library only: AK/SK signatures are checked by its own verifier (``signature.py``).

Served (``{pid}`` must be 32 lower-case hex, else 400 ``DLI.0001``):

- SQL: ``POST /v1.0/{pid}/jobs/submit-job``, ``GET /v1.0/{pid}/jobs/{id}/status``,
  ``GET /v1.0/{pid}/jobs``, ``DELETE /v1.0/{pid}/jobs/{id}``
- Spark: ``GET /v2.0/{pid}/batches``, ``GET /v2.0/{pid}/batches/{id}[/state]``,
  ``DELETE /v2.0/{pid}/batches/{id}``
- Flink: ``POST /v1.0/{pid}/streaming/jobs/stop``, ``GET /v1.0/{pid}/streaming/jobs[/{id}]``
- IAM: ``POST /v3/auth/tokens`` (password method; project scope by id, or by name: the
  simulated id of a project named N is ``md5(N)``)
- Admin (no auth, not logged): ``/_sim/faults``, ``/_sim/jobs``, ``/_sim/requests``,
  ``/_sim/config`` (``cancel_delay_s``, ``token_ttl_s``, ``page_cap``), ``/_sim/moves`` (a job
  that changes state right after the next SQL listing), ``/_sim/tokens``, ``/_sim/tokens/revoke``

Fault plans (``Fault``) answer the next matching requests with any status, ``Retry-After``,
error code (``DLI.0999`` with 400, the gateway's ``APIG.0101`` with 404, ...) or body (any
bytes; JSON of any type or shape with ``content_type="application/json"``), or drop or delay
them. ``set_page_cap`` makes listings serve fewer jobs per page than asked;
``move_after_next_listing`` moves a job between two listings.

Jobs can be seeded with an age (they started that long ago: ``start_time`` / ``create_time`` and
``duration`` say so) and, for SQL jobs, tags: ``Simulator.seed`` / ``submit_sql_job(age_s=...,
tags=...)``, ``POST /_sim/jobs`` with ``age_s`` and ``tags``, or ``--seed KIND:QUEUE:AGE`` on the
command line. Listings page as DLI's do: SQL ``current-page``/``page-size`` with ``job_count``,
Spark ``from``/``size`` with ``total``, Flink ``offset``/``limit`` with ``job_list.total_count``.

Error answers (``{"error_code", "error_msg"}``, plus ``X-Request-Id`` on every answer):

=================================================  ======  ==============
case                                               status  error_code
=================================================  ======  ==============
bad parameter / body / project id                  400     DLI.0001
unknown SQL job (status, cancel), unknown Flink    400     DLI.0002
cancel of a SQL job / Spark batch already terminal 400     DLI.0007
unknown Spark batch                                404     DLI.0023
no credentials; token scoped to another project    401     DLI.0013
AK/SK: unknown AK, bad signature, stale X-Sdk-Date,
missing/unknown security token, X-Project-Id
that differs from the path                         401     DLI.0014
unknown, expired or revoked X-Auth-Token           401     DLI.0015
injected 5xx fault                                 5xx     DLI.0999
injected 403 fault (other 4xx: DLI.0001)           403     DLI.0003
injected 429 fault; over the rate limit            429     APIGW.0308
path not served                                    404     APIGW.0101
=================================================  ======  ==============

With a rate limit (``--rate-limit N``, ``set_rate_limit(N)``, admin ``POST /_sim/config``
``{"rate_limit_per_s": N}``), DLI requests beyond N in one second are answered 429 with
``Retry-After`` as the API gateway does (``ratelimit.py``); IAM is not limited.

Flink stop answers 200 with one ``{"is_success": "true"|"false", "message"}`` per id (unknown or
already stopped ids are ``"false"``). IAM errors use IAM's own shape
``{"error": {"code", "message", "title"}}``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import string
import sys
import threading
from collections.abc import Mapping
from types import FrameType, TracebackType

from dli_simulator.core import SimCore
from dli_simulator.model import Fault, Headers, RequestRecord, Seed, SeedError
from dli_simulator.server import SimServer

__all__ = ["Fault", "Headers", "RequestRecord", "Seed", "Simulator", "main"]


class Simulator:
    """The DLI simulator; ``start()`` serves it on a background thread."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        credentials: dict[str, str] | None = None,
        security_tokens: set[str] | None = None,
        iam_users: dict[tuple[str, str], str] | None = None,
        token_ttl_s: float = 86400.0,
        clock_skew_s: float = 900.0,
    ) -> None:
        self.host = host
        self.port = port
        self._core = SimCore(
            dict(credentials or {}),
            set(security_tokens) if security_tokens is not None else None,
            dict(iam_users or {}),
            token_ttl_s,
            clock_skew_s,
        )
        self._server: SimServer | None = None
        self._thread: threading.Thread | None = None
        self._base_url: str | None = None

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> str:
        """Serve on a daemon thread; returns the base URL ``http://HOST:PORT``."""
        if self._server is None:
            self._server = SimServer((self.host, self.port), self._core)
            self.port = self._server.server_address[1]
            host = self.host if ":" not in self.host else f"[{self.host}]"
            self._base_url = f"http://{host}:{self.port}"
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="dli-simulator",
                daemon=True,
            )
            self._thread.start()
        return self.base_url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` once started (still the last one after ``stop``)."""
        if self._base_url is None:
            raise RuntimeError("the simulator is not started")
        return self._base_url

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- jobs -----------------------------------------------------------------------------
    # ``age_s``: the job started that many seconds ago (DLI then reports its start and a
    # duration of that age); ``tags``: SQL job tags, e.g. {"dli-cancel": "exempt"}.
    def submit_sql_job(
        self,
        project_id: str,
        *,
        queue_name: str = "default",
        status: str = "RUNNING",
        sql: str = "SELECT 1",
        job_type: str = "QUERY",
        age_s: float = 0.0,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        return self._core.store.add_sql(
            project_id, queue_name, status, sql, job_type, age_s=age_s, tags=tags
        )

    def add_sql_jobs(
        self,
        project_id: str,
        count: int,
        *,
        queue_name: str,
        status: str = "RUNNING",
        age_s: float = 0.0,
    ) -> list[str]:
        return [
            self.submit_sql_job(project_id, queue_name=queue_name, status=status, age_s=age_s)
            for _ in range(count)
        ]

    def add_spark_batch(
        self,
        project_id: str,
        *,
        queue_name: str = "default",
        state: str = "running",
        age_s: float = 0.0,
    ) -> str:
        return self._core.store.add_spark(project_id, queue_name, state, age_s=age_s)

    def add_flink_job(
        self,
        project_id: str,
        *,
        queue_name: str = "default",
        status: str = "job_running",
        age_s: float = 0.0,
    ) -> int:
        return self._core.store.add_flink(project_id, queue_name, status, age_s=age_s)

    def seed(self, project_id: str, seed: Seed) -> list[str]:
        """Add the jobs ``seed`` describes (active ones, of its kind, on its queue, started
        ``seed.age_s`` ago); their ids as strings."""
        return [str(job_id) for job_id in self._core.store.seed(project_id, seed)]

    def job_status(self, project_id: str, job_id: str) -> str | None:
        """SQL status / Spark state / Flink status as stored; ``None`` for an unknown job."""
        found = self._core.store.find(project_id, str(job_id))
        return None if found is None else found[1]

    def set_job_status(self, project_id: str, job_id: str, status: str) -> bool:
        """Move a job to ``status`` (e.g. FINISHED); ``False`` for an unknown job."""
        return self._core.store.set_status(project_id, str(job_id), status)

    # ---- observation ----------------------------------------------------------------------
    def requests(self) -> list[RequestRecord]:
        return self._core.records()

    def clear_requests(self) -> None:
        self._core.clear_records()

    def cancel_requests(self) -> list[RequestRecord]:
        return self._core.records(cancel_only=True)

    # ---- faults ---------------------------------------------------------------------------
    def add_fault(self, fault: Fault) -> None:
        self._core.add_fault(fault)

    def clear_faults(self) -> None:
        self._core.clear_faults()

    def set_cancel_delay(self, seconds: float) -> None:
        self._core.cancel_delay_s = seconds

    def set_rate_limit(self, per_s: int | None) -> None:
        """The API gateway's rate limit: at most ``per_s`` DLI requests in each second, the
        others answered 429 ``APIGW.0308`` with ``Retry-After`` (``None``: no limit)."""
        self._core.set_rate_limit(per_s)

    def set_page_cap(self, jobs: int | None) -> None:
        """Serve at most ``jobs`` per listing page, whatever page size is asked (``None``: as
        asked), as a DLI with a smaller page limit than documented would."""
        self._core.store.page_cap = jobs

    def move_after_next_listing(self, project_id: str, job_id: str, status: str) -> None:
        """Move a job to ``status`` right after the next SQL listing request is answered
        (e.g. LAUNCHING -> RUNNING between two listings of one queue)."""
        self._core.move_after_next_listing(project_id, str(job_id), status)

    def set_credentials(self, credentials: dict[str, str]) -> None:
        """Replace the accepted AK/SK pairs (a rotated or deleted access key)."""
        accepted = self._core.verifier.credentials
        accepted.clear()
        accepted.update(credentials)

    # ---- tokens ---------------------------------------------------------------------------
    def issued_tokens(self) -> list[str]:
        return self._core.tokens.issued()

    def revoke_token(self, token: str) -> None:
        self._core.tokens.revoke(token)

    def set_token_ttl(self, seconds: float) -> None:
        """Lifetime of tokens issued from now on."""
        self._core.tokens.ttl_s = seconds


# ---- command line -------------------------------------------------------------------------
def _random_key(length: int) -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _credentials() -> dict[str, str]:
    ak = os.environ.get("HUAWEICLOUD_SDK_AK")
    sk = os.environ.get("HUAWEICLOUD_SDK_SK")
    if not ak or not sk:
        ak, sk = _random_key(20), secrets.token_urlsafe(30)
        print(f"HUAWEICLOUD_SDK_AK={ak}\nHUAWEICLOUD_SDK_SK={sk}", file=sys.stderr, flush=True)
    return {ak: sk}


def _iam_users() -> dict[tuple[str, str], str]:
    names = ("IAM_DOMAIN", "IAM_USERNAME", "IAM_PASSWORD")
    domain, user, password = (os.environ.get(name) for name in names)
    if domain and user and password:
        return {(domain, user): password}
    return {}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dli_simulator", description="Run the DLI simulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--cancel-delay", type=float, default=0.0, help="seconds per cancel")
    parser.add_argument(
        "--rate-limit", type=int, default=0, help="DLI requests per second before 429 (0: none)"
    )
    parser.add_argument("--page-cap", type=int, help="at most this many jobs per listing page")
    parser.add_argument("--fault-status", type=int)
    parser.add_argument("--fault-count", type=int, default=1)
    parser.add_argument("--fault-retry-after")
    parser.add_argument("--fault-delay", type=float, default=0.0)
    parser.add_argument("--fault-drop", action="store_true")
    parser.add_argument("--fault-body")
    parser.add_argument("--fault-content-type", help="of --fault-body (default text/html)")
    parser.add_argument("--fault-error-code", help="DLI error code of the fault's answer")
    parser.add_argument("--fault-path", help="only requests whose path contains this")
    parser.add_argument("--fault-method")
    parser.add_argument(
        "--seed",
        action="append",
        default=[],
        metavar="KIND:QUEUE:AGE[:COUNT[:TAGS]]",
        help="start with active jobs of a given age (repeatable), e.g. sql:etl:2h, "
        "spark:etl:90m:3, sql:etl:3h:1:dli-cancel=exempt; AGE in s (default), m, h or d; "
        "TAGS (SQL) k=v[,k=v]",
    )
    parser.add_argument(
        "--project-id",
        default=os.environ.get("DLI_PROJECT_ID"),
        help="the project --seed adds jobs to (default: DLI_PROJECT_ID)",
    )
    return parser


def _fault(args: argparse.Namespace) -> Fault | None:
    fault = Fault(
        count=args.fault_count,
        status=args.fault_status,
        retry_after=args.fault_retry_after,
        delay_s=args.fault_delay,
        drop=args.fault_drop,
        body=args.fault_body,
        content_type=args.fault_content_type,
        error_code=args.fault_error_code,
        path_contains=args.fault_path,
        method=args.fault_method,
    )
    active = fault.drop or fault.delay_s > 0 or fault.answer_status() is not None
    return fault if active else None


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; prints the base URL as the first line of stdout."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        seeds = [Seed.parse(text) for text in args.seed]
    except SeedError as error:
        parser.error(str(error))
    if seeds and not args.project_id:
        parser.error("--seed needs --project-id (or DLI_PROJECT_ID)")
    sim = Simulator(
        host=args.host, port=args.port, credentials=_credentials(), iam_users=_iam_users()
    )
    if (fault := _fault(args)) is not None:
        sim.add_fault(fault)
    sim.set_cancel_delay(args.cancel_delay)
    sim.set_rate_limit(args.rate_limit or None)
    sim.set_page_cap(args.page_cap)
    stopped = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        print(sim.start(), flush=True)
        for seed in seeds:
            ids = sim.seed(args.project_id, seed)
            print(f"seeded {seed.describe()}: {', '.join(ids)}", file=sys.stderr, flush=True)
        while not stopped.wait(0.5):
            pass
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
