"""`outlier-lab weights --model DIR --json` on a plain Hugging Face folder (config, safetensors,
tokenizer files) holding a config-built model with random weights: one JSON object that
covers every tensor of the checkpoint, with the values of the checkpoint itself."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from app.cli.main import main
from outlier_core.load.models import tiny_random_hf


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The tiny Llama and its byte tokenizer as `save_pretrained` writes them, and nothing else."""
    path = tmp_path_factory.mktemp("tiny-llama")
    hf, tokenizer = tiny_random_hf(seed=3)
    hf.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_folder_is_a_plain_checkpoint(folder):
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names


def test_weights_json_covers_every_tensor(folder, capsys):
    assert main(["weights", "--model", str(folder), "--device", "cpu", "--kinds", "norm,matrix,embedding", "--dims", "3", "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    payload = json.loads(out)
    stored = load_file(folder / "model.safetensors")
    by_name = {p["name"]: p for p in payload["weights"]["parameters"]}
    assert set(by_name) == set(stored)  # every tensor of the checkpoint, and only those
    for name, tensor in stored.items():
        entry = by_name[name]
        values = tensor.double().numpy()
        assert entry["shape"] == list(tensor.shape)
        assert entry["summary"]["mean"] == pytest.approx(values.mean(), rel=1e-9, abs=1e-12)
        assert entry["summary"]["median"] == pytest.approx(np.median(values), rel=1e-12)
        assert entry["summary"]["max"] == float(values.max())
    assert payload["weights"]["model"] == str(folder)
    assert {e["layer"] for e in payload["norm_at_dims"]["entries"]} == {0, 1, 2, 3}


def test_default_kinds_cover_every_norm_and_projection(folder, capsys):
    assert main(["weights", "--model", str(folder), "--device", "cpu", "--dims", "3", "--json"]) == 0
    names = {p["name"] for p in json.loads(capsys.readouterr().out)["weights"]["parameters"]}
    stored = load_file(folder / "model.safetensors")
    assert names == {n for n in stored if "norm" in n or "proj" in n}


def test_random_weights_differ_from_the_registry_model(folder):
    """The folder's weights come from its own seed: a load that fell back to the registry would not show them."""
    stored = load_file(folder / "model.safetensors")
    registry, _ = tiny_random_hf()
    assert not torch.equal(stored["model.layers.0.mlp.down_proj.weight"], registry.state_dict()["model.layers.0.mlp.down_proj.weight"])
