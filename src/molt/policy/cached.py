"""``cached``: a property computed once per object and then read as a plain attribute.

The snapshot's views are immutable and read many times a pass (a node's group, zone and
state by every rule and budget), so each such property is worked out on first use and
stored on the object. ``functools.cached_property`` does the same, but on Python 3.11
takes a lock on every first use, which costs more than most of these properties: a plan
over 20,000 fresh nodes spent a third of its time there. The views are built and read by
one thread (the event loop), so no lock is needed: two threads racing on one first use
would both compute the same value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")


class cached(Generic[T]):  # noqa: N801 - used as a decorator, like property
    """A read-only property stored in the instance's ``__dict__`` on first use (the
    instance needs a ``__dict__``: a frozen dataclass without slots has one)."""

    def __init__(self, compute: Callable[[Any], T]) -> None:
        self.compute = compute
        self.name = compute.__name__
        self.__doc__ = compute.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> cached[T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> T | cached[T]:
        if instance is None:
            return self
        value = self.compute(instance)
        # The instance's own entry now shadows this (non-data) descriptor.
        instance.__dict__[self.name] = value
        return value
