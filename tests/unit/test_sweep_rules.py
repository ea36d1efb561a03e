"""The watchdog's policy (SPEC 7): RUNTIME_LIMITS, runtime arithmetic, tags, the decision."""

from __future__ import annotations

import json

import pytest

from cancel_handler.limits import (
    EARLIEST_START_MS,
    LimitsError,
    ListedJob,
    RuntimeLimits,
    over_limit,
    parse_runtime_limits,
    runtime_seconds,
    tag_pairs,
    tag_rule,
)

NOW_MS = 1_795_000_000_000  # 2026-11-18, a millisecond epoch like DLI's
HOUR_MS = 3_600_000


def started_ago(ms: int) -> int:
    return NOW_MS - ms


def problems_of(raw: str) -> list[str]:
    with pytest.raises(LimitsError) as caught:
        parse_runtime_limits(raw)
    return caught.value.problems


# -- RUNTIME_LIMITS ------------------------------------------------------------------------


def test_named_queues_and_the_star_rule() -> None:
    limits = parse_runtime_limits('{"etl": {"sql": 3600, "spark": 7200}, "*": {"sql": 14400}}')
    assert limits.limit_for("etl", "sql") == 3600
    assert limits.limit_for("etl", "spark") == 7200
    # a named queue has exactly the kinds it lists: "*" does not fill in etl's flink
    assert limits.limit_for("etl", "flink") is None
    # "*" covers the queues not named, and only its kinds
    assert limits.limit_for("adhoc", "sql") == 14400
    assert limits.limit_for("adhoc", "spark") is None
    assert limits.limited_queues == ("etl",)
    assert limits.kinds_for("etl") == ("sql", "spark")
    assert limits.kinds_for("adhoc") == ("sql",)


def test_a_queue_named_with_no_kinds_is_kept_out_of_the_star_rule() -> None:
    limits = parse_runtime_limits('{"adhoc": {}, "*": {"sql": 60}}')
    assert limits.limit_for("adhoc", "sql") is None
    assert limits.limit_for("other", "sql") == 60
    assert limits.limited_queues == ()
    assert limits.named_queues == frozenset({"adhoc"})


def test_queue_names_ignore_case() -> None:
    limits = parse_runtime_limits('{"ETL_Daily": {"flink": 600}}')
    assert limits.limit_for("etl_daily", "flink") == 600
    assert limits.limit_for("ETL_DAILY", "flink") == 600
    assert limits.limited_queues == ("etl_daily",)


@pytest.mark.parametrize("raw", [None, "", "   ", "{}"])
def test_no_policy_sweeps_nothing(raw: str | None) -> None:
    limits = parse_runtime_limits(raw)
    assert not limits
    assert limits.limit_for("etl", "sql") is None
    assert limits.limited_queues == ()


def test_whole_seconds_written_as_floats_are_accepted() -> None:
    assert parse_runtime_limits('{"etl": {"sql": 3600.0}}').limit_for("etl", "sql") == 3600


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"etl": {"hive": 60}}', "RUNTIME_LIMITS['etl']['hive']: unknown job kind"),
        ('{"etl": {"SQL": 60}}', "RUNTIME_LIMITS['etl']['SQL']: unknown job kind"),
        ('{"etl": {"sql": 0}}', "must be a positive number of seconds, got 0"),
        ('{"etl": {"sql": -5}}', "must be a positive number of seconds, got -5"),
        ('{"etl": {"sql": NaN}}', "must be a finite number of seconds, got nan"),
        ('{"etl": {"sql": Infinity}}', "must be a finite number of seconds, got inf"),
        ('{"etl": {"sql": 1e400}}', "must be a finite number of seconds, got inf"),
        ('{"etl": {"sql": 90.5}}', "must be a whole number of seconds, got 90.5"),
        ('{"etl": {"sql": "3600"}}', "must be a number of seconds, got a string"),
        ('{"etl": {"sql": true}}', "must be a number of seconds, got a boolean"),
        ('{"etl": {"sql": null}}', "must be a number of seconds, got null"),
        ('{"etl": 3600}', "RUNTIME_LIMITS['etl'] must be an object of job kind -> seconds"),
        ('{"etl": [3600]}', "got an array"),
        ('{"_etl": {"sql": 60}}', "'_etl', which is not a DLI queue name"),
        ('{"123": {"sql": 60}}', "'123', which is not a DLI queue name"),
        ('{"etl-daily": {"sql": 60}}', "'etl-daily', which is not a DLI queue name"),
        ('{"": {"sql": 60}}', "'', which is not a DLI queue name"),
        ('{"etl": {"sql": 60}, "ETL": {"sql": 90}}', "RUNTIME_LIMITS['ETL'] appears more than"),
        ('{"*": {}, "*": {"sql": 90}}', "RUNTIME_LIMITS['*'] appears more than once"),
        ('{"etl": {"sql": 60, "sql": 90}}', "RUNTIME_LIMITS['etl']['sql'] appears more than"),
        ('{"etl": {"sql": 60}', "RUNTIME_LIMITS is not valid JSON"),
        ("etl=3600", "RUNTIME_LIMITS is not valid JSON"),
        ('[{"etl": {"sql": 60}}]', "RUNTIME_LIMITS must be a JSON object of queue name"),
        ("3600", "RUNTIME_LIMITS must be a JSON object of queue name"),
    ],
)
def test_bad_policies_are_refused_with_a_clear_problem(raw: str, expected: str) -> None:
    problems = problems_of(raw)
    assert len(problems) == 1, problems
    assert expected in problems[0]


