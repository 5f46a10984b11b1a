"""A pydantic error in a person's words: each field as the manifest spells it, the first
few problems, and nothing of pydantic's own (type codes, echoed input, links)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from molt.api import TerminationPolicy
from molt.api.problems import PROBLEMS_SHOWN, describe_invalid
from tests.support.builders import termination_policy


def _error(**spec: object) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        TerminationPolicy.model_validate(termination_policy("x", **spec))
    return caught.value


def test_each_problem_names_its_field_in_the_manifests_spelling() -> None:
    budget = {"maxInFlight": 1, "schedule": "0 2 * * *", "duration": "1h", "timeZone": "Nowhere"}
    text = describe_invalid(_error(budgets=[budget]))
    assert text == "spec.budgets[0].timeZone: 'Nowhere' is not an IANA time zone " + (
        "(such as UTC, Europe/Berlin or America/New_York)"
    )


def test_many_problems_show_the_first_few_and_count_the_rest() -> None:
    budgets = [{"maxInFlight": "150%"} for _ in range(PROBLEMS_SHOWN + 2)]
    text = describe_invalid(_error(budgets=budgets))
    assert text.count("spec.budgets[") == PROBLEMS_SHOWN
    assert text.endswith("(and 2 more)")
    assert "pydantic" not in text
    assert "input_value" not in text
