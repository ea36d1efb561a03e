"""The outcome vocabulary: one enum for SPEC section 3's outcomes, and what each one means."""

from __future__ import annotations

import json
import logging
from typing import get_args

from cancel_handler.dli.types import CallResult
from cancel_handler.outcomes import Outcome

SPEC_OUTCOMES = {
    "cancelled",
    "already_finished",
    "not_found",
    "rejected",
    "failed",
    "dry_run",
    "not_allowed",
    "invalid_event",
    "nothing_to_cancel",
    "awaiting_approval",
}


def test_the_enum_holds_the_outcomes_of_the_spec() -> None:
    assert {str(o) for o in Outcome} == SPEC_OUTCOMES


def test_every_answer_the_dli_client_gives_is_an_outcome() -> None:
    assert set(get_args(CallResult)) <= {o.value for o in Outcome}


def test_good_outcomes_are_logged_as_info_the_others_as_warning() -> None:
    good = {o for o in Outcome if o.good}
    assert good == {
        Outcome.CANCELLED,
        Outcome.ALREADY_FINISHED,
        Outcome.DRY_RUN,
        Outcome.NOTHING_TO_CANCEL,
        Outcome.AWAITING_APPROVAL,
    }
    assert all(o.severity == (logging.INFO if o.good else logging.WARNING) for o in Outcome)


def test_an_outcome_is_written_as_its_plain_text() -> None:
    assert json.dumps({"outcome": Outcome.NOT_FOUND}) == '{"outcome": "not_found"}'
    assert f"job j: {Outcome.FAILED}" == "job j: failed"
    assert Outcome("rejected") is Outcome.REJECTED
