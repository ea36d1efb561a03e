"""The simulator's seeds: jobs of a given age, from ``--seed`` texts and admin bodies."""

from __future__ import annotations

import pytest

from dli_simulator.model import Seed, SeedError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sql:etl:7200", Seed("sql", "etl", 7200.0)),
        ("sql:etl:2h", Seed("sql", "etl", 7200.0)),
        ("spark:batch:90m:3", Seed("spark", "batch", 5400.0, 3)),
        ("flink:stream:1.5d", Seed("flink", "stream", 129600.0)),
        (
            "sql:etl:30s:1:dli-cancel=exempt",
            Seed("sql", "etl", 30.0, 1, (("dli-cancel", "exempt"),)),
        ),
        (
            "sql:etl:3h:2:dli-cancel-max-runtime-s=60,team=bi",
            Seed("sql", "etl", 10800.0, 2, (("dli-cancel-max-runtime-s", "60"), ("team", "bi"))),
        ),
    ],
)
def test_seed_texts(text: str, expected: Seed) -> None:
    assert Seed.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sql:etl", "expected KIND:QUEUE:AGE"),
        ("hive:etl:1h", "unknown kind 'hive'"),
        ("sql:etl:soon", "AGE must be seconds"),
        ("sql:etl:1h:many", "COUNT must be a whole number"),
        ("sql:etl:1h:0", "count must be between 1 and 100000"),
        ("sql::1h", "a seed needs a queue name"),
        ("spark:etl:1h:1:a=b", "tags are for SQL jobs"),
        ("sql:etl:1h:1:novalue", "TAGS must be k=v"),
        ("sql:etl:-5", "age must be between 0 and 10 years"),
    ],
)
def test_bad_seed_texts(text: str, message: str) -> None:
    with pytest.raises(SeedError, match=message):
        Seed.parse(text)


def test_seed_from_an_admin_body() -> None:
    body = {"kind": "flink", "queue_name": "q", "count": 2, "age_s": 60, "status": "job_idle"}
    seed = Seed.from_json(body)
    assert seed == Seed("flink", "q", 60.0, 2, (), "job_idle")
    assert seed.job_status == "job_idle"
    assert Seed.from_json({}).job_status == "RUNNING"
    with pytest.raises(SeedError, match="tags must be an object"):
        Seed.from_json({"tags": ["a"]})
