"""Checks on what a user sends for a mask (names, sources, declared shapes, index lists),
made before anything is stored or any coordinate is computed; each failure names its field."""

from __future__ import annotations

import math
from typing import Any

from outlier_core.errors import InputError

MAX_NAME_CHARS = 200  # a mask's name
MAX_TEXT_CHARS = 1_000  # a parameter name or a part's source
MAX_NDIM = 8
MAX_NUMEL = 2**62  # flat positions are int64: a declared shape past this is not a real tensor


def checked_text(value: Any, field_name: str, max_chars: int = MAX_TEXT_CHARS) -> str:
    """`value` stripped, if it is a non-empty string of valid Unicode (no lone surrogates,
    which JSON can carry but UTF-8 cannot) of at most `max_chars`; else InputError."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(field_name, "must be a non-empty string")
    if len(value) > max_chars:
        raise InputError(field_name, f"is longer than {max_chars} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InputError(field_name, "is not valid Unicode (it holds a lone surrogate)") from err
    return value.strip()


def checked_shape(shape: Any, field_name: str) -> tuple[int, ...]:
    """A declared tensor shape: 1 to MAX_NDIM positive ints whose product fits int64."""
    if not isinstance(shape, (list, tuple)) or not 1 <= len(shape) <= MAX_NDIM or not all(is_int(d) and d >= 1 for d in shape):
        raise InputError(field_name, f"must be a list of 1 to {MAX_NDIM} positive integers")
    if math.prod(shape) > MAX_NUMEL:
        raise InputError(field_name, "declares more than 2**62 entries; no model has such a tensor")
    return tuple(int(d) for d in shape)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def int_row(value: Any) -> bool:
    """A list of ints, and nothing nested deeper: an index is never more than two levels."""
    return isinstance(value, (list, tuple)) and all(is_int(v) for v in value)
