"""Errors the core raises for bad input; each names the field at fault."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input. `field` names what was wrong so the API and CLI can report it."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
