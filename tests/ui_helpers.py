"""Driving Dash callbacks from a test as Dash would: the page modules, and one user action."""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from typing import Iterator

from dash._callback_context import context_value
from dash._utils import AttributeDict


def page(name: str):
    return importlib.import_module(f"app.ui.pages.{name}")


@contextmanager
def fired_by(prop_id: str, value) -> Iterator[None]:
    """Run a callback as Dash would after one user action on `prop_id`."""
    token = context_value.set(AttributeDict(triggered_inputs=[{"prop_id": prop_id, "value": value}]))
    try:
        yield
    finally:
        context_value.reset(token)
