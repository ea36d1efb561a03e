"""The watchdog's sweep in process (SPEC 7): ``handler.process`` with a scripted DLI
(``FakeDli.active``) and in-memory sinks. The same rules run through the real servers in
tests/e2e/test_sweep.py."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from cancel_handler import handler
from cancel_handler.errors import RetryLater
from cancel_handler.limits import ListedJob
from tests.unit.fakes import (
    OTHER_PROJECT_ID,
    PROJECT_ID,
    Unit,
    delivery,
    job_id,
    refused,
    transient,
)

SWEEP = {"event_type": "job-timeout", "sweep": True}
LIMITS = '{"etl": {"sql": 3600, "spark": 7200}, "adhoc": {}, "*": {"sql": 600}}'
OLD_S = 2 * 3600.0
FLINK_IDS = itertools.count(5001)


def listed(
    kind: str = "sql", queue: str = "etl", ran_s: float = 0, tags: dict[str, str] | None = None
) -> ListedJob:
    """A job as a listing reports it, with DLI's duration of ``ran_s`` seconds (exact, whatever
    the clock does while the test runs)."""
    ident = job_id() if kind != "flink" else str(next(FLINK_IDS))
    return ListedJob(ident, kind, queue, ran_s * 1000, None, tuple((tags or {}).items()))


def unit_with(limits: str = LIMITS, **env: str) -> Unit:
    return Unit({"RUNTIME_LIMITS": limits, "FANOUT_TOPIC": "", **env})


def summaries(out: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("message") == "sweep summary"]


def test_only_jobs_past_their_queue_limit_are_cancelled() -> None:
    unit = unit_with()
    long, young = listed(ran_s=3700), listed(ran_s=60)
    long_spark, young_spark = listed("spark", ran_s=7300), listed("spark", ran_s=7000)
    unit.dli.active[("sql", "etl")] = [long, young]
    unit.dli.active[("spark", "etl")] = [long_spark, young_spark]

    report = handler.process(delivery(SWEEP, event_id="sweep-1"), unit.runtime)

    assert sorted(unit.dli.called("cancel")) == sorted([long.job_id, long_spark.job_id])
    by_job = unit.by_job()
    assert set(by_job) == {long.job_id, long_spark.job_id}
    sql = by_job[long.job_id]
    assert sql["outcome"] == "cancelled" and sql["job_kind"] == "sql"
    assert sql["reason"] == "ran 3700 s, limit 3600 s"
    assert sql["context"] == {"runtime_s": 3700, "limit_s": 3600, "queue_name": "etl"}
    assert sql["queue_name"] == "etl"
    assert sql["event_type"] == "job-timeout" and sql["source_event_id"] == "sweep-1"
    spark = by_job[long_spark.job_id]
    assert (spark["job_kind"], spark["reason"]) == ("spark", "ran 7300 s, limit 7200 s")
    assert [r["job_id"] for r in map(lambda r: r.to_dict(), report.results)] == [
        r["job_id"] for r in unit.published
    ]


def test_the_listings_a_policy_needs() -> None:
    unit = unit_with()

    handler.process(delivery(SWEEP), unit.runtime)

    # etl's two kinds; adhoc has no kind; "*" lists SQL over every queue
    assert sorted(unit.dli.called("list_active")) == ["spark:etl", "sql:*", "sql:etl"]


def test_the_star_rule_covers_only_queues_the_policy_does_not_name() -> None:
    unit = unit_with()
    other = listed(queue="reporting", ran_s=700)
    named = listed(queue="etl", ran_s=700)  # within etl's own 3600
    exempted = listed(queue="adhoc", ran_s=70_000)  # named without limits
    unit.dli.active[("sql", None)] = [other, named, exempted]

    handler.process(delivery(SWEEP), unit.runtime)

    assert unit.dli.called("cancel") == [other.job_id]
    [result] = unit.published
    assert result["context"] == {"runtime_s": 700, "limit_s": 600, "queue_name": "reporting"}


def test_each_kind() -> None:
    unit = unit_with('{"q": {"sql": 60, "spark": 60, "flink": 60}}')
    jobs = {kind: listed(kind, "q", ran_s=120) for kind in ("sql", "spark", "flink")}
    for kind, job in jobs.items():
        unit.dli.active[(kind, "q")] = [job, listed(kind, "q", ran_s=30)]

    handler.process(delivery(SWEEP), unit.runtime)

    assert {(r["job_kind"], r["job_id"]) for r in unit.published} == {
        (kind, job.job_id) for kind, job in jobs.items()
    }


def test_tags_exempt_and_override() -> None:
    unit = unit_with()
    exempt = listed(ran_s=100_000, tags={"dli-cancel": "exempt"})
    strict = listed(ran_s=120, tags={"dli-cancel-max-runtime-s": "60"})
    lenient = listed(ran_s=5000, tags={"dli-cancel-max-runtime-s": "86400"})
    unit.dli.active[("sql", "etl")] = [exempt, strict, lenient]

    handler.process(delivery(SWEEP), unit.runtime)

    [result] = unit.published
    assert result["job_id"] == strict.job_id
    assert result["reason"] == "ran 120 s, limit 60 s"


def test_nothing_over_the_limit_publishes_nothing_and_logs_one_summary(
    capsys: pytest.CaptureFixture[str],
) -> None:
    unit = unit_with()
    unit.dli.active[("sql", "etl")] = [listed(ran_s=60), listed(ran_s=120)]
    unit.dli.active[("sql", None)] = [listed(queue="reporting", ran_s=10)]

    report = handler.process(delivery(SWEEP, event_id="quiet-1"), unit.runtime)

    assert report.results == [] and unit.published == []
    assert unit.dli.called("cancel") == []
    [summary] = summaries(capsys.readouterr().out)
    assert summary["queues"] == ["etl", "*"]
    assert (summary["jobs_seen"], summary["over_limit"]) == (3, 0)
    assert summary["event_id"] == "quiet-1"


def test_a_malformed_tag_and_an_unknown_runtime_are_logged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    unit = unit_with()
    odd = listed(ran_s=4000, tags={"dli-cancel-max-runtime-s": "1h"})
    unknown = ListedJob(job_id(), "sql", "etl")
    unit.dli.active[("sql", "etl")] = [odd, unknown]

    handler.process(delivery(SWEEP), unit.runtime)

    assert unit.dli.called("cancel") == [odd.job_id]  # the queue's limit applies
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    warnings = [line["message"] for line in lines if line["severity"] == "WARNING"]
    assert any(odd.job_id in w and "dli-cancel-max-runtime-s='1h'" in w for w in warnings)
    assert any(unknown.job_id in w and "runtime is unknown" in w for w in warnings)


@pytest.mark.parametrize(
    ("env", "body"),
    [({}, {"dry_run": True}), ({"DRY_RUN": "true"}, {})],
    ids=["event", "setting"],
)
def test_dry_run_reports_what_would_be_cancelled(
    env: dict[str, str], body: dict[str, object]
) -> None:
    unit = unit_with(**env)
    long = listed(ran_s=4000)
    unit.dli.active[("sql", "etl")] = [long, listed(ran_s=10)]

    handler.process(delivery({**SWEEP, **body}), unit.runtime)

    assert unit.dli.called("cancel") == []
    [result] = unit.published
    assert (result["job_id"], result["outcome"], result["dry_run"]) == (
        long.job_id,
        "dry_run",
        True,
    )
    assert result["reason"] == "ran 4000 s, limit 3600 s"
    assert result["context"]["limit_s"] == 3600


def test_a_project_outside_the_allow_list_is_one_result_and_no_dli_call() -> None:
    unit = unit_with()

    handler.process(
        delivery({**SWEEP, "project_id": OTHER_PROJECT_ID, "queue_names": ["etl", "x1"]}),
        unit.runtime,
    )

    [result] = unit.published
    assert (result["outcome"], result["job_id"]) == ("not_allowed", "")
    assert result["error_code"] == "PROJECT_NOT_ALLOWED"
    assert unit.dli.calls == []


def test_an_invalid_sweep_is_one_result_and_no_dli_call() -> None:
    unit = unit_with()

    handler.process(delivery({**SWEEP, "queue_names": ["bad-name"]}), unit.runtime)

    [result] = unit.published
    assert (result["outcome"], result["job_id"]) == ("invalid_event", "")
    assert "queue_names[0]" in result["message"]
    assert unit.dli.calls == []


def test_a_sweep_restricted_to_some_queues() -> None:
    unit = unit_with()
    unit.dli.active[("sql", "etl")] = [listed(ran_s=4000)]
    unit.dli.active[("sql", "reporting")] = [other := listed(queue="reporting", ran_s=700)]

    handler.process(delivery({**SWEEP, "queue_names": ["reporting", "adhoc"]}), unit.runtime)

    # reporting falls under "*" (sql 600); adhoc has no limit: not listed; etl not asked for
    assert unit.dli.called("list_active") == ["sql:reporting"]
    assert unit.dli.called("cancel") == [other.job_id]


def test_a_young_sweep_cancels_what_it_could_list_then_comes_again() -> None:
    unit = unit_with()
    long = listed(ran_s=4000)
    unit.dli.active[("sql", "etl")] = [long]
    unit.dli.active[("spark", "etl")] = transient()

    with pytest.raises(RetryLater):
        handler.process(delivery(SWEEP), unit.runtime)

    assert unit.dli.called("cancel") == [long.job_id]
    assert [(r["job_id"], r["outcome"]) for r in unit.published] == [(long.job_id, "cancelled")]


def test_a_young_sweep_that_could_list_nothing_comes_again_without_results() -> None:
    unit = unit_with()
    for key in (("sql", "etl"), ("spark", "etl"), ("sql", None)):
        unit.dli.active[key] = transient()

    with pytest.raises(RetryLater):
        handler.process(delivery(SWEEP), unit.runtime)

    assert unit.published == [] and unit.dli.called("cancel") == []


def test_an_old_sweep_publishes_failed_for_what_it_could_not_list() -> None:
    unit = unit_with()
    long = listed(ran_s=4000)
    unit.dli.active[("sql", "etl")] = [long]
    unit.dli.active[("spark", "etl")] = transient()

    handler.process(delivery(SWEEP, age_s=OLD_S), unit.runtime)

    by_outcome = {r["outcome"]: r for r in unit.published}
    assert set(by_outcome) == {"failed", "cancelled"}
    failed = by_outcome["failed"]
    assert (failed["job_id"], failed["job_kind"], failed["queue_name"]) == ("", "spark", "etl")
    assert failed["error_code"] == "DLI_HTTP_503"
    assert failed["message"].startswith("listing spark jobs on queue etl: ")
    assert by_outcome["cancelled"]["job_id"] == long.job_id


def test_a_refused_listing_is_a_result_for_that_queue() -> None:
    unit = unit_with()
    long = listed(ran_s=4000)
    unit.dli.active[("sql", "etl")] = [long]
    unit.dli.active[("sql", None)] = refused("DLI.0003", 403)

    handler.process(delivery(SWEEP), unit.runtime)

    by_outcome = {r["outcome"]: r for r in unit.published}
    assert by_outcome["cancelled"]["job_id"] == long.job_id
    rejected = by_outcome["rejected"]
    assert (rejected["job_id"], rejected["error_code"]) == ("", "DLI.0003")
    assert "queue_name" not in rejected  # the "*" listing: every queue the policy does not name
    assert "every queue the policy does not name" in rejected["message"]


def test_more_jobs_over_the_limit_than_an_event_may_cancel_longest_first(
    capsys: pytest.CaptureFixture[str],
) -> None:
    unit = unit_with(MAX_JOBS_PER_EVENT="2")
    jobs = [listed(ran_s=s) for s in (4000, 9000, 5000, 8000)]
    unit.dli.active[("sql", "etl")] = jobs

    handler.process(delivery(SWEEP), unit.runtime)

    assert sorted(unit.dli.called("cancel")) == sorted([jobs[1].job_id, jobs[3].job_id])
    assert "more than MAX_JOBS_PER_EVENT=2" in capsys.readouterr().out


def test_a_big_sweep_fans_out_job_timeouts_that_keep_their_reason() -> None:
    unit = Unit({"RUNTIME_LIMITS": LIMITS, "FANOUT_THRESHOLD": "2"})
    jobs = [listed(ran_s=4000 + n) for n in range(3)]
    unit.dli.active[("sql", "etl")] = jobs

    report = handler.process(delivery(SWEEP, event_id="big-sweep"), unit.runtime)

    assert report.fanned_out == 3 and unit.dli.called("cancel") == []
    shares = [json.loads(m.data) for m in unit.fanout.messages]
    first = next(s for s in shares if s["job_id"] == jobs[0].job_id)
    assert first == {
        "event_type": "job-timeout",
        "project_id": PROJECT_ID,
        "job_kind": "sql",
        "source_event_id": "big-sweep",
        "dry_run": False,
        "job_id": jobs[0].job_id,
        "reason": "ran 4000 s, limit 3600 s",
        "context": {"runtime_s": 4000, "limit_s": 3600, "queue_name": "etl"},
    }

    handler.process(delivery(first, topic=None), unit.runtime)  # the share comes back

    [result] = unit.published
    assert (result["job_id"], result["outcome"]) == (jobs[0].job_id, "cancelled")
    assert result["source_event_id"] == "big-sweep"
    assert result["reason"] == "ran 4000 s, limit 3600 s"
    assert result["context"] == first["context"]


def test_without_runtime_limits_a_sweep_lists_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    unit = Unit({"FANOUT_TOPIC": ""})

    handler.process(delivery(SWEEP), unit.runtime)

    assert unit.dli.calls == [] and unit.published == []
    out = capsys.readouterr().out
    assert "RUNTIME_LIMITS sets no limit" in out
    [summary] = summaries(out)
    assert (summary["queues"], summary["jobs_seen"], summary["over_limit"]) == ([], 0, 0)
