"""Fuzzed inputs: mutated scenario files and random API specs fail cleanly, never crash.

A scenario mutated at random (a value replaced, a key dropped, the text cut) either
parses or raises ``ScenarioError`` whose every problem reads ``file:line: ...``; any
other exception is a traceback a user would see. A random mapping given to an API
model either validates or raises pydantic's ``ValidationError``. ``MOLT_FUZZ_EXAMPLES``
raises the example count (default 60).
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from molt.api.instancegroup import InstanceGroupSpec
from molt.api.reaper import Reaper
from molt.api.terminationpolicy import TerminationPolicySpec
from molt.api.watchdog import Watchdog
from molt.sim.scenario import ScenarioError, parse_scenario
from tests.support.sim_fleets import random_scenario_data

EXAMPLES = int(os.environ.get("MOLT_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROBLEM = re.compile(r"^<fuzz>:(\d+|\?): \S")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["1h", "-5m", "50%", "abc", "", "0s", "9999999h", "zone-a"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found.extend(_paths(value, (*prefix, index)))
    return found


def _mutate(data: Any, path: tuple[Any, ...], value: Any, drop: bool) -> None:
    target = data
    for part in path[:-1]:
        target = target[part]
    if drop:
        del target[path[-1]]
    else:
        target[path[-1]] = value


def _assert_parses_or_names_lines(text: str) -> None:
    """The text parses, or every problem it raises names the file and a line."""
    problems: list[str] = []
    try:
        parse_scenario(text, "<fuzz>")
    except ScenarioError as error:
        problems = error.problems or ["(a ScenarioError naming no problem)"]
    bad = [p for p in problems if not PROBLEM.match(p)]
    assert not bad, bad


@FUZZ
@given(
    seed=st.integers(min_value=0, max_value=500),
    picks=st.lists(st.tuples(st.integers(0, 10**6), values, st.booleans()), min_size=1, max_size=3),
    cut=st.one_of(st.none(), st.integers(min_value=0, max_value=4000)),
)
def test_a_mutated_scenario_parses_or_names_file_and_line(
    seed: int, picks: list[tuple[int, Any, bool]], cut: int | None
) -> None:
    data = random_scenario_data(seed)
    for index, value, drop in picks:
        paths = _paths(data)
        if not paths:
            break
        _mutate(data, paths[index % len(paths)], value, drop)
    text = yaml.safe_dump(data, sort_keys=False)
    if cut is not None:
        text = text[:cut]
    _assert_parses_or_names_lines(text)


@FUZZ
@given(text=st.text(max_size=200))
def test_arbitrary_text_as_a_scenario_fails_with_a_scenario_error(text: str) -> None:
    _assert_parses_or_names_lines(text)


@pytest.mark.parametrize(
    "model", [InstanceGroupSpec, TerminationPolicySpec, Reaper, Watchdog], ids=lambda m: m.__name__
)
@FUZZ
@given(data=st.dictionaries(st.text(max_size=20), values, max_size=6))
def test_a_random_mapping_validates_or_raises_a_validation_error(
    model: type[BaseModel], data: dict[str, Any]
) -> None:
    with contextlib.suppress(ValidationError):
        model.model_validate(data)


def test_a_known_bad_scenario_is_refused_with_its_line() -> None:
    """The fuzz oracle can fail: a broken file gives a problem naming its line."""
    with pytest.raises(ScenarioError) as caught:
        parse_scenario("duration: 1h\nfleet: []\n", "<fuzz>")
    assert PROBLEM.match(caught.value.problems[0]), caught.value.problems


def test_a_control_character_in_a_scenario_is_a_scenario_error_with_its_line() -> None:
    """Regression: PyYAML's ReaderError is no MarkedYAMLError and escaped as a traceback."""
    with pytest.raises(ScenarioError) as caught:
        parse_scenario("name: x\nduration: 1h\x1f\n", "<fuzz>")
    assert caught.value.problems[0].startswith("<fuzz>:2: not valid YAML"), caught.value.problems
