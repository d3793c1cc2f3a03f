"""How far a model load has come: its stages, and within reading the weights, tensor by tensor.

`load_model` reports a `LoadProgress` at the start of each stage, and while transformers
reads a checkpoint, after each tensor it puts in place (through transformers' public tqdm
hook: the loop that reads the weights is transformers' own). The hook is process-wide, so
two loads at once in one process would each see the other's tensors; the server loads one
model at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable

READING = "reading weights"
BUILDING = "building the model"  # a model made in code: no files to read
PLACING = "placing layers"
BRIDGING = "building the bridge"
MOVING = "moving to "  # + the device


@dataclass(frozen=True)
class LoadProgress:
    stage: str  # one of the stages above, in the order a load passes them
    done: int | None = None  # units finished in this stage, where it counts them
    total: int | None = None
    unit: str = ""  # what done and total count ("tensors")

    @property
    def text(self) -> str:
        """`reading weights: 120 of 272 tensors`, or the stage alone where it counts nothing."""
        if self.done is None:
            return self.stage
        of = f" of {self.total:,}" if self.total is not None else ""
        return f"{self.stage}: {self.done:,}{of} {self.unit}".rstrip()


ProgressFn = Callable[[LoadProgress], None]


def ignore_progress(progress: LoadProgress) -> None:
    """The default listener: a load nobody watches."""


class _CountingBar:
    """A tqdm look-alike around transformers' own bar that reports each step as it is taken."""

    def __init__(self, bar: Any, report: ProgressFn, total: int | None):
        self._bar = bar
        self._report = report
        self._total = total
        self._done = 0

    def __iter__(self):
        self._report(LoadProgress(READING, 0, self._total, "tensors"))
        for item in self._bar:
            yield item
            self.update(1)

    def update(self, n: int = 1) -> None:
        self._done += n
        self._report(LoadProgress(READING, self._done, self._total, "tensors"))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:  # close, set_postfix, ...: the real bar's
        return getattr(self._bar, name)


@contextmanager
def reading_progress(report: ProgressFn) -> Iterator[None]:
    """Within the context, each progress bar transformers opens reports to `report` as it advances."""
    from transformers.utils import logging as hf_logging

    def hook(factory: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        iterable = args[0] if args else kwargs.get("iterable")
        total = kwargs.get("total")
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        return _CountingBar(factory(*args, **kwargs), report, total)

    previous = hf_logging.set_tqdm_hook(hook)
    try:
        yield
    finally:
        hf_logging.set_tqdm_hook(previous)
