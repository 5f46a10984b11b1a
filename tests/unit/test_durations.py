"""Go-style durations parse as Kubernetes users expect and print compactly."""

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from molt.api.durations import InvalidDurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("48h", timedelta(hours=48)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("90s", timedelta(seconds=90)),
        ("1.5h", timedelta(minutes=90)),
        ("250ms", timedelta(milliseconds=250)),
        ("0s", timedelta(0)),
    ],
)
def test_parses_go_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "48", "2days", "h", "-5m", "5 m", "1d", "5m "])
def test_rejects_anything_else_with_a_hint(text: str) -> None:
    with pytest.raises(InvalidDurationError, match="must be a duration such as"):
        parse_duration(text)


def test_formats_for_people() -> None:
    assert format_duration(timedelta(hours=49, minutes=12, seconds=7)) == "49h12m"
    assert format_duration(timedelta(minutes=5, seconds=30)) == "5m30s"
    assert format_duration(timedelta(0)) == "0s"
    assert format_duration(timedelta(hours=-2)) == "-2h"


@given(st.integers(min_value=0, max_value=10_000_000))
def test_whole_minutes_round_trip(seconds: int) -> None:
    delta = timedelta(minutes=seconds // 60)
    assert parse_duration(format_duration(delta)) == delta
