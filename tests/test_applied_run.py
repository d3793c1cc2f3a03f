"""Runs put back on the model: a real comparison on the tiny model, then each method attached,
switched off and on, detached and merged.

References: the saved files read with safetensors directly and written by hand into a plain
Hugging Face copy of the tiny model (`tiny_random_hf`, never bridged); the bridge's own
logits before attaching; copies of every base weight compared bit for bit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from outlier_core.contract import to_json
from outlier_core.errors import InputError
from outlier_core.load.model_cache import ModelCache, state_token
from outlier_core.load.models import LoadedModel, load_model, tiny_random_hf
from outlier_core.select.masks import SelectionMask, base_parameters
from outlier_core.tune import train_data
from outlier_core.tune.applied_run import (
    AppliedRun,
    RunNotFound,
    attach_run,
    run_folder,
)
from outlier_core.tune.comparison import compare
from tests.hf_reference import sparse_edited

DOWN = "model.layers.1.mlp.down_proj.weight"  # (64, 128)
NORM = "model.layers.0.post_attention_layernorm.weight"  # (64,)
IDS = torch.tensor([[1, 72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100, 33, 10]])
RUN_ID = "20990101-000000-abcdef"


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    """A tiny model of this module's own: merges change it for good."""
    return load_model("tiny-random", device="cpu")


