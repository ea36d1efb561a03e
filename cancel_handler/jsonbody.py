"""Caller data read as JSON: strictly, within bounds, and in time linear in its size (SPEC 5.2).

Accepted: UTF-8 text holding one JSON object, without NaN/Infinity, without a key repeated in
one object, nested at most ``MAX_DEPTH`` levels, with at most ``MAX_CONTAINERS`` objects and
arrays and ``MAX_KEYS`` keys, and only Unicode text in its strings (JSON's ``\\ud800`` escape
can make a lone UTF-16 surrogate, which no UTF-8 output, a result or a log line, can hold).

The depth and the counts are checked before parsing, by C code that reads every byte a fixed
number of times (byte replacements, a split on quotes, a byte translation, a running sum), so
no body, of any shape, makes the parser do more than linear work; no regular expression runs
over the body.

``show`` renders caller values for messages: short, ASCII, never the whole value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

MAX_DEPTH = 32
# Objects and arrays, and keys, in one body. Every event format we read has a few dozen at
# most; the caps keep a body of empty arrays or of keys from costing many times what a real
# event of its size costs.
MAX_CONTAINERS = 1000
MAX_KEYS = 1000
MAX_SHOWN_CHARS = 60

_OPEN, _CLOSE = 0x01, 0xFF  # +1 and -1 as signed bytes
_BRACKET_STEPS = bytes.maketrans(b"[{]}", bytes([_OPEN, _OPEN, _CLOSE, _CLOSE]))
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_CHUNK = 4096


class JsonProblem(ValueError):
    """Why caller data is not a JSON object we read; the message starts with ``data``."""


@dataclass(frozen=True)
class JsonRead:
    """Caller data read once. ``value``: the JSON object, if the data is one; ``problem``: why
    the data is not acceptable. Both are set for an object whose strings are not all text: an
    envelope may still be unwrapped (it checks the strings it reads), an event may not."""

    value: dict[str, Any] | None = None
    problem: str | None = None


def read_object(data: bytes) -> JsonRead:
    try:
        value = _parse_object(data)
    except JsonProblem as problem:
        return JsonRead(problem=str(problem))
    return JsonRead(value=value, problem=_lone_surrogate(data, value))


def load_object(data: bytes) -> dict[str, Any]:
    """The JSON object in ``data``; raises ``JsonProblem`` saying why it is not acceptable."""
    read = read_object(data)
    if read.value is None or read.problem is not None:
        raise JsonProblem(read.problem or "data is not a JSON object")
    return read.value


def _parse_object(data: bytes) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise JsonProblem(f"data is not UTF-8 (bad byte at offset {error.start})") from None
    if not text.strip():
        raise JsonProblem("data is empty: expected a JSON object")
    outside = _outside_strings(data)
    brackets = outside.translate(_BRACKET_STEPS, _NOT_BRACKETS)
    too_many = len(brackets) > 2 * MAX_CONTAINERS  # each opens and closes once
    # Too many to sum them all: the first ones tell whether it is also too deep.
    if _depth(brackets[:_CHUNK] if too_many else brackets) > MAX_DEPTH:
        raise JsonProblem(f"data is nested deeper than {MAX_DEPTH} levels")
    if too_many:
        raise JsonProblem(f"data has more than {MAX_CONTAINERS} objects and arrays")
    if outside.count(b":") > MAX_KEYS:  # outside strings, a colon follows a key
        raise JsonProblem(f"data has more than {MAX_KEYS} keys")
    try:
        value = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except JsonProblem:
        raise
    except RecursionError:
        raise JsonProblem(f"data is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as error:
        raise JsonProblem(f"data is not valid JSON: {str(error)[:100]}") from None
    if not isinstance(value, dict):
        raise JsonProblem(f"data must be a JSON object, got {kind_of(value)}")
    return value


def is_text(value: str) -> bool:
    """Whether a caller's string is Unicode text: no lone UTF-16 surrogate."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def nesting_depth(data: bytes) -> int:
    """The deepest bracket nesting outside strings, at most ``MAX_DEPTH + 1``."""
    return _depth(_outside_strings(data).translate(_BRACKET_STEPS, _NOT_BRACKETS))


def _depth(brackets: bytes) -> int:
    """The deepest nesting of brackets given as signed bytes (+1 opens, -1 closes), at most
    ``MAX_DEPTH + 1``: their highest running sum, summed in chunks to stop early."""
    level = deepest = 0
    for start in range(0, len(brackets), _CHUNK):
        chunk = brackets[start : start + _CHUNK]
        deepest = max(deepest, *accumulate(memoryview(chunk).cast("b"), initial=level))
        if deepest > MAX_DEPTH:
            return MAX_DEPTH + 1
        level += chunk.count(_OPEN) - chunk.count(_CLOSE)
    return deepest


def _outside_strings(data: bytes) -> bytes:
    """``data`` without its JSON strings (a string left open runs to the end).

    Escapes first: in a run of backslashes each pair is one escaped backslash, taken from the
    left as JSON does, and a backslash left before a quote escapes it. Every quote left then
    opens or closes a string, so the text outside strings is every other piece between quotes.
    (Outside strings a backslash is not JSON at all, so its reading there does not matter.)
    """
    unescaped = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    return b"".join(unescaped.split(b'"')[::2])


def _may_hold_surrogates(data: bytes) -> bool:
    """Whether ``data`` has a ``\\ud800``-``\\udfff`` escape (a pair, as JSON encoders write
    characters beyond the BMP, or a lone one)."""
    lowered = data.lower()
    return any(b"\\ud" + bytes([digit]) in lowered for digit in b"89abcdef")


def _lone_surrogate(data: bytes, value: dict[str, Any]) -> str | None:
    if not _may_hold_surrogates(data):
        return None
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as error:
        code = ord(error.object[error.start])
        return f"data contains a lone surrogate (\\u{code:04x}), which is not Unicode text"
    return None


def show(value: Any) -> str:
    """A short, log-safe rendering of caller input for error messages."""
    if isinstance(value, str):
        text = ascii(value[:MAX_SHOWN_CHARS])
        return text + "..." if len(value) > MAX_SHOWN_CHARS else text
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = type(value).__name__
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "..."


def _reject_constant(name: str) -> Any:
    raise JsonProblem(f"data contains {name}, which is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) < len(pairs):
        raise JsonProblem(f"data repeats the key {show(_first_repeated(pairs))} in one object")
    return result


def _first_repeated(pairs: list[tuple[str, Any]]) -> str:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return key
        seen.add(key)
    raise AssertionError("no key is repeated")


def kind_of(value: Any) -> str:
    """The JSON type of a parsed value, for messages ("a number", "an array", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    return "an object"
