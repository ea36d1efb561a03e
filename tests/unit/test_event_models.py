"""The event models validate exactly as the equivalent ``pydantic.BaseModel`` definitions did
(strict, unknown keys ignored, finite numbers, camelCase aliases): the same values, the same
first error. They are written as pydantic-core schemas (``events.common.Model``) to keep
pydantic's model layer off the cold start; this holds them to the models they replaced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from cancel_handler.dli.types import JobKind
from cancel_handler.events import common
from cancel_handler.events.budget import BudgetNotification
from cancel_handler.events.incident import IncidentNotification
from cancel_handler.events.ours import OurEvent
from cancel_handler.events.sweep import SweepEvent

STRICT = ConfigDict(strict=True, extra="ignore", frozen=True, allow_inf_nan=False)


class PydanticOurEvent(BaseModel):
    model_config = STRICT

    event_type: str | None = None
    project_id: str | None = None
    job_id: Any = None
    job_ids: list[Any] | None = None
    job_kind: JobKind | None = None
    queue_names: list[Any] | None = None
    reason: str | None = None
    dry_run: bool | None = None
    budget: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    source_event_id: str | None = None


class PydanticSweepEvent(BaseModel):
    model_config = STRICT

    event_type: str | None = None
    sweep: bool
    project_id: str | None = None
    queue_names: list[Any] | None = None
    dry_run: bool | None = None


class PydanticBudgetNotification(BaseModel):
    model_config = ConfigDict(**STRICT, alias_generator=to_camel)

    budget_display_name: str | None = None
    cost_amount: float
    budget_amount: float
    alert_threshold_exceeded: float | None = None
    forecast_threshold_exceeded: float | None = None
    cost_interval_start: str | None = None
    budget_amount_type: str | None = None
    currency_code: str | None = None


class PydanticLabelled(BaseModel):
    model_config = STRICT

    labels: dict[str, Any] | None = None


class PydanticIncident(BaseModel):
    model_config = STRICT

    incident_id: str | None = None
    state: str
    summary: str | None = None
    policy_name: str | None = None
    url: str | None = None
    metric: PydanticLabelled | None = None
    resource: PydanticLabelled | None = None
    policy_user_labels: dict[str, Any] | None = None


class PydanticIncidentNotification(BaseModel):
    model_config = STRICT

    version: str
    incident: PydanticIncident


PAIRS: list[tuple[type[common.Model], type[BaseModel]]] = [
    (OurEvent, PydanticOurEvent),
    (SweepEvent, PydanticSweepEvent),
    (BudgetNotification, PydanticBudgetNotification),
    (IncidentNotification, PydanticIncidentNotification),
]
TESTS = Path(__file__).resolve().parents[1]


def outcome(model: type[Any], payload: Any) -> Any:
    """The validated fields (nested models as dicts), or the first error without its text."""
    try:
        if issubclass(model, BaseModel):
            return ("ok", model.model_validate(payload).model_dump())
        return ("ok", as_dict(model.validator().validate_python(payload)))
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        return ("error", first["type"], first["loc"], repr(first.get("input")))


def as_dict(value: Any) -> Any:
    if isinstance(value, common.Model):
        return {name: as_dict(getattr(value, name)) for name in type(value).FIELDS}
    return value


def corpus_payloads() -> list[Any]:
    """Every event body the tests hold: fixtures and hostile inputs, decoded where they can be."""
    payloads: list[Any] = []
    for path in sorted((TESTS / "fixtures").glob("*.json")) + sorted(
        (TESTS / "bad_inputs").glob("*.json")
    ):
        case = json.loads(path.read_text(encoding="utf-8"))
        payloads.append(case)
        for key in ("data", "event", "body"):
            if isinstance(case.get(key), dict):
                payloads.append(case[key])
    return payloads


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=lambda m: m.__name__)
def test_every_corpus_payload_validates_as_the_pydantic_model_did(
    ours: type[common.Model], theirs: type[BaseModel]
) -> None:
    for payload in corpus_payloads():
        assert outcome(ours, payload) == outcome(theirs, payload), payload


BUDGET = {"costAmount": 120.5, "budgetAmount": 100}
INCIDENT = {"version": "1.2", "incident": {"state": "open", "metric": {"labels": {"a": "b"}}}}
VALUES: list[Any] = [
    None,
    True,
    0,
    1,
    -2.5,
    float("inf"),
    float("nan"),
    "",
    "x",
    "sql",
    "flink",
    "SQL",
    [],
    [1],
    ["a"],
    (),
    {},
    {"k": 1},
    {1: "int key"},
    b"bytes",
]


def one_field_changed(base: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    changed = json.loads(json.dumps(base))
    target = changed
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
    return changed


TARGETED: list[dict[str, Any]] = [
    *({name: value} for name in PydanticOurEvent.model_fields for value in VALUES),
    *(
        one_field_changed({"sweep": True}, (name,), value)
        for name in PydanticSweepEvent.model_fields
        for value in VALUES
    ),
    *(
        one_field_changed(BUDGET, (to_camel(name),), value)
        for name in PydanticBudgetNotification.model_fields
        for value in VALUES
    ),
    *(
        one_field_changed(INCIDENT, path, value)
        for path in [
            ("version",),
            ("incident",),
            *(("incident", name) for name in PydanticIncident.model_fields),
            ("incident", "metric", "labels"),
            ("incident", "resource", "labels"),
        ]
        for value in VALUES
    ),
]


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=lambda m: m.__name__)
def test_every_field_takes_and_refuses_what_the_pydantic_model_did(
    ours: type[common.Model], theirs: type[BaseModel]
) -> None:
    for payload in TARGETED:
        assert outcome(ours, payload) == outcome(theirs, payload), payload


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)
FIELD_NAMES = [
    *PydanticOurEvent.model_fields,
    *(to_camel(name) for name in PydanticBudgetNotification.model_fields),
    "version",
    "incident",
    "state",
    "metric",
    "labels",
    "sql",
]


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(FIELD_NAMES), JSON | st.sampled_from(["sql", "flink"]))
    | st.fixed_dictionaries(
        {"version": JSON, "incident": st.dictionaries(st.sampled_from(FIELD_NAMES), JSON)}
    )
    | JSON
)
def test_any_payload_validates_as_the_pydantic_models_did(payload: Any) -> None:
    for ours, theirs in PAIRS:
        assert outcome(ours, payload) == outcome(theirs, payload)
