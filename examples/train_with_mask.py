"""Train exactly the coordinates of an Outlier Lab mask with plain Hugging Face tools.

    outlier-lab mask suggest --model smollm2-135m --budget 10000 --out masks/outliers.json
    python examples/train_with_mask.py --model smollm2-135m --mask masks/outliers.safetensors --steps 50 --out tuned/

The model is a plain `transformers` model (no TransformerLens). The mask becomes a peft adapter
(`OutlierMaskConfig`, the `outlier_mask` method): only its coordinates train, norm weights
included, and AdamW's weight decay reaches nothing else. The Hugging Face `Trainer` trains a
few steps on the bundled prose corpus; the merged model is saved with `save_pretrained`, so
OUT is an ordinary model folder that differs from the base only at the mask's coordinates.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import torch
from peft import get_peft_model
from transformers import Trainer, TrainingArguments

from outlier_core.intervene.corpus import bundled
from outlier_core.load.models import resolve_spec
from outlier_core.tune.peft_mask import OutlierMaskConfig

log = logging.getLogger("train_with_mask")


class Blocks(torch.utils.data.Dataset):
    """Packed token blocks (N, S); each is its own label (the model shifts them)."""

    def __init__(self, blocks: torch.Tensor):
        self.blocks = blocks

    def __len__(self) -> int:
        return self.blocks.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.blocks[i], "labels": self.blocks[i]}


def corpus_blocks(tokenizer, bos_token_id: int, seq_len: int) -> torch.Tensor:
    """The bundled prose corpus as (N, seq_len) blocks: BOS, then seq_len - 1 tokens."""
    ids = tokenizer(bundled("prose").text, add_special_tokens=False).input_ids
    body = seq_len - 1
    n = len(ids) // body
    if n == 0:
        raise SystemExit(f"--seq-len {seq_len} is longer than the bundled corpus")
    blocks = torch.tensor(ids[: n * body]).view(n, body)  # (N, S - 1)
    return torch.cat([torch.full((n, 1), bos_token_id), blocks], dim=1)  # (N, S)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a registry name (smollm2-135m, tiny-random, ...) or a Hugging Face model directory")
    parser.add_argument("--mask", required=True, help="MASK.safetensors or MASK.json exported by `outlier-lab mask suggest`")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps (default: %(default)s)")
    parser.add_argument("--out", required=True, help="where the merged model is saved")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=4, help="blocks per step (default: %(default)s)")
    parser.add_argument("--seq-len", type=int, default=64, help="tokens per block, BOS included (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    # a registry name resolves to a plain HF model (SmolLM2: the GGUF converted once to a
    # safetensors folder; tiny-random: built from a config); a directory loads as it is
    model, tokenizer = resolve_spec(args.model).load_hf(torch.float32)
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else model.config.bos_token_id

    model = get_peft_model(model, OutlierMaskConfig(mask=args.mask, task_type="CAUSAL_LM"))
    trainable, total = model.get_nb_trainable_parameters()
    log.info("training %d of %d parameters: the mask's coordinates", trainable, total)

    with tempfile.TemporaryDirectory() as scratch:  # Trainer's own output; OUT gets the model only
        training = TrainingArguments(
            output_dir=scratch,
            max_steps=args.steps,
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.lr,
            lr_scheduler_type="constant",
            weight_decay=0.1,  # decays the deltas towards the base; the other weights have no optimizer state
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            seed=0,
            dataloader_pin_memory=torch.cuda.is_available(),
        )
        trainer = Trainer(model=model, args=training, train_dataset=Blocks(corpus_blocks(tokenizer, bos, args.seq_len)))
        trainer.train()

    merged = model.merge_and_unload()  # base + delta written into the weights; a plain transformers model again
    merged.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    log.info("saved the merged model to %s", Path(args.out))


if __name__ == "__main__":
    main()
