"""Every setting of the API in one place, read from `OUTLIER_LAB_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from outlier_core.load.placement import Placement, parse_device_map


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OUTLIER_LAB_", env_file=None, extra="ignore")

    model: str = "smollm2-135m"  # registry name, Hugging Face id or local directory
    device: str | None = None  # None: cuda when present, else cpu
    dtype: str | None = None  # None: bf16/fp16 on CUDA, fp32 on CPU
    # spread the served model over devices with accelerate instead of putting it on `device`:
    # "auto", "balanced", "sequential", or a JSON object of module name -> device (0, "cuda:1", "cpu", "disk")
    device_map: str | None = None
    max_memory: str | None = None  # with a device map strategy: JSON object of device -> budget, e.g. {"0": "70GiB"}
    offload_folder: Path | None = None  # where "disk" layers of a device map go (default: a temporary folder)
    host: str = "127.0.0.1"  # loopback unless deliberately exposed (then set api_key)
    port: int = Field(default=8000, ge=1, le=65535)
    api_key: str | None = None  # when set, every route but health needs header X-API-Key
    max_tokens: int = Field(default=1024, ge=2)  # longest prompt accepted, BOS included
    runs_dir: Path = Path("runs")  # fine-tune runs and saved masks live here
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)  # room for a large mask import
    max_mask_coordinates: int = Field(default=4_000_000, ge=1)  # distinct parameters one mask may select
    max_masks: int = Field(default=200, ge=1)  # masks kept under runs_dir/masks
    max_mask_disk_bytes: int = Field(default=2 * 2**30, ge=2**20)  # what the masks' files may take together
    max_eval_tokens: int = Field(default=4096, ge=2)  # evaluation text scored per request (the bundled prose is ~3,300)
    request_seconds: float = Field(default=300.0, gt=0)  # an evaluation still scoring windows after this stops with a 422
    model_dirs: list[Path] = []  # POST /api/model loads local folders only under these (JSON list); none by default
    hub_models: bool = True  # POST /api/model may load Hugging Face ids (from the local cache)
    open_docs: bool = False  # with api_key set, /docs and /openapi.json need the key too unless this is true
    finetune_memory_share: float = Field(default=0.8, gt=0, le=1)  # a fine-tune estimated past this share of free memory gets 422
    max_train_tokens: int = Field(default=131_072, ge=2)  # a fine-tune's data_text, in tokens (~500 KB of English)
    max_task_data_bytes: int = Field(default=4 * 2**20, ge=1024)  # an uploaded task data file (POST /api/task-data)
    max_concurrent_runs: int = Field(default=1, ge=1)  # fine-tune run processes at once
    max_queued_runs: int = Field(default=16, ge=0)  # waiting beyond those; more get 429
    run_memory_mb: int | None = Field(default=None, ge=64)  # address-space cap of each CPU run process (RLIMIT_AS)
    run_cancel_timeout_s: float = Field(default=30.0, gt=0)  # a cancelled run not stopped by then is killed
    keep_runs_on_shutdown: bool = False  # leave runs training when the server stops; the next one reattaches

    def placement(self) -> Placement | None:
        """The device map the served model is spread with, if the settings give one."""
        folder = str(self.offload_folder) if self.offload_folder else None
        return parse_device_map(self.device_map, self.max_memory, folder)
