"""Errors the core raises for bad input; each names the field at fault."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


class InputError(ValueError):
    """Bad user input. `field` names what was wrong so the API and CLI can report it."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@contextmanager
def within(prefix: str) -> Iterator[None]:
    """An InputError raised inside names `prefix.<field>`: which entry of a list was at fault."""
    try:
        yield
    except InputError as err:
        raise InputError(f"{prefix}.{err.field}", err.reason) from err
