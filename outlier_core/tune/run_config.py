"""One run's configuration: everything its process needs, as one JSON file in its folder.

    FOLDER/run_config.json   what to train (this file; it replays the run)
    FOLDER/process.json      the launcher's record of the run's main process: pid, start time
    FOLDER/run.log           the process's stdout and stderr
    FOLDER/status.json       progress and the final state, rewritten by the run as it goes
    FOLDER/result.json       the comparison, once the run is done
    FOLDER/comparison.json, FOLDER/<method>/...   as `comparison` writes them

A sweep trial, an API job and a CLI fine-tune are each one config, one process, one folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ConfigDict, TypeAdapter, ValidationError

from outlier_core.contract import to_json, write_json
from outlier_core.errors import InputError
from outlier_core.intervene.corpus import BUNDLED, Corpus, from_text
from outlier_core.tune.mask_recipe import MaskRecipe
from outlier_core.tune.methods import METHODS
from outlier_core.tune.sharding import SHARDINGS
from outlier_core.tune.task_data import BUNDLED_TASKS
from outlier_core.tune.tracking import TRACKERS, Tracker
from outlier_core.tune.train_data import TrainConfig, load_corpus

CONFIG_FILE = "run_config.json"
UPLOADED_TEXT = "your text"  # the data's name when the text came inline (an upload)


@dataclass(frozen=True)
class RunConfig:
    model: str  # registry name, Hugging Face id or local directory
    mask: str | None = None  # MASK.json or MASK.safetensors (relative: read from the config's folder); or `recipe`
    baselines: tuple[str, ...] = ()  # trained after the mask, from the same base
    train: TrainConfig = field(default_factory=TrainConfig)
    data: str | None = None  # a bundled corpus or task, a .txt/.jsonl/.json path or a datasets folder (relative: from the config's folder); None: the default
    data_text: str | None = None  # or the text itself, in place of `data`
    device: str | None = None  # None: cuda when present; under N processes each rank takes its own GPU
    dtype: str | None = None
    processes: int = 1  # data-parallel processes (torchrun); the global batch is train.batch_size
    track: Tracker | None = None  # log curves and results through accelerate's tracker
    recipe: MaskRecipe | None = None  # the mask the outlier rules suggest inside the run, in place of `mask`
    methods: tuple[str, ...] | None = None  # exactly these methods, in place of the mask then the baselines (a sweep trial trains one)
    eval_tasks: tuple[str, ...] = ()  # lm-eval tasks scored after training, on the base and on each method with its deltas on
    eval_limit: int | None = None  # each lm-eval task's first items only
    eval_base: bool = True  # score the base model too (a sweep asks it of one trial: the base is the same for all)
    shard: str | None = None  # "fsdp": the model sharded over the processes (`sharded`), the mask alone trained; None: each process holds it whole

    __pydantic_config__ = ConfigDict(json_schema_serialization_defaults_required=True)

    def __post_init__(self) -> None:
        if isinstance(self.processes, bool) or not isinstance(self.processes, int) or self.processes < 1:
            raise InputError("processes", "must be a whole number >= 1")
        if self.track is not None and self.track not in TRACKERS:
            raise InputError("track", f"must be one of {', '.join(TRACKERS)}")
        if (self.mask is None) == (self.recipe is None):
            raise InputError("mask", "give a mask file or a recipe for one, not both")
        if self.methods is not None and (not self.methods or any(m not in METHODS for m in self.methods)):
            raise InputError("methods", f"choose from {', '.join(METHODS)}")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise InputError("eval_limit", "must be a whole number >= 1")
        if self.shard is not None:
            self._check_shard()

    def _check_shard(self) -> None:
        """What a sharded run cannot do, refused before a process starts."""
        if self.shard not in SHARDINGS:
            raise InputError("shard", f"must be one of {', '.join(SHARDINGS)}")
        methods = self.methods or ("mask", *self.baselines)
        if methods != ("mask",):
            raise InputError("shard", f"a sharded run trains the mask alone, not {', '.join(methods)}")
        if self.eval_tasks:
            raise InputError("shard", "a sharded run scores no lm-eval tasks")

    def corpus(self, folder: Path) -> Corpus:
        if self.data_text is not None:
            return from_text(self.data_text, UPLOADED_TEXT, "data_text")
        if self.data is None or self.data in BUNDLED:
            return load_corpus(self.data)
        return load_corpus(str(_beside(folder, self.data)))

    def data_source(self, folder: Path) -> str | None:
        """`data` as `train_data.load_data` takes it: a bundled name as it is, a path from `folder`."""
        return self.data if self.bundled_data else str(_beside(folder, self.data))

    @property
    def bundled_data(self) -> bool:
        """`data` names what ships with the project (or the default): no file of the user's."""
        return self.data is None or self.data in BUNDLED or self.data in BUNDLED_TASKS

    def mask_path(self, folder: Path) -> Path:
        return _beside(folder, self.mask)


def check_inputs(config: RunConfig, folder: Path) -> None:
    """InputError naming `mask` or `data` when a file the run reads from `folder` is gone."""
    if config.mask is not None and not config.mask_path(folder).is_file():
        raise InputError("mask", f"{config.mask_path(folder)} is gone")
    if config.data_text is None and not config.bundled_data and not Path(config.data_source(folder)).exists():
        raise InputError("data", f"{config.data_source(folder)} is gone")


def _beside(folder: Path, path: str) -> Path:
    given = Path(path).expanduser()
    return given if given.is_absolute() else folder / given


def write_config(folder: str | Path, config: RunConfig) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / CONFIG_FILE, config)
    return folder / CONFIG_FILE


def read_config(path: str | Path) -> RunConfig:
    """A config file back; InputError naming `config` (or the bad setting) when it does not hold one."""
    path = Path(path)
    try:
        return TypeAdapter(RunConfig).validate_json(path.read_bytes())
    except OSError as err:
        raise InputError("config", f"{path} is not readable ({err.strerror})") from err
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "config"
        raise InputError("config", f"{path}: {where}: {first['msg']}") from err


def config_json(config: RunConfig) -> dict:
    """The config as JSON values (what trackers record as the run's hyperparameters)."""
    return to_json(config)
