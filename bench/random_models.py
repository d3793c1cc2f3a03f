"""Llama models built from a config with random weights, saved as Hugging Face folders.

What a real checkpoint looks like on disk (config, safetensors, tokenizer files) at any
size, without a download: the benchmarks measure load, scan and statistics on them. The
byte tokenizer covers 260 ids; a larger `vocab` only adds embedding rows no prompt reads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from outlier_core.load.tokenizers import byte_tokenizer

log = logging.getLogger("bench")


@dataclass(frozen=True)
class LlamaShape:
    d_model: int
    d_ffn: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab: int = 32000

    @property
    def block_params(self) -> int:
        """Parameters of the transformer blocks: what a forward pass multiplies by, bar the unembedding."""
        head = self.d_model // self.n_heads
        attention = 2 * self.d_model * self.d_model + 2 * self.d_model * self.n_kv_heads * head
        return self.n_layers * (attention + 3 * self.d_model * self.d_ffn + 2 * self.d_model)

    @property
    def n_params(self) -> int:
        return self.block_params + 2 * self.vocab * self.d_model + self.d_model  # untied embeddings, final norm

    @property
    def label(self) -> str:
        return f"d{self.d_model}-ffn{self.d_ffn}-L{self.n_layers}"


def random_llama(shape: LlamaShape, seed: int = 0, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """(hf model, tokenizer): transformers' own initialisation, norms drawn around 1 so they are not constant.

    `device`: where the weights are drawn (a GPU draws a 7B model in seconds)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.d_model,
        intermediate_size=shape.d_ffn,
        num_hidden_layers=shape.n_layers,
        num_attention_heads=shape.n_heads,
        num_key_value_heads=shape.n_kv_heads,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    config.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(seed)
    with torch.device(device):
        hf = LlamaForCausalLM(config).to(dtype)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("norm.weight"):
                p.normal_(1.0, 0.1)
    return hf.eval(), tokenizer


def saved_llama(shape: LlamaShape, root: Path, dtype: torch.dtype = torch.float32, device: str = "cpu") -> Path:
    """The folder of a random Llama of `shape` under `root`, written once (config, safetensors, tokenizer)."""
    folder = root / f"{shape.label}-{str(dtype).removeprefix('torch.')}"
    if not (folder / "config.json").exists():
        log.info("building %s (%.0f M parameters)", shape.label, shape.n_params / 1e6)
        hf, tokenizer = random_llama(shape, dtype=dtype, device=device)
        hf.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return folder
