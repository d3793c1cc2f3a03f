"""Small per-model caches that forget everything when the model changes.

Entries live under the bridge object itself (weakly, so a dropped model takes its cache
with it) and under a state token built from the model's change count and the parameters'
identities and in-place version counters: an optimizer step or a `copy_` into a weight
changes the token and so misses the cache. What the counters cannot see — a tuner's
on/off flag, a module swapped in or out, a merge written through `.data`, a new parameter
that happens to reuse a freed one's id — is reported with `model_changed(model)`, which
the sparse and LoRA tunings call whenever they attach, switch, merge or detach (a full
fine-tune copies values into the parameters, which the counters do see). Temporary
weight edits (`weight_edits`) write through `.data` too, so while they are in force the
caches are bypassed.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Hashable, Iterator, TypeVar

from outlier_core.load.models import LoadedModel

T = TypeVar("T")

# bridge -> how many changes `model_changed` was told of
_changes: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()
# bridge -> how many `bypassed` blocks are open on it
_bypassed: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()


def model_changed(model: LoadedModel) -> None:
    """Say that `model` now computes something else, in a way its parameters' counters do not show."""
    _changes[model.bridge] = _changes.get(model.bridge, 0) + 1


@contextmanager
def bypassed(model: LoadedModel) -> Iterator[None]:
    """While the block runs the model's weights are borrowed: caches neither read nor store."""
    _bypassed[model.bridge] = _bypassed.get(model.bridge, 0) + 1
    try:
        yield
    finally:
        _bypassed[model.bridge] -= 1


def state_token(model: LoadedModel) -> int:
    # An offloaded layer's parameters are meta placeholders that accelerate recreates around
    # every forward (inference tensors, without counters, inside inference mode): its values
    # change only through `writable_values`, under `bypassed`.
    return hash((_changes.get(model.bridge, 0), tuple((id(p), p._version) for p in model.hf_model.parameters() if p.device.type != "meta")))


class ModelCache:
    """`get(model, key, compute)`: compute once per (model, state, key); keeps `size` entries per model."""

    def __init__(self, size: int = 32):
        self.size = size
        self._by_bridge: "weakref.WeakKeyDictionary[Any, OrderedDict]" = weakref.WeakKeyDictionary()

    def get(self, model: LoadedModel, key: Hashable, compute: Callable[[], T]) -> T:
        if _bypassed.get(model.bridge, 0) > 0:
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
