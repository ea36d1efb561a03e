"""Every bad-input case is refused by the envelope or by ``parse_event``, naming its field."""

from __future__ import annotations

import pytest

from cancel_handler.envelopes import Delivery, EnvelopeError, from_cloud_event, from_http_body
from cancel_handler.events import EventRules, InvalidEvent, parse_event
from tests.corpus import BadInput, load_bad_inputs

MAX_BYTES = 65536
RULES = EventRules(default_project_id="0123456789abcdef0123456789abcdef")
CASES = load_bad_inputs(MAX_BYTES, RULES.max_jobs_per_event)


def deliver(case: BadInput) -> Delivery:
    if case.transport == "cloudevent":
        return from_cloud_event(case.cloud_event(), MAX_BYTES)
    return from_http_body(case.http_body(), MAX_BYTES, case.path)


def test_corpus_is_large_and_named_uniquely() -> None:
    assert len(CASES) >= 45
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_bad_input_is_refused_with_its_field(case: BadInput) -> None:
    expected = EnvelopeError if case.expect_error == "EnvelopeError" else InvalidEvent
    with pytest.raises((EnvelopeError, InvalidEvent)) as caught:
        parse_event(deliver(case), RULES)
    error = caught.value
    assert type(error) is expected
    assert error.field == case.expect_field, error.message
    assert case.expect_field.split("[")[0].split(".")[-1] in str(error)
    assert len(error.message) < 400