def test_every_problem_is_named_at_once() -> None:
    problems = problems_of('{"etl": {"hive": 60, "sql": -1}, "bad-name": {}, "*": {"flink": 0}}')
    assert len(problems) == 4
    assert any("'hive'" in p for p in problems)
    assert any("['sql'] must be a positive" in p for p in problems)
    assert any("'bad-name'" in p for p in problems)
    assert any("['*']['flink'] must be a positive" in p for p in problems)


def test_a_long_bad_name_is_cut_short_in_the_problem() -> None:
    problems = problems_of(json.dumps({"x-" * 500: {"sql": 60}}))
    assert len(problems[0]) < 250


# -- runtime arithmetic --------------------------------------------------------------------


def test_duration_is_milliseconds_rounded_down_to_whole_seconds() -> None:
    assert runtime_seconds(3_700_999, None, NOW_MS) == 3700
    assert runtime_seconds(999, None, NOW_MS) == 0
    assert runtime_seconds(3_700_000.0, None, NOW_MS) == 3700


def test_duration_wins_over_the_start_when_reported() -> None:
    assert runtime_seconds(60_000, started_ago(2 * HOUR_MS), NOW_MS) == 60


def test_without_a_duration_runtime_is_now_minus_start() -> None:
    assert runtime_seconds(None, started_ago(HOUR_MS + 1_500), NOW_MS) == 3601


@pytest.mark.parametrize("duration", [0, -5, None, "", "n/a", True, float("nan"), [], {}])
def test_a_zero_or_unusable_duration_falls_back_to_the_start(duration: object) -> None:
    # DLI reports duration 0 for some running jobs: that must not read as "just started"
    assert runtime_seconds(duration, started_ago(2 * HOUR_MS), NOW_MS) == 7200


def test_numbers_sent_as_strings_of_digits_are_read() -> None:
    assert runtime_seconds("7200000", None, NOW_MS) == 7200
    assert runtime_seconds(None, str(started_ago(90_000)), NOW_MS) == 90


def test_a_start_in_the_future_is_a_runtime_of_zero() -> None:
    # the clock of DLI is ahead of ours: never a negative runtime
    assert runtime_seconds(None, NOW_MS + 30_000, NOW_MS) == 0
    assert runtime_seconds(None, NOW_MS + 10 * HOUR_MS, NOW_MS) == 0


@pytest.mark.parametrize(
    "start",
    [
        None,
        "",
        "yesterday",
        True,
        float("inf"),
        0,  # a placeholder
        1_795_000_000,  # seconds, not milliseconds: not read as 1970 (56 years of runtime)
        EARLIEST_START_MS - 1,
        -1,
    ],
)
def test_an_unknown_start_is_an_unknown_runtime(start: object) -> None:
    assert runtime_seconds(None, start, NOW_MS) is None


def test_the_earliest_plausible_start_is_read() -> None:
    assert runtime_seconds(None, EARLIEST_START_MS, EARLIEST_START_MS + 5_000) == 5


# -- tags ----------------------------------------------------------------------------------


def test_exempt_tag() -> None:
    assert tag_rule([("dli-cancel", "exempt")]).exempt
    assert tag_rule([("dli-cancel", " Exempt ")]).exempt
    assert not tag_rule([("dli-cancel", "maybe")]).exempt
    assert not tag_rule([("DLI-CANCEL", "exempt")]).exempt  # keys are compared exactly
    assert not tag_rule([("team", "exempt")]).exempt


