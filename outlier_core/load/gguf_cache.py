"""Turn a GGUF checkpoint into a plain safetensors folder once, so later loads are instant.

Loading from GGUF dequantizes every tensor (~13 s on 2 cores for SmolLM2-135M), and a
GGUF-loaded model refuses `save_pretrained`. We copy its state dict into a model built
`from_config` (without `quantization_config`) and save that, keyed by the GGUF's hash.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

_DONE_MARKER = "outlier-lab-complete"


def cache_root() -> Path:
    """Where converted checkpoints live; `OUTLIER_LAB_CACHE` overrides the default."""
    default = Path.home() / ".cache" / "outlier-lab"
    return Path(os.environ.get("OUTLIER_LAB_CACHE", default))


def file_digest(path: Path, chunk_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def converted_folder(gguf_path: Path) -> Path:
    """Return a folder holding `model.safetensors`, config and tokenizer for `gguf_path`.

    Converts on the first call (slow, logged) and reuses the result afterwards.
    """
    target = cache_root() / "gguf" / file_digest(gguf_path)[:20]
    if (target / _DONE_MARKER).exists():
        return target
    log.info("converting %s to safetensors once (later loads take about a second)", gguf_path.name)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(quantized.config).from_dict(config_dict)
    config.architectures = [type(quantized).__name__]
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict())
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    plain.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / "source.txt").write_text(f"{gguf_path}\n")
    (partial / _DONE_MARKER).touch()
    try:
        partial.rename(target)  # atomic: a folder at `target` is always complete
    except OSError:
        if not (target / _DONE_MARKER).exists():
            raise
        shutil.rmtree(partial)  # another process finished the same conversion first
    return target
