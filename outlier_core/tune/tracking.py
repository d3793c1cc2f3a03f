"""A run's curves and results in TensorBoard, Weights & Biases or MLflow, through accelerate's
tracker classes (`accelerate.tracking`), offline: everything lands in FOLDER/tracking/.

Only the main rank opens a tracker, so it says so itself (`main_process_only = False`)
rather than have accelerate ask every call. accelerate's logging still wants its
`PartialState`, which joins the process group a launcher already set up (it starts none
of its own when one exists).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_args

from outlier_core.errors import InputError

TRACKING_DIR = "tracking"
Tracker = Literal["tensorboard", "wandb", "mlflow"]
TRACKERS: tuple[str, ...] = get_args(Tracker)


def open_tracker(kind: str, folder: Path, run_name: str, config: dict) -> Any:
    """A started `accelerate.tracking.GeneralTracker` writing under FOLDER/tracking, its config stored."""
    from accelerate import PartialState, tracking
    from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

    available = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available, "mlflow": is_mlflow_available}
    if kind not in TRACKERS:
        raise InputError("track", f"unknown tracker {kind!r}; choose from {', '.join(TRACKERS)}")
    if not available[kind]():
        raise InputError("track", f"{kind} is not installed here (pip install {kind})")
    PartialState()
    where = (folder / TRACKING_DIR).resolve()
    where.mkdir(parents=True, exist_ok=True)
    if kind == "tensorboard":
        tracker = tracking.TensorBoardTracker(run_name, where)
    elif kind == "wandb":
        tracker = tracking.WandBTracker(run_name, dir=str(where), mode="offline", name=run_name)
    else:
        os.environ.setdefault("MLFLOW_TRACKING_URI", where.joinpath("mlruns").as_uri())
        tracker = tracking.MLflowTracker(experiment_name=run_name, logging_dir=str(where / "artifacts"), run_name=run_name)
    tracker.main_process_only = False
    tracker.start()
    tracker.store_init_configuration(flat_config(config))
    return tracker


def flat_config(values: dict, prefix: str = "") -> dict[str, bool | int | float | str]:
    """Nested JSON values as one level of scalars (`train.lr`), as hyperparameter tables want them."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        elif value is not None:
            flat[name] = str(value)
    return flat
