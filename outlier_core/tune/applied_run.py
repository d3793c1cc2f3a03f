"""A fine-tune run put back on the model it was trained from: switched on and off, merged, or detached.

A comparison (`comparison.compare`) leaves, per method, FOLDER/<method>/run.json and the
method's deltas.safetensors (the coordinate methods also their mask.json|.safetensors).
`attach_run` checks that the run was trained on the model at hand, and the method loads
its own state (`TuningMethod.load`): the coordinate methods put the saved values back at
the mask's coordinates, LoRA its factors into peft layers, full its tuned weights in
place with the base kept aside on the CPU.

The model then computes base + deltas. Until `merge()` no base weight is lost, so
`detach()` gives the model back bit for bit; after it the tuned weights are the model's own.
Every step changes the model caches' state token (`model_cache`): the tunings see to it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import Field
from safetensors import SafetensorError

from outlier_core.errors import InputError
from outlier_core.load.models import LoadedModel
from outlier_core.select.masks import model_shapes
from outlier_core.tune.methods import METHODS, get_method
from outlier_core.tune.methods.base import Tuning

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")  # one folder name under the runs directory, never a path


class RunNotFound(InputError):
    """The run, or the method's part of it, is not on disk."""


def run_folder(root: str | Path, run_id: str) -> Path:
    """The folder of run `run_id` under the runs directory `root`; refuses anything but a plain folder name."""
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise InputError("run", "must be a run id: letters, digits, '.', '_' or '-', starting with a letter or digit")
    folder = Path(root) / run_id
    if not (folder / "comparison.json").is_file():
        raise RunNotFound("run", f"no fine-tune run {run_id!r} under the runs directory")
    return folder


def _read_json(path: Path, field: str) -> dict:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(field, f"{path.parent.name}/{path.name} is not readable JSON ({err})") from err
    if not isinstance(payload, dict):
        raise InputError(field, f"{path.parent.name}/{path.name} is not a JSON object")
    return payload


def _check_model(model: LoadedModel, comparison: dict, run_id: str) -> None:
    """The comparison's mask summary names the model the run started from: it must be this one."""
    trained_on = (comparison.get("mask") or {}).get("model") or {}
    _, total = model_shapes(model)
    if trained_on.get("name") != model.name or trained_on.get("n_params") != total:
        raise InputError(
            "run",
            f"run {run_id} was trained on {trained_on.get('name')!r} ({trained_on.get('n_params')} parameters); "
            f"the model here is {model.name!r} ({total:,} parameters)",
        )


@dataclass(frozen=True)
class AppliedState:
    """What an applied run is doing now, as the API serves it."""

    run: Annotated[str, Field(description="the run id")]
    method: str
    name: Annotated[str, Field(description="the run's own name: the mask's name, random, ln_only, lora_rN or full")]
    model: str
    trainable: Annotated[int, Field(description="values the run trained: its deltas")]
    enabled: Annotated[bool, Field(description="whether the model computes base + deltas now")]
    merged: Annotated[bool, Field(description="true once merged: the weights are base + deltas until the model is reloaded")]
    serving: Annotated[str, Field(description="what the served model computes, in words")]


class AppliedRun:
    """One run's trained state on a model. Build it with `attach_run`."""

    def __init__(self, model: LoadedModel, run_id: str, method: str, name: str, tuning: Tuning):
        self.model = model
        self.run_id = run_id
        self.method = method
        self.name = name
        self.tuning = tuning
        self.trainable = tuning.trainable
        self.enabled = True
        self.merged = False
        self.attached = True

    @property
    def weights_in_place(self) -> bool:
        """Whether the model's parameters hold what it computes with, under their plain names.

        Not while sparse deltas (a parametrization) or LoRA layers sit on top of the base:
        then code that reads parameters by name sees the base under other names.
        """
        return self.merged or get_method(self.method).weights_in_place

    def set_enabled(self, enabled: bool) -> None:
        """Off: the model computes the base weights exactly; on: base + deltas again."""
        self._check_unmerged("enabled")
        self.tuning.set_enabled(enabled)
        self.enabled = enabled

    def merge(self) -> None:
        """Make base + deltas the model's own weights, for good."""
        self._check_unmerged("deltas")
        self.tuning.merge()  # each tuning merges base + deltas whether or not they are switched on
        self.enabled = True
        self.merged = True

    def detach(self) -> None:
        """Take the deltas off: every base weight is back, bit for bit."""
        self._check_unmerged("deltas")
        self.tuning.detach()
        self.attached = False

    def _check_unmerged(self, field: str) -> None:
        if self.merged:
            raise InputError(field, f"the deltas of {self.run_id}/{self.method} are merged into the weights; reload the model to get the base back")
        if not self.attached:
            raise InputError(field, f"the deltas of {self.run_id}/{self.method} are detached")

    @property
    def state(self) -> AppliedState:
        if self.merged:
            serving = "base + deltas merged into the weights, until the model is reloaded"
        else:
            serving = "base + deltas" if self.enabled else "base only: the deltas are switched off"
        return AppliedState(self.run_id, self.method, self.name, self.model.name, self.trainable, self.enabled, self.merged, serving)


def attach_run(model: LoadedModel, folder: str | Path, method: str) -> AppliedRun:
    """Attach the trained state of `method` from the comparison in `folder` to `model`.

    Raises InputError naming `run` (not a run, another model, files that do not match)
    or `method` (unknown, not in this run, no deltas saved); RunNotFound where a file is missing.
    """
    folder = Path(folder)
    run_id = folder.name
    tuning_method = get_method(method, field="method")
    if not (folder / "comparison.json").is_file():
        raise RunNotFound("run", f"{folder} holds no comparison.json: it is not a fine-tune run")
    _check_model(model, _read_json(folder / "comparison.json", "run"), run_id)
    part = folder / method
    if not (part / "run.json").is_file():
        present = sorted(m for m in METHODS if (folder / m / "run.json").is_file())
        raise RunNotFound("method", f"run {run_id} has no {method} run; it has {', '.join(present) or 'none finished'}")
    record = _read_json(part / "run.json", "run")
    if not record.get("deltas"):
        raise InputError("method", f"the {method} run of {run_id} saved no deltas")
    deltas = part / Path(str(record["deltas"])).name  # a bare file name inside the method's folder
    if not deltas.is_file():
        raise RunNotFound("method", f"{run_id}/{method}/{deltas.name} is missing")
    try:
        tuning = tuning_method.load(model, part, deltas)
    except SafetensorError as err:
        raise InputError("run", f"{run_id}/{method}/{deltas.name} is not a readable safetensors file ({err})") from err
    except InputError as err:
        if isinstance(err, RunNotFound) or err.field in ("run", "method"):
            raise
        raise InputError("run", f"{run_id}/{method}: {err.reason}") from err
    return AppliedRun(model, run_id, method, str(record.get("name") or method), tuning)

