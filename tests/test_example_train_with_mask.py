"""examples/train_with_mask.py runs as documented: a mask from `outlier-lab mask suggest`, a few
Trainer steps on the tiny model, and a saved Hugging Face folder whose weights differ from the
base only at the mask's coordinates (compared with an independently built copy of the model)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from outlier_core.load.models import tiny_random_hf
from outlier_core.select.mask_files import load_mask

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> None:
    done = subprocess.run([sys.executable, *args], check=False, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]


def test_the_example_trains_only_the_mask_of_a_suggested_mask(tmp_path):
    # a low norm threshold, so the random tiny model's norms offer dozens of coordinates
    run("-m", "app.cli.main", "mask", "suggest", "--model", "tiny-random", "--device", "cpu", "--budget", "2000",
        "--norm-k", "1.5", "--out", str(tmp_path / "mask.json"))
    mask = load_mask(tmp_path / "mask.safetensors")
    assert mask.count > 10

    out = tmp_path / "tuned"
    run("examples/train_with_mask.py", "--model", "tiny-random", "--mask", str(tmp_path / "mask.safetensors"), "--steps", "3", "--out", str(out))

    assert (out / "config.json").is_file()
    saved = load_file(str(out / "model.safetensors"))
    base = {n: p.detach() for n, p in tiny_random_hf()[0].named_parameters()}
    assert saved.keys() == base.keys()  # the usual names; the tied LM head is stored once
    changed = 0
    for name, weight in saved.items():
        selected = torch.zeros(weight.numel(), dtype=torch.bool)
        if name in mask.coordinates:
            selected[mask.coordinates[name]] = True
        moved = (weight != base[name]).flatten()
        assert not (moved & ~selected).any(), f"{name} changed outside the mask"
        changed += int(moved.sum())
    assert changed == mask.count  # three Adam steps move every selected norm entry
