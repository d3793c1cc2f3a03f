"""Fine-tune comparisons: a short real-model run learns, baselines match the budget, the CLI
contract holds, and the model comes back exactly as it was after every method."""

from __future__ import annotations

import json

import pytest
import torch

from app.cli.main import main as cli_main
from outlier_core.errors import InputError
from outlier_core.intervene.corpus import from_text
from outlier_core.load.models import tiny_random_hf
from outlier_core.select import mask_rules
from outlier_core.select.masks import SelectionMask, base_parameters
from outlier_core.tune import train_data
from outlier_core.tune.comparison import compare
from outlier_core.tune.methods import METHODS
from outlier_core.tune.methods.lora import lora_plan, lora_rank_for, lora_targets
from tests.conftest import PROSE

DOWN = "model.layers.1.mlp.down_proj.weight"  # (64, 128) in the tiny model


@pytest.mark.real
def test_a_short_real_run_lowers_the_training_loss(smol, tmp_path):
    prompt = mask_rules.prompt_from_text(smol, PROSE, True, 48)
    mask = mask_rules.suggest_mask(smol, prompt, 200, mask_rules.RuleConfig(rules=("super_weights", "norm_outliers"))).mask
    before = {n: p.detach().clone() for n, p in base_parameters(smol).items() if n in mask.shapes}
    # a few blocks of 12 tokens, one held out; every step trains on all the others (one fixed batch)
    config = train_data.TrainConfig(steps=5, batch_size=8, seq_len=12, eval_fraction=0.25, lr=1e-2)
    data = train_data.make_data(smol, from_text(PROSE, "prose"), config)
    assert 2 <= data.train.shape[0] <= 8 and data.held_out.shape[0] == 1
    result = compare(smol, mask, ("random",), data, config, tmp_path)
    ours, random = result.runs
    assert ours.train_loss[-1] < ours.train_loss[0] - 0.05
    assert ours.trainable == random.trainable == mask.count
    assert ours.changed == random.changed == mask.count
    assert ours.eval_before.perplexity == random.eval_before.perplexity
    assert result.outliers_before["massive"] and ours.outliers_after["massive"]
    assert all(torch.equal(p, before[n]) for n, p in base_parameters(smol).items() if n in before)
    assert not any(".parametrizations." in n for n, _ in smol.hf_model.named_parameters())


def test_cli_finetune_json_contract_and_counts(tmp_path, capsys):
    mask_path = tmp_path / "m.json"
    assert cli_main(["mask", "suggest", "--model", "tiny-random", "--device", "cpu", "--budget", "40", "--text", "Some words.", "--out", str(mask_path)]) == 0
    capsys.readouterr()
    code = cli_main([
        "finetune", "--model", "tiny-random", "--device", "cpu", "--mask", str(mask_path), "--baseline", "random", "ln",
        "--baseline", "lora", "full", "--steps", "2", "--batch-size", "2", "--seq-len", "16", "--data", "code",
        "--runs-dir", str(tmp_path / "runs"), "--json",
    ])
    assert code == 0
    runs = {r["method"]: r for r in json.loads(capsys.readouterr().out)["runs"]}
    assert list(runs) == ["mask", "random", "ln", "lora", "full"]
    for r in runs.values():
        assert {"name", "trainable", "changed", "train_loss", "eval_before", "eval_after", "peak_memory_mb", "seconds"} <= r.keys()
        assert len(r["train_loss"]) == 2 and r["eval_after"]["perplexity"] > 1 and r["seconds"] > 0
    hf, _ = tiny_random_hf()
    plain = dict(hf.named_parameters())  # ties deduplicated, as in the model
    norms = sum(p.numel() for n, p in plain.items() if "norm" in n)
    assert runs["mask"]["trainable"] == runs["random"]["trainable"] == runs["mask"]["changed"] == runs["random"]["changed"] <= 40
    assert runs["ln"]["trainable"] == runs["ln"]["changed"] == norms == 4 * 2 * 64 + 64
    assert runs["full"]["trainable"] == sum(p.numel() for p in plain.values())
    rank = runs["lora"]["lora_rank"]
    assert runs["lora"]["trainable"] == rank * sum(sum(plain[f"{t}.weight"].shape) for t in runs["lora"]["lora_targets"])