@pytest.fixture(scope="module")
def runs(model: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real comparison of every method, a few steps each, with rates that move the weights visibly."""
    mask = SelectionMask.empty(model, "clicks").add(model, DOWN, "rows", [3, 7], "click").add(model, NORM, "entries", [[5], [17]], "click")
    config = train_data.TrainConfig(steps=3, lr=0.05, full_lr=1e-3, batch_size=2, seq_len=16)
    data = train_data.make_data(model, train_data.load_corpus("code"), config)
    folder = tmp_path_factory.mktemp("runs") / RUN_ID
    compare(model, mask, ("random", "ln", "lora", "full"), data, config, folder)
    return folder


def logits(model: LoadedModel) -> torch.Tensor:
    with torch.no_grad():
        return model.bridge(IDS, return_type="logits")


def snapshot(model: LoadedModel) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in base_parameters(model).items()}


def assert_base(model: LoadedModel, saved: dict[str, torch.Tensor]) -> None:
    names = [n for n, _ in model.hf_model.named_parameters()]
    assert not any(".parametrizations." in n or "lora_" in n for n in names)
    current = base_parameters(model)
    assert current.keys() == saved.keys()
    assert all(torch.equal(current[n], saved[n]) for n in saved)


def hf_logits(hf: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return hf(IDS).logits


def test_a_sparse_run_computes_base_plus_its_file_and_switches_off_and_detaches_exactly(model, runs):
    saved, base_logits = snapshot(model), logits(model)
    for method in ("mask", "random", "ln"):
        applied = attach_run(model, runs, method)
        try:
            on = logits(model)
            assert torch.allclose(on, hf_logits(sparse_edited(runs / method / "deltas.safetensors")), atol=1e-5)
            assert not torch.allclose(on, base_logits, atol=1e-4)  # the run moved something
            applied.set_enabled(False)
            assert torch.equal(logits(model), base_logits)
            applied.set_enabled(True)
            assert torch.equal(logits(model), on)
            record = json.loads((runs / method / "run.json").read_text())
            assert to_json(applied.state) == {
                "run": RUN_ID, "method": method, "name": record["name"], "model": "tiny-random", "trainable": record["trainable"],
                "enabled": True, "merged": False, "serving": "base + deltas",
            }
        finally:
            applied.detach()
        assert_base(model, saved)
        assert torch.equal(logits(model), base_logits)


def test_a_lora_run_computes_w_plus_b_a_alpha_over_r(model, runs):
    saved, base_logits = snapshot(model), logits(model)
    path = runs / "lora" / "deltas.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        factors = {key: f.get_tensor(key) for key in f.keys()}
    rank, alpha, targets = int(meta["rank"]), float(meta["alpha"]), json.loads(meta["targets"])
    hf, _ = tiny_random_hf()
    params = dict(hf.named_parameters())
    with torch.no_grad():
        for target in targets:
            b, a = factors[f"{target}.lora_B"], factors[f"{target}.lora_A"]  # (out, r), (r, in)
            assert b.abs().max() > 0  # trained: B starts at zero
            params[f"{target}.weight"] += b @ a * (alpha / rank)
    applied = attach_run(model, runs, "lora")
    try:
        assert applied.trainable == sum(t.numel() for t in factors.values())
        on = logits(model)
        assert torch.allclose(on, hf_logits(hf.eval()), atol=1e-5)
        applied.set_enabled(False)
        assert torch.equal(logits(model), base_logits)
        applied.set_enabled(True)
        assert torch.equal(logits(model), on)
    finally:
        applied.detach()
    assert_base(model, saved)


def test_a_full_run_puts_the_files_weights_in_place(model, runs):
    saved, base_logits = snapshot(model), logits(model)
    tuned = load_file(str(runs / "full" / "deltas.safetensors"))
    applied = attach_run(model, runs, "full")
    try:
        assert applied.weights_in_place
        assert all(torch.equal(p, tuned[n]) for n, p in base_parameters(model).items())
        assert any(not torch.equal(tuned[n], saved[n]) for n in saved)
        applied.set_enabled(False)
        assert_base(model, saved)
        assert torch.equal(logits(model), base_logits)
        applied.set_enabled(True)
        assert all(torch.equal(p, tuned[n]) for n, p in base_parameters(model).items())
    finally:
        applied.detach()
    assert_base(model, saved)


@pytest.mark.parametrize("method", ["mask", "lora", "full"])
def test_merge_makes_base_plus_delta_the_models_own_weights(runs, method):
    fresh = load_model("tiny-random", device="cpu")
    saved = snapshot(fresh)
    applied = attach_run(fresh, runs, method)
    applied.set_enabled(False)  # a merge switches the deltas on first
    applied.merge()
    merged = snapshot(fresh)
    assert applied.merged and applied.enabled and applied.weights_in_place
    assert not any(".parametrizations." in n or "lora_" in n for n, _ in fresh.hf_model.named_parameters())
    if method == "mask":
        expected = dict(saved)
        tensors = load_file(str(runs / "mask" / "deltas.safetensors"))
        for key, index in tensors.items():
            if key.endswith(".index"):
                name = key.removesuffix(".index")
                expected[name] = saved[name].flatten().index_add(0, index, tensors[f"{name}.values"]).view_as(saved[name])
    elif method == "lora":
        path = runs / "lora" / "deltas.safetensors"
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        expected = dict(saved)
        factors = load_file(str(path))
        for target in json.loads(meta["targets"]):
            delta = factors[f"{target}.lora_B"] @ factors[f"{target}.lora_A"] * (float(meta["alpha"]) / int(meta["rank"]))
            expected[f"{target}.weight"] = saved[f"{target}.weight"] + delta
    else:
        expected = load_file(str(runs / "full" / "deltas.safetensors"))
    assert merged.keys() == expected.keys()
    for name in merged:
        assert torch.allclose(merged[name], expected[name], atol=1e-6, rtol=0), name
    assert any(not torch.equal(merged[n], saved[n]) for n in saved)
    for step in (lambda: applied.set_enabled(False), applied.detach, applied.merge):
        with pytest.raises(InputError):
            step()
    assert to_json(applied.state)["merged"] is True
    assert "until the model is reloaded" in to_json(applied.state)["serving"]


def test_every_switch_changes_the_cache_token(model, runs):
    cache = ModelCache()
    calls = []

    def cached_logits() -> torch.Tensor:
        return cache.get(model, "logits", lambda: calls.append(1) or logits(model))

    base = cached_logits()
    tokens = [state_token(model)]
    for method in ("mask", "lora"):
        applied = attach_run(model, runs, method)
        tokens.append(state_token(model))
        on = cached_logits()
        assert not torch.equal(on, base)
        applied.set_enabled(False)
        tokens.append(state_token(model))
        assert torch.equal(cached_logits(), base)  # not the cached "on" answer
        applied.set_enabled(True)
        tokens.append(state_token(model))
        assert torch.equal(cached_logits(), on)
        applied.detach()
        tokens.append(state_token(model))
        assert torch.equal(cached_logits(), base)
    assert len(set(tokens)) == len(tokens)
    assert len(calls) == 1 + 2 * 4


def test_a_merge_through_data_misses_the_cache(runs):
    """peft merges with `weight.data += ...`, which no version counter sees."""
    fresh = load_model("tiny-random", device="cpu")
    cache = ModelCache()
    base = cache.get(fresh, "logits", lambda: logits(fresh))
    applied = attach_run(fresh, runs, "lora")
    applied.merge()
    after = cache.get(fresh, "logits", lambda: logits(fresh))
    assert not torch.equal(after, base)
    assert torch.equal(after, logits(fresh))


# --- refusals --------------------------------------------------------------------------------


def copy_run(runs: Path, tmp_path: Path) -> Path:
    folder = tmp_path / RUN_ID
    shutil.copytree(runs, folder)
    return folder


def refused(model: LoadedModel, folder: Path, method: str, field: str, says: str, error: type = InputError) -> None:
    saved = snapshot(model)
    with pytest.raises(error) as err:
        attach_run(model, folder, method)
    assert err.value.field == field and says in err.value.reason, err.value
    assert_base(model, saved)  # nothing stays attached after a refusal


def test_bad_runs_are_refused_naming_the_field(model, runs, tmp_path):
    folder = copy_run(runs, tmp_path)
    refused(model, folder, "everything", "method", "unknown method")
    shutil.rmtree(folder / "random")
    refused(model, folder, "random", "method", "has no random run", RunNotFound)
    refused(model, tmp_path / "nothing", "mask", "run", "not a fine-tune run", RunNotFound)

    record = json.loads((folder / "ln" / "run.json").read_text())
    (folder / "ln" / "run.json").write_text(json.dumps({**record, "deltas": None}))
    refused(model, folder, "ln", "method", "saved no deltas")

    comparison = json.loads((folder / "comparison.json").read_text())
    other = {**comparison, "mask": {**comparison["mask"], "model": {"name": "smollm2-135m", "n_params": 134515008}}}
    (folder / "comparison.json").write_text(json.dumps(other))
    refused(model, folder, "mask", "run", "was trained on 'smollm2-135m'")
    (folder / "comparison.json").write_text(json.dumps(comparison))


def test_files_that_do_not_match_are_refused(model, runs, tmp_path):
    folder = copy_run(runs, tmp_path)
    shutil.copy(folder / "lora" / "deltas.safetensors", folder / "mask" / "deltas.safetensors")  # LoRA factors where sparse values belong
    refused(model, folder, "mask", "run", "holds no sparse deltas")
    shutil.copy(folder / "mask" / "deltas.safetensors", folder / "full" / "deltas.safetensors")
    refused(model, folder, "full", "run", "holds no full fine-tune weights")
    (folder / "full" / "deltas.safetensors").write_bytes(b"not a safetensors file")
    refused(model, folder, "full", "run", "not a readable safetensors file")

    path = folder / "lora" / "deltas.safetensors"
    with safe_open(str(path), "pt") as f:
        meta, factors = f.metadata(), {key: f.get_tensor(key) for key in f.keys()}
    save_file({k: torch.cat([v, v]) if k.endswith("lora_A") else v for k, v in factors.items()}, str(path), metadata=meta)
    refused(model, folder, "lora", "run", "does not hold rank-")
    save_file(factors, str(path), metadata={**meta, "targets": json.dumps(["model.layers.9.mlp.down_proj"])})
    refused(model, folder, "lora", "run", "which tiny-random does not have")

    values = load_file(str(runs / "random" / "deltas.safetensors"))
    with safe_open(str(runs / "random" / "deltas.safetensors"), "pt") as f:
        meta = f.metadata()
    first = next(k for k in values if k.endswith(".values"))
    save_file({**values, first: values[first].double()[:-1]}, str(folder / "random" / "deltas.safetensors"), metadata=meta)
    refused(model, folder, "random", "run", "values for")


def test_run_ids_are_plain_folder_names(runs):
    root = runs.parent
    assert run_folder(root, RUN_ID) == runs
    for bad in ("..", "../x", "a/b", "/etc", ".hidden", "", "x" * 300, "a\\b"):
        with pytest.raises(InputError) as err:
            run_folder(root, bad)
        assert err.value.field == "run" and not isinstance(err.value, RunNotFound)
    with pytest.raises(RunNotFound):
        run_folder(root, "20990101-000000-000000")


def test_an_applied_run_is_what_it_says(model, runs):
    applied = attach_run(model, runs, "mask")
    try:
        assert isinstance(applied, AppliedRun) and not applied.weights_in_place
        applied.set_enabled(False)
        assert to_json(applied.state)["serving"] == "base only: the deltas are switched off"
    finally:
        applied.detach()
    with pytest.raises(InputError):
        applied.set_enabled(True)  # detached: nothing to switch
