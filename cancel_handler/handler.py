"""One delivery, start to finish: envelope -> event -> plan -> DLI calls -> results.

Decides acknowledge vs. retry: ``process`` returns when every job of the event has a published
result, and raises ``RetryLater`` when the event must be delivered again (transient faults on a
young event, a result that could not be published, a configuration error).

All DLI calls of one event (listing, state reads, cancels, their retries) share one deadline,
``DLI_EVENT_BUDGET_S`` after the event arrived: no attempt starts and no backoff sleeps past it,
so an event ends (acknowledged, or raised for redelivery) within the function's timeout.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn

import requests

from cancel_handler import logs
from cancel_handler.boot import register_secrets, startup
from cancel_handler.config import ConfigError, Settings, load_settings
from cancel_handler.dli.auth import AuthRefused, CredentialsUnavailable, build_auth
from cancel_handler.dli.client import (
    CallOutcome,
    DliClient,
    DliRefused,
    JobRef,
    RetryPolicy,
    TransientFailure,
    new_pool,
)
from cancel_handler.envelopes import Delivery, EnvelopeError
from cancel_handler.errors import RetryLater
from cancel_handler.events import CancelEvent, EventRules, Ignored, InvalidEvent, parse_event
from cancel_handler.plan import Plan, Verdict, build_plan
from cancel_handler.results import PrintSink, PublishError, PubSubSink, ResultEvent, ResultSink


@dataclass
class Report:
    results: list[ResultEvent] = field(default_factory=list)
    ignored: str | None = None
    invalid: bool = False
    fanned_out: int = 0


@dataclass
class Runtime:
    settings: Settings
    client: DliClient
    sink: ResultSink
    rules: EventRules
    fanout: PubSubSink | None = None


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()

__all__ = ["Report", "RetryLater", "Runtime", "build_runtime", "process", "runtime", "startup"]


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                _runtime = build_runtime(load_settings_or_raise())
    return _runtime


def load_settings_or_raise() -> Settings:
    """The settings, read again (a mounted secret may have appeared since the start);
    ``RetryLater`` naming every problem while the configuration is wrong."""
    try:
        return load_settings()
    except ConfigError as error:
        raise RetryLater(str(error)) from None


def build_runtime(settings: Settings, sink: ResultSink | None = None) -> Runtime:
    register_secrets(settings)
    session = requests.Session()  # IAM token requests only: a few per day
    session.trust_env = False  # TLS verification stays on (certifi)
    pool = new_pool(max(16, settings.cancel_concurrency * 2))
    policy = RetryPolicy(
        max_attempts=settings.dli_max_attempts,
        timeout_s=settings.dli_timeout_s,
        base_delay_s=settings.retry_base_delay_s,
        max_delay_s=settings.retry_max_delay_s,
    )
    client = DliClient(settings.dli_endpoint, build_auth(settings, session), policy, pool)
    if sink is None:
        sink = (
            _pubsub_sink(settings, settings.result_topic) if settings.result_topic else PrintSink()
        )
    fanout = None
    if settings.fanout_topic:  # shares the result publisher's channel where there is one
        base = (
            sink if isinstance(sink, PubSubSink) else _pubsub_sink(settings, settings.fanout_topic)
        )
        fanout = base.to_topic(settings.fanout_topic)
    return Runtime(settings, client, sink, EventRules.from_settings(settings), fanout)


def _pubsub_sink(settings: Settings, topic: str) -> PubSubSink:
    return PubSubSink(topic, settings.publish_timeout_s, settings.pubsub_emulator_host)


# -- one delivery ----------------------------------------------------------------------------


def process(delivery: Delivery, rt: Runtime) -> Report:
    """Handle one delivery; raises ``RetryLater`` when it must come again."""
    deadline = time.monotonic() + rt.settings.event_budget_s
    try:
        parsed = parse_event(delivery, rt.rules)
    except InvalidEvent as invalid:
        return _publish_invalid(rt, delivery, invalid.field, invalid.message, invalid)
    except Exception as error:  # a payload the validators did not foresee: still acknowledged
        logs.error(
            "event could not be read; acknowledged as invalid_event",
            event_id=delivery.event_id,
            error=logs.exception_text(error),
            stack_trace=logs.stack_trace(error),
        )
        message = f"could not be read ({type(error).__name__})"
        return _publish_invalid(rt, delivery, "event", message, None)
    if isinstance(parsed, Ignored):
        logs.info("event ignored", event_id=delivery.event_id, reason=parsed.reason)
        return Report(ignored=parsed.reason)
    return _handle_event(rt, delivery, parsed, deadline)


def reject_envelope(rt: Runtime, error: EnvelopeError) -> Report:
    """Acknowledge a malformed envelope with an ``invalid_event`` result."""
    event_id = error.event_id or "unknown"
    delivery = Delivery(b"", {}, error.topic, event_id, None, error.transport or "http")
    return _publish_invalid(rt, delivery, error.field, error.message, None)


def _publish_invalid(
    rt: Runtime, delivery: Delivery, field_name: str, message: str, invalid: InvalidEvent | None
) -> Report:
    job_ids: tuple[str, ...] = invalid.job_ids if invalid else ()
    text = message if message.startswith(field_name) else f"{field_name}: {message}"
    result = ResultEvent(
        event_type=(invalid.event_type if invalid else None) or delivery.topic,
        source_event_id=delivery.event_id,
        project_id=invalid.project_id if invalid else None,
        job_id=job_ids[0] if len(job_ids) == 1 else "",
        job_kind="sql",
        outcome="invalid_event",
        is_success=False,
        error_code="INVALID_EVENT",
        message=text,
        http_status=None,
        dli_request_id=None,
        attempts=0,
        dry_run=False,
        reason=None,
    )
    logs.warning("invalid event", event_id=delivery.event_id, field=field_name, error=text)
    _publish(rt, [result], delivery)
    return Report(results=[result], invalid=True)


def _handle_event(rt: Runtime, delivery: Delivery, event: CancelEvent, deadline: float) -> Report:
    client = rt.client.bounded(deadline)
    try:
        plan = build_plan(event, rt.settings, client)
    except TransientFailure as listing_failure:
        if _young(rt, delivery):
            logs.warning(
                "DLI unreachable while listing jobs; the event will be delivered again",
                event_id=delivery.event_id,
                error_code=listing_failure.error_code,
                attempts=listing_failure.attempts,
                error=listing_failure.message,
            )
            raise RetryLater(str(listing_failure)) from None
        plan = _failed_listing(event, listing_failure)
    except (AuthRefused, DliRefused) as refused:
        plan = _refused_listing(event, refused)
    except CredentialsUnavailable as missing:
        _deliver_again(delivery, "DLI credentials unavailable", missing)
    factory = _ResultFactory(delivery, event, plan.project_id, plan.queue_of, rt.settings.dry_run)
    results = [factory.from_verdict(v) for v in plan.verdicts]
    if _should_fan_out(rt, event, plan):
        return _fan_out(rt, delivery, event, plan, results)
    publishing = _Publishing(rt, delivery)
    publishing.add(results)
    decided: dict[JobRef, ResultEvent] = {}

    def on_outcome(job: JobRef, outcome: CallOutcome) -> None:
        decided[job] = factory.from_outcome(job, outcome)
        publishing.add([decided[job]])

    transient, missing_credentials = _cancel_all(
        client, rt.settings.cancel_concurrency, plan.targets, factory.dry_run, on_outcome
    )
    results += [decided[job] for job in plan.targets if job in decided]
    retry = bool(missing_credentials) or (bool(transient) and _young(rt, delivery))
    if transient and not retry:
        failed = [factory.from_outcome(job, f.as_outcome()) for job, f in transient]
        publishing.add(failed)
        results += failed
    publishing.finish()
    _log_results(delivery, results)
    if missing_credentials:
        _deliver_again(delivery, "DLI credentials unavailable", missing_credentials[0])
    if transient and retry:
        first_job, first_fault = transient[0]
        logs.warning(
            "transient DLI fault outlasted the retries; the event will be delivered again",
            event_id=delivery.event_id,
            job_id=first_job.job_id,
            outcome="retry",
            error_code=first_fault.error_code,
            attempts=first_fault.attempts,
            error=first_fault.message,
            jobs_to_retry=len(transient),
        )
        raise RetryLater(f"{len(transient)} job(s) hit transient faults: {first_fault}")
    return Report(results=results)


def _should_fan_out(rt: Runtime, event: CancelEvent, plan: Plan) -> bool:
    """Big budget events are shared out over FANOUT_TOPIC, so many instances cancel them;
    a message that is itself a fan-out share (it names its source event) is never split."""
    return (
        rt.fanout is not None
        and event.source_event_id is None
        and len(plan.targets) > rt.settings.fanout_threshold
    )


def _fan_out(
    rt: Runtime, delivery: Delivery, event: CancelEvent, plan: Plan, results: list[ResultEvent]
) -> Report:
    """One message per job on FANOUT_TOPIC; each comes back as a budget event of one job
    whose results carry this event's type and id. Only the plan's own verdicts are
    published here."""
    assert rt.fanout is not None
    messages = [_fan_out_message(delivery, event, job) for job in plan.targets]
    try:
        rt.fanout.publish_raw(messages)
    except PublishError as error:
        _deliver_again(delivery, "fan-out publish failed", error)
    logs.info(
        f"fanned out {len(messages)} jobs to {rt.fanout.topic}",
        event_id=delivery.event_id,
        event_type=event.event_type,
        jobs=len(messages),
    )
    _publish(rt, results, delivery)
    _log_results(delivery, results)
    return Report(results=results, fanned_out=len(messages))


def _fan_out_message(
    delivery: Delivery, event: CancelEvent, job: JobRef
) -> tuple[bytes, dict[str, str]]:
    share: dict[str, Any] = {
        "event_type": event.event_type,
        "project_id": job.project_id,
        "job_ids": [job.job_id],
        "job_kind": job.kind,
        "source_event_id": delivery.event_id,
        "dry_run": event.dry_run,
    }
    if event.reason:
        share["reason"] = event.reason
    if isinstance(event.context.get("budget"), dict):
        share["budget"] = event.context["budget"]
    return json.dumps(share, separators=(",", ":")).encode(), {"event_type": event.event_type}


def _young(rt: Runtime, delivery: Delivery) -> bool:
    """Whether the event may still be delivered again (younger than MAX_EVENT_AGE_S)."""
    return _age_s(delivery) < rt.settings.max_event_age_s


_Answer = CallOutcome | TransientFailure | CredentialsUnavailable


def _cancel_all(
    client: DliClient,
    concurrency: int,
    targets: Sequence[JobRef],
    dry_run: bool,
    on_outcome: Callable[[JobRef, CallOutcome], None],
) -> tuple[list[tuple[JobRef, TransientFailure]], list[CredentialsUnavailable]]:
    """Cancel every target, at most ``concurrency`` at a time. Each definitive outcome goes to
    ``on_outcome`` (in this thread, as soon as it is known, so its result is published while
    the other cancels run); transient failures and missing credentials are returned."""
    failed: list[tuple[JobRef, TransientFailure]] = []
    missing: list[CredentialsUnavailable] = []

    def settle(job: JobRef, answer: _Answer) -> None:
        if isinstance(answer, CallOutcome):
            on_outcome(job, answer)
        elif isinstance(answer, TransientFailure):
            failed.append((job, answer))
        else:
            missing.append(answer)

    if dry_run:
        for job in targets:
            on_outcome(job, CallOutcome("dry_run", False))
    elif len(targets) <= 1:
        for job in targets:
            settle(job, logs.carry(_try_cancel, job_id=job.job_id)(client, job))
    else:
        workers = min(concurrency, len(targets))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cancel") as pool:
            # Each worker logs with the event's labels and trace, and its job's id.
            futures = {
                pool.submit(logs.carry(_try_cancel, job_id=job.job_id), client, job): job
                for job in targets
            }
            for future in as_completed(futures):
                settle(futures[future], future.result())
    return failed, missing


class _Publishing:
    """Results are sent in batches while the cancels run (every ``batch`` results), the rest
    at ``finish``, which waits for every confirmation and turns a failure into
    ``RetryLater``. Sinks other than Pub/Sub get everything at ``finish``."""

    def __init__(self, rt: Runtime, delivery: Delivery, batch: int = 100) -> None:
        self._rt = rt
        self._delivery = delivery
        self._batch = batch
        self._waiters: list[Callable[[], None]] = []
        self._pending: list[ResultEvent] = []

    def add(self, results: list[ResultEvent]) -> None:
        self._pending.extend(results)
        if len(self._pending) >= self._batch and isinstance(self._rt.sink, PubSubSink):
            self._flush(self._rt.sink)

    def _flush(self, sink: PubSubSink) -> None:
        if self._pending:
            self._waiters.append(sink.start(self._pending))
            self._pending = []

    def finish(self) -> None:
        if not isinstance(self._rt.sink, PubSubSink):
            _publish(self._rt, self._pending, self._delivery)
            return
        self._flush(self._rt.sink)
        try:
            for wait in self._waiters:
                wait()
        except PublishError as error:
            _publish_failed(self._delivery, error)


def _try_cancel(client: DliClient, job: JobRef) -> _Answer:
    try:
        return client.cancel(job)
    except (TransientFailure, CredentialsUnavailable) as failure:
        return failure


def _publish(rt: Runtime, results: list[ResultEvent], delivery: Delivery) -> None:
    try:
        rt.sink.publish(results)
    except PublishError as error:
        _publish_failed(delivery, error)


def _publish_failed(delivery: Delivery, error: PublishError) -> NoReturn:
    _deliver_again(delivery, "result publish failed", error)


def _deliver_again(delivery: Delivery, what: str, error: Exception) -> NoReturn:
    """One ERROR line saying why, then ``RetryLater``: the platform delivers the event again."""
    logs.error(
        f"{what}; the event will be delivered again", event_id=delivery.event_id, error=str(error)
    )
    raise RetryLater(str(error)) from None


def _log_results(delivery: Delivery, results: Sequence[ResultEvent]) -> None:
    for result in results:
        severity = (
            "INFO"
            if result.outcome in ("cancelled", "already_finished", "dry_run", "nothing_to_cancel")
            else "WARNING"
        )
        logs.log(
            severity,
            f"{_subject(result)}: {result.outcome}",
            event_id=delivery.event_id,
            event_type=result.event_type,
            job_id=result.job_id,
            project_id=result.project_id,
            outcome=result.outcome,
            error_code=result.error_code,
            attempts=result.attempts,
        )


def _subject(result: ResultEvent) -> str:
    if result.job_id:
        return f"job {result.job_id}"
    if result.queue_name:
        return f"queue {result.queue_name}"
    return "event"


def _age_s(delivery: Delivery) -> float:
    if delivery.published_at is None:
        return 0.0
    return max(0.0, (datetime.now(UTC) - delivery.published_at).total_seconds())


def _failed_listing(event: CancelEvent, failure: TransientFailure) -> Plan:
    """An old event whose queues could not be listed: every queue and every explicit job of
    it gets a ``failed`` result (nothing was cancelled, and it will not be retried)."""
    message = f"listing queues {', '.join(event.queue_names)}: {failure.message}"
    verdicts = [
        Verdict("failed", failure.error_code, message, queue_name=q) for q in event.queue_names
    ]
    verdicts += [
        Verdict("failed", failure.error_code, message, job_id=j, job_kind=event.job_kind)
        for j in event.job_ids
    ]
    return Plan(project_id=event.project_id, verdicts=verdicts)


def _refused_listing(event: CancelEvent, refused: AuthRefused | DliRefused) -> Plan:
    if isinstance(refused, AuthRefused):
        code, message = refused.error_code, refused.message
    else:
        code = refused.answer.error_code or f"DLI_HTTP_{refused.answer.status}"
        message = refused.answer.error_message
    verdicts = [
        Verdict("rejected", code, f"listing queue {q}: {message}", queue_name=q)
        for q in event.queue_names
    ]
    return Plan(project_id=event.project_id, verdicts=verdicts)


class _ResultFactory:
    def __init__(
        self,
        delivery: Delivery,
        event: CancelEvent,
        project_id: str | None,
        queue_of: dict[str, str],
        dry_run_default: bool,
    ) -> None:
        self.delivery = delivery
        self.event = event
        self.project_id = project_id
        self.queue_of = queue_of
        self.dry_run = event.dry_run or dry_run_default

    def _common(self) -> dict[str, Any]:
        return {
            "event_type": self.event.event_type,
            "source_event_id": self.event.source_event_id or self.delivery.event_id,
            "project_id": self.project_id,
            "dry_run": self.dry_run,
            "reason": self.event.reason,
            "context": self.event.context,
        }

    def from_verdict(self, verdict: Verdict) -> ResultEvent:
        return ResultEvent(
            job_id=verdict.job_id,
            job_kind=verdict.job_kind,
            outcome=verdict.outcome,
            is_success=False,
            error_code=verdict.error_code,
            message=verdict.message,
            http_status=None,
            dli_request_id=None,
            attempts=0,
            queue_name=verdict.queue_name,
            **self._common(),
        )

    def from_outcome(self, job: JobRef, outcome: CallOutcome) -> ResultEvent:
        message = outcome.message
        if outcome.outcome == "dry_run":
            message = "dry run: the cancel API was not called"
        return ResultEvent(
            job_id=job.job_id,
            job_kind=job.kind,
            outcome=outcome.outcome,
            is_success=outcome.is_success,
            error_code=outcome.error_code,
            message=message,
            http_status=outcome.http_status,
            dli_request_id=outcome.request_id,
            attempts=outcome.attempts,
            queue_name=self.queue_of.get(job.job_id),
            **self._common(),
        )