def test_every_method_leaves_the_model_as_it_was(tiny, tmp_path):
    saved = {n: p.detach().clone() for n, p in base_parameters(tiny).items()}
    flags = [p.requires_grad for p in tiny.hf_model.parameters()]
    mask = SelectionMask.empty(tiny, "m").add(tiny, DOWN, "columns", [5, 6], "click")
    config = train_data.TrainConfig(steps=2, batch_size=2, seq_len=16, lr=1e-2, full_lr=1e-2)
    data = train_data.make_data(tiny, train_data.load_corpus("code"), config)
    result = compare(tiny, mask, ("random", "ln", "lora", "full"), data, config, tmp_path)
    assert [r.method for r in result.runs] == ["mask", "random", "ln", "lora", "full"]
    assert all(r.changed > 0 for r in result.runs)
    assert result.runs[-1].changed == sum(p.numel() for p in saved.values())  # full: every weight moved
    assert not any(".parametrizations." in n or "lora_" in n for n, _ in tiny.hf_model.named_parameters())
    assert all(torch.equal(p, saved[n]) for n, p in base_parameters(tiny).items())
    assert [p.requires_grad for p in tiny.hf_model.parameters()] == flags
    written = json.loads((tmp_path / "comparison.json").read_text())
    assert [r["name"] for r in written["runs"]] == ["m", "random", "ln_only", f"lora_r{result.runs[3].details['lora_rank']}", "full"]


def test_lora_rank_is_the_closest_count(tiny):
    mask = SelectionMask.empty(tiny, "m").add(tiny, DOWN, "columns", [1], "click")
    targets = lora_targets(tiny, mask)
    assert targets == ["model.layers.1.mlp.down_proj"]  # LoRA where the mask is
    per_rank = 64 + 128  # (out + in) of down_proj
    assert lora_rank_for(64, tiny, targets) == 1  # never below 1
    assert lora_rank_for(2 * per_rank + 90, tiny, targets) == 2  # 474 is closer to 384 than to 576
    assert lora_rank_for(2 * per_rank + 100, tiny, targets) == 3  # 484: 100 above 384, 92 below 576
    norms_only = SelectionMask.empty(tiny, "n").add(tiny, "model.norm.weight", "entries", [[0]], "click")
    assert lora_targets(tiny, norms_only) == [f"model.layers.{l}.self_attn.{p}_proj" for l in range(4) for p in "qv"]
    wide = mask.add(tiny, "model.layers.2.self_attn.q_proj.weight", "entries", [[0, 0]], "click")  # 64 + 1 coordinates
    # rank 1 on both touched projections costs 192 + 128 = 320; on down_proj alone 192, closer to 65
    assert lora_plan(tiny, wide) == (["model.layers.1.mlp.down_proj"], 1)
    big = mask.add(tiny, DOWN, "rows", [0, 1, 2, 3, 4, 5], "click")  # 64 + 6 * 128 - 6 = 826
    assert lora_plan(tiny, big) == (["model.layers.1.mlp.down_proj"], 4)  # 4 * 192 = 768 is closest to 826


def test_data_blocks_start_with_bos_and_split_by_seed(tiny, tmp_path):
    config = train_data.TrainConfig(seq_len=16, eval_fraction=0.2)
    data = train_data.make_data(tiny, train_data.load_corpus("code"), config)
    n_tokens = len(tiny.tokenizer(train_data.load_corpus("code").text, add_special_tokens=False).input_ids)
    assert data.train.shape[0] + data.held_out.shape[0] == n_tokens // 15
    assert torch.all(data.train[:, 0] == tiny.bos_token_id) and torch.all(data.held_out[:, 0] == tiny.bos_token_id)
    again = train_data.make_data(tiny, train_data.load_corpus("code"), config)
    assert torch.equal(data.held_out, again.held_out)
    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text('{"text": "first text"}\n\n"second text"\n')
    assert train_data.load_corpus(str(jsonl)).passages == ("first text", "second text")
    jsonl.write_text('{"text": "ok"}\n{"body": 3}\n')
    with pytest.raises(InputError) as err:
        train_data.load_corpus(str(jsonl))
    assert err.value.field == "data" and "line 2" in err.value.reason
    with pytest.raises(InputError) as err:
        train_data.make_data(tiny, from_text("too short", "t"), config)
    assert err.value.field == "data"


def test_train_config_rejects_bad_settings():
    for settings, field in (({"steps": 0}, "steps"), ({"lr": float("nan")}, "lr"), ({"seq_len": 1}, "seq_len"), ({"eval_fraction": 1.0}, "eval_fraction")):
        with pytest.raises(InputError) as err:
            train_data.TrainConfig(**settings)
        assert err.value.field == field


def test_cli_finetune_reports_a_bad_mask(tmp_path, capsys):
    from app.cli import finetune_cmd

    assert finetune_cmd.BASELINES == METHODS[1:]
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "outlier-lab-mask/1", "name": "b", "parts": []}')
    for path in (tmp_path / "missing.json", broken):
        assert cli_main(["finetune", "--model", "tiny-random", "--mask", str(path)]) == 2
        assert "--mask" in capsys.readouterr().err
