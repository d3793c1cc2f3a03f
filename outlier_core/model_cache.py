"""Small per-model caches that forget everything when the model changes.

Entries live under the bridge object itself (weakly, so a dropped model takes its cache
with it) and under a state token built from the parameters' identities and in-place
version counters: an optimizer step, a merge or a parametrization changes the token and
so misses the cache. Temporary weight edits (`weight_edits`) write through `.data`, which
the counters do not see, so while they are in force the caches are bypassed.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Any, Callable, Hashable, TypeVar

from outlier_core import weight_edits
from outlier_core.models import LoadedModel

T = TypeVar("T")


def state_token(model: LoadedModel) -> int:
    return hash(tuple((id(p), p._version) for p in model.hf_model.parameters()))


class ModelCache:
    """`get(model, key, compute)`: compute once per (model, state, key); keeps `size` entries per model."""

    def __init__(self, size: int = 32):
        self.size = size
        self._by_bridge: "weakref.WeakKeyDictionary[Any, OrderedDict]" = weakref.WeakKeyDictionary()

    def get(self, model: LoadedModel, key: Hashable, compute: Callable[[], T]) -> T:
        if weight_edits.active(model):
            return compute()
        entries = self._by_bridge.setdefault(model.bridge, OrderedDict())
        full_key = (state_token(model), key)
        if full_key in entries:
            entries.move_to_end(full_key)
            return entries[full_key]
        value = compute()
        entries[full_key] = value
        while len(entries) > self.size:
            entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._by_bridge.clear()
