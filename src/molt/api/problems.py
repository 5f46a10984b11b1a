"""What is wrong with an object, in a person's words: a pydantic ``ValidationError``
as ``field: message`` items (the field as the manifest spells it, camelCase), without
pydantic's type codes, echoed inputs and links."""

from __future__ import annotations

from pydantic import ValidationError

PROBLEMS_SHOWN = 5


def field_path(loc: tuple[int | str, ...]) -> str:
    """``('spec', 'budgets', 0, 'timeZone')`` -> ``spec.budgets[0].timeZone``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("function-after", "function-before") or "[" in str(part):
            continue  # pydantic's internal validator steps
        else:
            text += ("." if text else "") + str(part)
    return text or "(top level)"


def describe_invalid(error: ValidationError) -> str:
    """One line naming each field at fault (the first few) and what is wrong with it."""
    items = [
        f"{field_path(tuple(item['loc']))}: {item['msg'].removeprefix('Value error, ')}"
        for item in error.errors()
    ]
    more = len(items) - PROBLEMS_SHOWN
    shown = "; ".join(items[:PROBLEMS_SHOWN])
    return shown + (f" (and {more} more)" if more > 0 else "")
