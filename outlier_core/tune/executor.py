"""Many runs: each one config, one process, one folder; here, N at a time, or through Ray.

    outcomes = run_many([(config, folder), ...], concurrent=2)           # on this machine
    outcomes = run_many(runs, ray_address="auto")                         # on a Ray cluster

Locally a thread pool starts and follows up to `concurrent` run processes at once. Through
Ray each run is a Ray task that starts and follows its run process on whichever node Ray
places it, asking Ray for the run's CPUs or GPUs, so Ray's scheduler decides what runs
where and when. On a cluster every node must have the project installed and see the run
folders at the same paths (a shared filesystem); a local Ray needs neither.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from outlier_core.tune.run_config import RunConfig
from outlier_core.tune.run_process import LaunchOptions, RunProcess, follow
from outlier_core.tune.run_status import RunState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOutcome:
    folder: str
    state: RunState
    error: str | None = None


def run_to_end(config: RunConfig, folder: str | Path, options: LaunchOptions = LaunchOptions()) -> RunOutcome:
    """Start one run and wait for it: how it ended."""
    final = follow(RunProcess.launch(folder, config, options), lambda status: None, cancel_timeout_s=options.cancel_timeout_s)
    log.info("run %s %s", Path(folder).name, final.state)
    return RunOutcome(str(folder), final.state, final.error)


def run_many(
    runs: list[tuple[RunConfig, str | Path]],
    concurrent: int = 1,
    ray_address: str | None = None,
    options: LaunchOptions = LaunchOptions(),
) -> list[RunOutcome]:
    """Every (config, folder) run to its end, outcomes in the order given. With `ray_address`
    (or a Ray already initialised in this process) they go through Ray; else `concurrent`
    at a time here."""
    if ray_address is not None or _ray_initialised():
        return _through_ray(runs, ray_address, options)
    with ThreadPoolExecutor(max_workers=max(1, concurrent), thread_name_prefix="run") as pool:
        return list(pool.map(lambda run: run_to_end(run[0], run[1], options), runs))


def _ray_initialised() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized()


def _through_ray(runs: list[tuple[RunConfig, str | Path]], address: str | None, options: LaunchOptions) -> list[RunOutcome]:
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False)
    task = ray.remote(run_to_end)
    refs = [task.options(**_resources(config)).remote(config, str(folder), options) for config, folder in runs]
    return ray.get(refs)


def _resources(config: RunConfig) -> dict:
    """What one run asks Ray for: a GPU per process on CUDA, else a CPU per process."""
    if (config.device or "").startswith("cuda"):
        return {"num_cpus": 1, "num_gpus": config.processes}
    return {"num_cpus": config.processes}
