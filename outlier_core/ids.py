"""Ids of things the tool stores (jobs, masks): creation time, then a random tail, so they sort by age."""

from __future__ import annotations

import re
import secrets
import time

ID_PATTERN = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")


def new_id() -> str:
    """`20261130-113105-a1b2c3`: unique enough for one machine, readable, and newest sorts last."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def is_id(text: str) -> bool:
    return bool(ID_PATTERN.match(text))
