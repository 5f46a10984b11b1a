"""Run a reconciler's coroutine to completion on the virtual clock, with no event loop.

Reconcilers are async only because production ports do I/O; the simulator's ports
answer at once, so a reconcile never has to suspend. ``complete`` steps the coroutine
once and expects it to finish. If it suspends anyway, something in it awaited real I/O
or a real sleep (which would make the simulation depend on wall time): that is refused
with an error naming the awaited object, never papered over.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class SuspendedError(RuntimeError):
    """A reconcile awaited something the simulator cannot answer at once."""


def complete(coroutine: Coroutine[Any, Any, T]) -> T:
    """The coroutine's result; raise ``SuspendedError`` if it tried to wait."""
    try:
        awaited = coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    name = getattr(coroutine, "__qualname__", repr(coroutine))
    raise SuspendedError(
        f"{name} awaited {awaited!r}: a simulated reconcile must not wait on real I/O or real time"
    )