def test_exempt_wins_over_a_max_runtime() -> None:
    rule = tag_rule([("dli-cancel-max-runtime-s", "60"), ("dli-cancel", "exempt")])
    assert rule.exempt
    assert rule.max_runtime_s is None


def test_max_runtime_tag() -> None:
    assert tag_rule([("dli-cancel-max-runtime-s", "900")]).max_runtime_s == 900
    assert tag_rule([("dli-cancel-max-runtime-s", " 900 ")]).max_runtime_s == 900


@pytest.mark.parametrize("value", ["", "0", "-60", "1.5", "1e3", "ten", "9" * 13, "\uff16\uff10"])
def test_a_malformed_max_runtime_is_ignored_with_a_note(value: str) -> None:
    rule = tag_rule([("dli-cancel-max-runtime-s", value)])
    assert rule.max_runtime_s is None
    assert not rule.exempt
    assert rule.note is not None
    assert "dli-cancel-max-runtime-s" in rule.note
    assert "queue's limit applies" in rule.note


def test_the_first_tag_of_a_key_counts() -> None:
    rule = tag_rule([("dli-cancel-max-runtime-s", "60"), ("dli-cancel-max-runtime-s", "9")])
    assert rule.max_runtime_s == 60


def test_tag_pairs_from_dli_listings() -> None:
    raw = [
        {"key": "dli-cancel", "value": "exempt"},
        {"key": "owner"},
        {"value": "orphan"},
        "junk",
        {"key": 5, "value": "x"},
    ]
    assert tag_pairs(raw) == (("dli-cancel", "exempt"), ("owner", ""))
    assert tag_pairs(None) == ()
    assert tag_pairs({"key": "dli-cancel", "value": "exempt"}) == ()


# -- the decision --------------------------------------------------------------------------

POLICY = parse_runtime_limits(
    '{"etl": {"sql": 3600, "spark": 7200}, "adhoc": {}, "*": {"sql": 600, "flink": 86400}}'
)


def job(
    job_id: str,
    *,
    kind: str = "sql",
    queue: str = "etl",
    ran_ms: int | None = None,
    duration_ms: object = None,
    tags: tuple[tuple[str, str], ...] = (),
) -> ListedJob:
    start = started_ago(ran_ms) if ran_ms is not None else None
    return ListedJob(job_id, kind, queue, duration_ms=duration_ms, start_ms=start, tags=tags)


def decided(*jobs: ListedJob, limits: RuntimeLimits = POLICY) -> dict[str, tuple[int, int]]:
    decision = over_limit(jobs, limits, NOW_MS)
    return {o.job.job_id: (o.runtime_s, o.limit_s) for o in decision.over_limit}


def test_only_jobs_past_their_queue_limit_are_over() -> None:
    assert decided(
        job("long", ran_ms=3_700_000),
        job("young", ran_ms=60_000),
        job("exactly", ran_ms=3_600_999),  # 3600 whole seconds: not past a limit of 3600
        job("just-past", ran_ms=3_601_000),
    ) == {"long": (3700, 3600), "just-past": (3601, 3600)}


def test_reason_and_context() -> None:
    decision = over_limit([job("long", duration_ms=3_700_400)], POLICY, NOW_MS)
    (over,) = decision.over_limit
    assert over.reason == "ran 3700 s, limit 3600 s"
    assert over.context == {"runtime_s": 3700, "limit_s": 3600, "queue_name": "etl"}


def test_each_kind_has_its_own_limit() -> None:
    ran = 90 * 60_000  # 5400 s: past etl's sql limit (3600), within its spark limit (7200)
    assert decided(
        job("sql", ran_ms=ran),
        job("spark", kind="spark", ran_ms=ran),
        job("flink", kind="flink", ran_ms=100 * ran),  # etl lists no flink limit: never swept
        job("spark-long", kind="spark", ran_ms=3 * HOUR_MS),
    ) == {"sql": (5400, 3600), "spark-long": (10800, 7200)}


def test_the_star_rule_covers_only_queues_not_named() -> None:
    ran = 2 * HOUR_MS
    assert decided(
        job("other-sql", queue="reporting", ran_ms=ran),  # "*": 600
        job("other-spark", queue="reporting", kind="spark", ran_ms=ran),  # "*" has no spark
        job("other-flink", queue="streams", kind="flink", ran_ms=ran),  # "*": 86400
        job("adhoc-sql", queue="adhoc", ran_ms=10 * ran),  # named with no kinds
        job("etl-sql", queue="etl", ran_ms=ran),  # etl's own 3600, not "*"'s 600
    ) == {"other-sql": (7200, 600), "etl-sql": (7200, 3600)}


