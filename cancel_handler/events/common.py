"""Shared pieces of the event models: the parsed event, its errors, and the field validators.

Validation is strict on purpose: ids reach DLI URL paths, so they must match their exact
shapes (UUIDs for SQL and Spark jobs, positive 64-bit integers for Flink jobs, 32 lower-case
hex characters for projects, DLI queue naming for queues), with no coercion and no trimming.

The models (``Model``) are validated by pydantic's validation engine, pydantic-core, from
schemas written out here (strict types, unknown keys ignored; the same validators and the same
errors as the equivalent ``pydantic.BaseModel``, which tests/unit/test_event_models.py holds
them to). Not ``BaseModel`` itself: importing pydantic's model layer and building the models
cost a cold start about 280 M instructions (~12 % of the first result, docs/performance.md);
pydantic-core alone about 90 M.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar, cast, get_args

from pydantic_core import SchemaValidator, ValidationError

from cancel_handler.config import PROJECT_ID_RE, BudgetTarget, Settings
from cancel_handler.dli.types import JobKind
from cancel_handler.envelopes import Delivery
from cancel_handler.jsonbody import MAX_DEPTH as MAX_DEPTH
from cancel_handler.jsonbody import JsonRead, read_object
from cancel_handler.jsonbody import show as show

EventType = Literal["job-timeout", "budget-exceeded"]
SourceFormat = Literal["event", "budget_notification", "incident", "approval", "sweep"]

EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)
MAX_REASON_CHARS = 1000
MAX_CONTEXT_CHARS = 200
FLINK_MAX_ID = 2**63 - 1

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DIGITS = re.compile(r"[0-9]{1,19}")
_QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]{0,127}")
_EVENT_ID = re.compile(r"[\x21-\x7e]{1,200}")

T = TypeVar("T")

# -- models: pydantic-core schemas ------------------------------------------------------------

Schema = dict[str, Any]
STR: Schema = {"type": "str", "strict": True}
BOOL: Schema = {"type": "bool", "strict": True}
FINITE_NUMBER: Schema = {"type": "float", "strict": True, "allow_inf_nan": False}
ANY: Schema = {"type": "any"}
LIST: Schema = {"type": "list", "items_schema": ANY, "strict": True}
OBJECT: Schema = {"type": "dict", "keys_schema": STR, "values_schema": ANY, "strict": True}


def one_of(*values: str) -> Schema:
    return {"type": "literal", "expected": list(values)}


def required(schema: Schema, alias: str | None = None) -> Schema:
    """A field that must be present (``alias``: its name in the payload)."""
    spec: Schema = {"type": "model-field", "schema": schema}
    if alias:
        spec["validation_alias"] = alias
    return spec


def optional(schema: Schema, alias: str | None = None) -> Schema:
    """A field that may be absent or null (then None)."""
    nullable = {"type": "nullable", "schema": schema}
    return required({"type": "default", "schema": nullable, "default": None}, alias)


class Model:
    """An event model: the class's annotations say what its fields hold, ``FIELDS`` how each
    is validated (``required``/``optional`` of a schema above, or another model's ``schema()``).
    ``validate_model`` builds one from a payload; its validator is built on first use, so a
    cold start pays only for the formats it meets."""

    FIELDS: ClassVar[dict[str, Schema]] = {}
    _validator: ClassVar[SchemaValidator | None] = None

    @classmethod
    def schema(cls) -> Schema:
        fields = {"type": "model-fields", "fields": cls.FIELDS, "extra_behavior": "ignore"}
        return {"type": "model", "cls": cls, "schema": fields, "config": {"title": cls.__name__}}

    @classmethod
    def validator(cls) -> SchemaValidator:
        built = cls.__dict__.get("_validator")
        if built is None:
            built = SchemaValidator(cls.schema())
            cls._validator = built
        return cast(SchemaValidator, built)


M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class CancelEvent:
    event_type: EventType
    project_id: str | None
    job_kind: JobKind
    job_ids: tuple[str, ...]
    queue_names: tuple[str, ...]
    dry_run: bool
    reason: str | None
    context: dict[str, Any]
    source_format: SourceFormat
    source_event_id: str | None = None

    @property
    def is_sweep(self) -> bool:
        """The watchdog's sweep: no job named, the plan lists the queues (SPEC 7)."""
        return self.source_format == "sweep"


@dataclass(frozen=True)
class Ignored:
    """Nothing to do and nothing to publish; ``reason`` is one log line."""

    reason: str


class InvalidEvent(ValueError):
    """A bad event: ``field`` is the dotted path of the offending field, ``message`` says why.

    ``event_type``, ``job_ids`` and ``project_id`` carry whatever did validate, for the
    ``invalid_event`` result.
    """

    def __init__(
        self,
        field: str,
        message: str,
        *,
        event_type: str | None = None,
        job_ids: tuple[str, ...] = (),
        project_id: str | None = None,
    ) -> None:
        self.field = field
        self.message = message
        self.event_type = event_type
        self.job_ids = job_ids
        self.project_id = project_id
        super().__init__(message)

    def fill(self, partial: Partial) -> None:
        """Add what did validate elsewhere in the event, keeping what the error already has."""
        self.event_type = self.event_type or partial.event_type
        self.job_ids = self.job_ids or partial.job_ids
        self.project_id = self.project_id or partial.project_id


@dataclass(frozen=True)
class Partial:
    """The parts of a rejected event that validate on their own."""

    event_type: str | None = None
    job_ids: tuple[str, ...] = ()
    project_id: str | None = None


@dataclass(frozen=True)
class EventRules:
    default_project_id: str | None = None
    budget_threshold: float = 1.0
    budget_targets: Mapping[str, BudgetTarget] = field(default_factory=dict)
    max_jobs_per_event: int = 1000

    @classmethod
    def from_settings(cls, s: Settings) -> EventRules:
        return cls(
            default_project_id=s.default_project_id,
            budget_threshold=s.budget_threshold,
            budget_targets=s.budget_targets,
            max_jobs_per_event=s.max_jobs_per_event,
        )


def clip(value: Any, limit: int = MAX_CONTEXT_CHARS) -> Any:
    """A JSON scalar for a result's context, strings cut to ``limit`` characters."""
    if isinstance(value, str):
        return value[:limit]
    if value is None or isinstance(value, bool | int | float):
        return value
    return None


def small_object(value: Mapping[str, Any], max_keys: int = 20) -> dict[str, Any]:
    """The scalar entries of a caller's object, bounded, for echoing into results."""
    kept: dict[str, Any] = {}
    for key, item in value.items():
        if len(kept) == max_keys:
            break
        if clip(item) is not None:
            kept[str(key)[:64]] = clip(item)
    return kept


def load_json_object(data: bytes) -> dict[str, Any]:
    """UTF-8 JSON object, no NaN/Infinity, no duplicate keys, nested at most ``MAX_DEPTH``."""
    return json_object(read_object(data))


def json_object(read: JsonRead) -> dict[str, Any]:
    """The object read, or ``InvalidEvent`` on ``data`` saying why there is none."""
    if read.value is None or read.problem is not None:
        raise InvalidEvent("data", read.problem or "data is not a JSON object")
    return read.value


def validate_model(model: type[M], payload: Mapping[str, Any]) -> M:
    try:
        return cast(M, model.validator().validate_python(payload))
    except ValidationError as error:
        raise from_validation_error(error) from None


def from_validation_error(error: ValidationError) -> InvalidEvent:
    first = error.errors(include_url=False)[0]
    path = field_path(first["loc"])
    if first["type"] == "missing":
        return InvalidEvent(path, f"{path} is required")
    phrase = _phrase(first["type"], first.get("ctx") or {}, first["msg"])
    return InvalidEvent(path, f"{path} {phrase}, got {show(first.get('input'))}")


def field_path(loc: Iterable[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "data"


def require_budget_event(payload: Mapping[str, Any], delivery: Delivery, what: str) -> EventType:
    """The event type of a payload that can only be a budget-exceeded event (``what`` names it
    in the error: "a Cloud Billing budget notification", "an approval")."""
    event_type = resolve_event_type(
        delivery.topic,
        payload.get("event_type"),
        delivery.attributes.get("event_type"),
        default="budget-exceeded",
    )
    if event_type != "budget-exceeded":
        raise InvalidEvent(
            "event_type", f"event_type of {what} is always budget-exceeded, not {event_type!r}"
        )
    return event_type


def resolve_event_type(
    topic: str | None,
    declared: Any,
    attribute: Any,
    *,
    declared_field: str = "event_type",
    default: EventType | None = None,
) -> EventType:
    """The topic wins when it names an event type; the body or attribute must agree with it."""
    body = _event_type_value(declared, declared_field)
    attr = _event_type_value(attribute, "attributes.event_type")
    known = next((t for t in EVENT_TYPES if t == topic), None)
    if known is not None:
        for value, where in ((body, declared_field), (attr, "attribute event_type")):
            if value is not None and value != known:
                raise InvalidEvent(
                    "event_type", f"{where} {value!r} contradicts the topic {known!r}"
                )
        return known
    if body is not None and attr is not None and body != attr:
        raise InvalidEvent(
            "event_type", f"{declared_field} {body!r} contradicts the attribute event_type {attr!r}"
        )
    resolved = body or attr or default
    if resolved is None:
        where = f"topic {show(topic)}" if topic else "an unknown topic"
        raise InvalidEvent(
            "event_type",
            f"event_type is required: the event came from {where}, not job-timeout or "
            "budget-exceeded, and names no event_type field or attribute",
        )
    return resolved


def job_id(value: Any, kind: JobKind, path: str) -> str:
    if kind == "flink":
        return flink_job_id(value, path)
    if not isinstance(value, str):
        raise InvalidEvent(path, f"{path} must be a string UUID for {kind} jobs, got {show(value)}")
    if not _UUID.fullmatch(value):
        raise InvalidEvent(path, f"{path} must be a UUID (8-4-4-4-12 hex), got {show(value)}")
    return value


def flink_job_id(value: Any, path: str) -> str:
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise InvalidEvent(
            path,
            f"{path} must be a Flink job id (a positive integer or a string of digits), "
            f"got {show(value)}",
        )
    if not 1 <= number <= FLINK_MAX_ID:
        raise InvalidEvent(
            path, f"{path} must be a Flink job id between 1 and {FLINK_MAX_ID}, got {show(value)}"
        )
    return str(number)


def job_ids(values: list[Any], kind: JobKind, path: str, limit: int) -> tuple[str, ...]:
    if len(values) > limit:
        raise InvalidEvent(
            path, f"{path} names {len(values)} jobs, more than MAX_JOBS_PER_EVENT={limit}"
        )
    return dedupe(job_id(v, kind, f"{path}[{i}]") for i, v in enumerate(values))


def project_id(value: Any, path: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not PROJECT_ID_RE.fullmatch(value):
        raise InvalidEvent(path, f"{path} must be 32 lower-case hex characters, got {show(value)}")
    return value


def queue_name(value: Any, path: str) -> str:
    """DLI queue naming: letters, digits, underscores; 1-128 characters; not starting with
    an underscore; not only digits. DLI is case-insensitive here, so names are lower-cased."""
    if not isinstance(value, str) or not _QUEUE_NAME.fullmatch(value) or value.isdigit():
        raise InvalidEvent(
            path,
            f"{path} must be a DLI queue name (1-128 letters, digits and underscores, not "
            f"starting with an underscore, not only digits), got {show(value)}",
        )
    return value.lower()


def queue_names(values: list[Any], path: str) -> tuple[str, ...]:
    return dedupe(queue_name(v, f"{path}[{i}]") for i, v in enumerate(values))


def source_event_id(value: Any, path: str = "source_event_id") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _EVENT_ID.fullmatch(value):
        raise InvalidEvent(
            path, f"{path} must be 1-200 visible ASCII characters, got {show(value)}"
        )
    return value


def reason(value: str | None) -> str | None:
    return value[:MAX_REASON_CHARS] if value else None


def valid_job_ids(values: Iterable[Any], kind: JobKind) -> tuple[str, ...]:
    valid: list[str] = []
    for value in values:
        try:
            valid.append(job_id(value, kind, ""))
        except InvalidEvent:
            continue
    return dedupe(valid)


def dedupe(values: Iterable[T]) -> tuple[T, ...]:
    return tuple(dict.fromkeys(values))


def attempt(check: Callable[[], T]) -> T | None:
    """The value of a validator, or None when it rejects: for best-effort error context."""
    try:
        return check()
    except InvalidEvent:
        return None


def _phrase(kind: str, ctx: Mapping[str, Any], fallback: str) -> str:
    phrases = {
        "string_type": "must be a string",
        "bool_type": "must be true or false",
        "int_type": "must be an integer",
        "float_type": "must be a number",
        "finite_number": "must be a finite number",
        "list_type": "must be a list",
        "dict_type": "must be an object",
        "model_type": "must be an object",
        "model_attributes_type": "must be an object",
        "literal_error": f"must be {ctx.get('expected', 'one of the allowed values')}",
    }
    return phrases.get(kind) or fallback[:1].lower() + fallback[1:]


def _event_type_value(value: Any, path: str) -> EventType | None:
    if value is None:
        return None
    for known in EVENT_TYPES:
        if value == known:
            return known
    raise InvalidEvent(
        path, f"{path} must be 'job-timeout' or 'budget-exceeded', got {show(value)}"
    )