def test_queue_of_a_listed_job_is_matched_without_case() -> None:
    assert decided(job("j", queue="ETL", ran_ms=2 * HOUR_MS)) == {"j": (7200, 3600)}


def test_exempt_jobs_are_never_over() -> None:
    exempt = job("exempt", ran_ms=100 * HOUR_MS, tags=(("dli-cancel", "exempt"),))
    decision = over_limit([exempt, job("plain", ran_ms=2 * HOUR_MS)], POLICY, NOW_MS)
    assert [o.job.job_id for o in decision.over_limit] == ["plain"]
    assert decision.exempt == ("exempt",)
    assert decision.jobs_seen == 2


def test_max_runtime_tag_lowers_or_raises_the_limit() -> None:
    ran = 2 * HOUR_MS
    lowered = (("dli-cancel-max-runtime-s", "900"),)
    raised = (("dli-cancel-max-runtime-s", "36000"),)
    assert decided(
        job("lowered", ran_ms=ran, tags=lowered),
        job("raised", ran_ms=ran, tags=raised),
        job("short-but-lowered", ran_ms=600_000, tags=lowered),
    ) == {"lowered": (7200, 900)}


def test_max_runtime_tag_does_not_make_an_unlimited_queue_swept() -> None:
    tags = (("dli-cancel-max-runtime-s", "1"),)
    assert decided(job("j", queue="adhoc", ran_ms=HOUR_MS, tags=tags)) == {}
    assert decided(job("f", kind="flink", queue="etl", ran_ms=HOUR_MS, tags=tags)) == {}


def test_a_malformed_max_runtime_tag_falls_back_to_the_queue_limit_with_a_note() -> None:
    bad = job("bad", ran_ms=2 * HOUR_MS, tags=(("dli-cancel-max-runtime-s", "soon"),))
    decision = over_limit([bad], POLICY, NOW_MS)
    assert [(o.job.job_id, o.limit_s) for o in decision.over_limit] == [("bad", 3600)]
    (note,) = decision.notes
    assert note.startswith("sql job bad: tag dli-cancel-max-runtime-s='soon'")


def test_a_job_whose_runtime_is_unknown_is_not_cancelled_and_noted() -> None:
    decision = over_limit([job("mystery")], POLICY, NOW_MS)
    assert decision.over_limit == ()
    assert decision.jobs_seen == 1
    (note,) = decision.notes
    assert "sql job mystery on queue etl" in note
    assert "runtime is unknown" in note


def test_a_job_started_in_the_future_is_within_any_limit() -> None:
    skewed = ListedJob("skewed", "sql", "etl", start_ms=NOW_MS + HOUR_MS)
    assert over_limit([skewed], POLICY, NOW_MS).over_limit == ()


def test_a_job_listed_twice_is_decided_once() -> None:
    # the same job seen in two state listings (LAUNCHING, then RUNNING)
    twice = [job("j", ran_ms=2 * HOUR_MS), job("j", ran_ms=2 * HOUR_MS)]
    decision = over_limit(twice, POLICY, NOW_MS)
    assert len(decision.over_limit) == 1
    assert decision.jobs_seen == 1


def test_same_id_in_two_kinds_are_two_jobs() -> None:
    both = [job("1", ran_ms=2 * HOUR_MS), job("1", kind="spark", ran_ms=3 * HOUR_MS)]
    assert len(over_limit(both, POLICY, NOW_MS).over_limit) == 2


def test_nothing_over_the_limit_decides_nothing() -> None:
    decision = over_limit([job("a", ran_ms=60_000), job("b", ran_ms=1_000)], POLICY, NOW_MS)
    assert decision.over_limit == ()
    assert decision.jobs_seen == 2
    assert decision.notes == ()


def test_no_policy_decides_nothing() -> None:
    assert decided(job("a", ran_ms=1000 * HOUR_MS), limits=RuntimeLimits()) == {}


def test_the_policy_knows_the_same_job_kinds_as_the_dli_client() -> None:
    from cancel_handler.dli.types import JOB_KINDS
    from cancel_handler.limits import KINDS

    assert KINDS == JOB_KINDS  # limits.py sits below dli/ and cannot import them
