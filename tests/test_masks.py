"""Selection masks: counts, files, validation, trimming, the dim map and the outlier rules.

References are built by hand: dense boolean tensors filled slice by slice, counts worked
out on paper, plain `nn.Linear` arithmetic for the layout convention, planted outliers.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from app.cli.main import main as cli_main
from outlier_core.contract import to_json
from outlier_core.errors import InputError
from outlier_core.load.models import load_model
from outlier_core.select import mask_rules
from outlier_core.select.mask_files import from_json, from_safetensors_bytes, load_mask
from outlier_core.select.masks import SelectionMask, base_parameters
from tests.conftest import PROSE
from tests.mask_reference import dense_reference

Q = "model.layers.1.self_attn.q_proj.weight"  # (64, 64)
K = "model.layers.1.self_attn.k_proj.weight"  # (32, 64)
DOWN = "model.layers.2.mlp.down_proj.weight"  # (64, 128)
NORM = "model.layers.0.input_layernorm.weight"  # (64,)


def sample_mask(tiny) -> SelectionMask:
    mask = SelectionMask.empty(tiny, "sample")
    mask = mask.add(tiny, Q, "rows", [1, 2], "click")
    mask = mask.add(tiny, Q, "columns", [3], "rule x")
    mask = mask.add(tiny, Q, "entries", [[1, 3], [10, 11]], "click")  # (1, 3) is already in row 1
    mask = mask.add(tiny, NORM, "entries", [[5], [60]], "norm rule")
    return mask.add(tiny, DOWN, "entries", [[63, 127], [0, 0]], "super weight")


def test_count_counts_overlaps_once(tiny):
    mask = sample_mask(tiny)
    # q_proj: rows 1, 2 (128) + column 3 (64, two already in the rows) + entry (10, 11) = 191
    assert mask.counts() == {Q: 128 + 62 + 1, NORM: 2, DOWN: 2}
    assert mask.count == 195
    assert mask.share == pytest.approx(195 / sum(p.numel() for p in base_parameters(tiny).values()))
    assert mask.count == sum(int(d.sum()) for d in dense_reference(mask).values())


def test_json_and_safetensors_round_trip_exactly(tiny, tmp_path):
    mask = sample_mask(tiny)
    json_path, tensor_path = mask.save(tmp_path / "m.json")
    from_json_file = load_mask(json_path)
    from_tensor_file = load_mask(tensor_path)
    assert from_json_file.same_as(mask) and from_tensor_file.same_as(mask)
    assert [p.source for p in from_tensor_file.parts] == ["click", "rule x", "click", "norm rule", "super weight"]
    stored = load_file(str(tensor_path))
    for name, dense in dense_reference(mask).items():
        assert stored[name].dtype == torch.int64
        assert torch.equal(stored[name], torch.nonzero(dense))  # (K, ndim), row-major like nonzero
    manifest = json.loads(json_path.read_text())
    assert manifest["count"] == 195 and manifest["parts"][3]["index"] == [[5], [60]]


def test_add_validates_against_the_model(tiny):
    mask = SelectionMask.empty(tiny, "m")
    with pytest.raises(InputError) as err:
        mask.add(tiny, "model.layers.9.mlp.down_proj.weight", "entries", [[0, 0]], "click")
    assert err.value.field == "parameter"
    with pytest.raises(InputError) as err:
        mask.add(tiny, K, "rows", [32], "click")
    assert err.value.field == "part.index" and "out of range" in err.value.reason
    with pytest.raises(InputError) as err:
        mask.add(tiny, NORM, "columns", [1], "click")
    assert err.value.field == "part.kind"


def mutate(payload: dict, path: list, value) -> dict:
    payload = json.loads(json.dumps(payload))
    target = payload
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return payload


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (["format"], "something-else", "mask.format"),
        (["name"], "", "mask.name"),
        (["model"], KeyError, "mask.model"),
        (["model", "n_params"], -3, "mask.model.n_params"),
        (["parts"], {"a": 1}, "mask.parts"),
        (["parts", 0, "kind"], "diagonal", "mask.parts[0].kind"),
        (["parts", 0, "index"], [1, 64], "mask.parts[0].index"),
        (["parts", 0, "index"], [-1], "mask.parts[0].index"),
        (["parts", 0, "index"], [1.5], "mask.parts[0].index"),
        (["parts", 0, "index"], [True], "mask.parts[0].index"),
        (["parts", 0, "index"], KeyError, "mask.parts[0].index"),
        (["parts", 2, "index"], [[1, 3, 0]], "mask.parts[2].index"),
        (["parts", 2, "index"], [[1, 3], [4]], "mask.parts[2].index"),
        (["parts", 0, "parameter"], "model.layers.1.self_attn.x_proj.weight", "mask.parts[0].parameter"),
        (["parts", 0, "source"], "", "mask.parts[0].source"),
        (["parts", 3, "kind"], "rows", "mask.parts[3].kind"),
        (["parameters", NORM, "shape"], [0], f"mask.parameters[{NORM}].shape"),
    ],
)
def test_malformed_json_is_rejected_naming_the_field(tiny, path, value, field):
    payload = to_json(sample_mask(tiny))
    from_json(payload)  # the unmutated manifest loads
    with pytest.raises(InputError) as err:
        from_json(mutate(payload, path, value))
    assert err.value.field == field


def test_mismatched_masks_are_rejected(tiny):
    payload = to_json(sample_mask(tiny))
    unknown = mutate(mutate(payload, ["parameters", "model.layers.7.mlp.up_proj.weight"], {"shape": [64, 64]}), ["parts", 0, "parameter"], "model.layers.7.mlp.up_proj.weight")
    with pytest.raises(InputError) as err:
        from_json(unknown).validate(tiny)
    assert err.value.field == "mask.parts[0].parameter"
    other_model = mutate(payload, ["model", "n_params"], 135_000_000)
    with pytest.raises(InputError) as err:
        from_json(other_model).validate(tiny)
    assert err.value.field == "mask.model"
    other_shape = mutate(payload, ["parameters", Q, "shape"], [64, 65])
    with pytest.raises(InputError) as err:
        from_json(other_shape).validate(tiny)
    assert err.value.field == "mask.model"


def test_malformed_safetensors_are_rejected(tiny):
    good = sample_mask(tiny).to_safetensors_bytes()
    for bad in (b"", b"not a safetensors file at all", good[:40]):
        with pytest.raises(InputError) as err:
            from_safetensors_bytes(bad)
        assert err.value.field == "mask"
    from safetensors.torch import load, save

    tensors = load(good)
    tensors[Q] = tensors[Q][:-1]  # coordinates that disagree with the parts
    metadata = json.loads(good[8 : 8 + int.from_bytes(good[:8], "little")])["__metadata__"]
    with pytest.raises(InputError) as err:
        from_safetensors_bytes(save(tensors, metadata=metadata))
    assert "disagree" in err.value.reason


def test_trim_fills_the_budget_in_part_order(tiny):
    mask = SelectionMask.empty(tiny, "t")
    mask = mask.add(tiny, NORM, "entries", [[0], [1], [2], [3], [4]], "a")
    mask = mask.add(tiny, Q, "rows", [7, 8], "b")  # 64 each
    mask = mask.add(tiny, K, "entries", [[0, 0], [0, 1], [0, 2]], "c")
    trimmed = mask.trimmed(70)  # 5 entries, then one row (64) leaves 1, the second row does not fit, then 1 entry
    assert trimmed.count == 70
    assert [(p.parameter, p.index.tolist()) for p in trimmed.parts] == [(NORM, [[0], [1], [2], [3], [4]]), (Q, [7]), (K, [[0, 0]])]
    assert mask.trimmed(10_000).count == mask.count
    with pytest.raises(InputError):
        mask.trimmed(0)


def test_random_like_matches_size_and_shape_and_is_seeded(tiny):
    mask = sample_mask(tiny)
    first, again, other = mask_rules.random_like(mask, 0), mask_rules.random_like(mask, 0), mask_rules.random_like(mask, 1)
    assert first.counts() == mask.counts()
    assert first.same_as(again) and not first.same_as(other)
    kinds = lambda m: sorted((p.parameter, p.kind, len(p.index)) for p in m.parts if p.kind != "entries")  # noqa: E731
    assert kinds(first) == kinds(mask)  # two random rows and one random column of q_proj
    assert not torch.equal(first.coordinates[DOWN], mask.coordinates[DOWN])


def test_dim_parts_follow_the_hf_layout(tiny):
    """A column W[:, d] is all that reads input d; a row W[d, :] is all that writes output d."""
    dim = 5
    parts = {(p.parameter.split(".")[-2], p.kind): p for p in mask_rules.dim_parts(tiny, 1, dim)}
    assert set(parts) == {
        ("input_layernorm", "entries"), ("post_attention_layernorm", "entries"),
        ("q_proj", "columns"), ("k_proj", "columns"), ("v_proj", "columns"), ("gate_proj", "columns"), ("up_proj", "columns"),
        ("o_proj", "rows"), ("down_proj", "rows"),
    }
    torch.manual_seed(0)
    x = torch.randn(3, 64)
    reads = torch.nn.Linear(64, 32, bias=False)  # like k_proj
    selected = dense_reference(SelectionMask.empty(tiny, "k").with_parts([parts[("k_proj", "columns")]], {K: (32, 64)}))[K]
    with torch.no_grad():
        reads.weight[selected] = 0.0
    x_changed = x.clone()
    x_changed[:, dim] += 100.0
    assert torch.equal(reads(x), reads(x_changed))  # nothing left reads dim 5
    writes = torch.nn.Linear(128, 64, bias=False)  # like down_proj, [out=d_model, in=d_mlp]
    with torch.no_grad():
        writes.weight[dim, :] = 0.0  # the row the map selects for "writes"
    assert torch.all(writes(torch.randn(3, 128))[:, dim] == 0)
    assert parts[("down_proj", "rows")].index.tolist() == [dim]


def test_window_sparsity_keeps_the_largest_layer_per_window():
    def cand(layer: int, score: float):
        return mask_rules.Candidate("w", "entries", [0], score, layer, "s")

    candidates = [cand(0, 5), cand(1, 9), cand(1, 2), cand(2, 4), cand(5, 3), cand(6, 7)]
    kept = mask_rules.window_sparsity(candidates, 1)
    assert sorted({c.layer for c in kept}) == [1, 6]  # 1 beats 0 and 2; 6 beats 5
    assert len([c for c in kept if c.layer == 1]) == 2  # a kept layer keeps all its outliers
    assert mask_rules.window_sparsity(candidates, 0) == candidates


@pytest.fixture(scope="module")
def planted():
    """A private tiny model with a super weight and a norm outlier planted by hand."""
    model = load_model("tiny-random", device="cpu")
    weights = base_parameters(model)
    with torch.no_grad():
        weights["model.layers.1.mlp.down_proj.weight"][7, 3] = 2000.0  # writes dim 7 through neuron 3
        weights["model.layers.1.mlp.up_proj.weight"][3, :] = 0.5  # ... which fires on every token
        weights["model.layers.1.mlp.gate_proj.weight"][3, :] = 0.5
        weights["model.layers.2.input_layernorm.weight"][9] = 40.0
    return model


def test_rules_find_planted_outliers_and_respect_the_budget(planted):
    prompt = mask_rules.prompt_from_text(planted, "The ferry leaves twice a day, at seven and at four.", True, 64)
    suggestion = mask_rules.suggest_mask(planted, prompt, 40)
    mask = suggestion.mask
    assert mask.count <= 40
    first = mask.parts[0]
    assert (first.parameter, first.index.tolist()[0]) == ("model.layers.1.mlp.down_proj.weight", [7, 3])
    assert first.source.startswith("super_weights")
    norm_parts = [p for p in mask.parts if p.parameter == "model.layers.2.input_layernorm.weight"]
    assert [9] in norm_parts[0].index.tolist()
    only_norms = mask_rules.suggest_mask(planted, prompt, 1, mask_rules.RuleConfig(rules=("norm_outliers",)))
    assert only_norms.mask.count == 1 and only_norms.mask.parts[0].index.tolist() == [[9]]  # the largest |z| first


def test_rule_config_rejects_bad_settings():
    with pytest.raises(InputError) as err:
        mask_rules.RuleConfig(rules=("super_weights", "magic"))
    assert err.value.field == "rules"
    with pytest.raises(InputError) as err:
        mask_rules.RuleConfig(window=-1)
    assert err.value.field == "window"


def test_cli_mask_suggest_writes_both_files(tmp_path, capsys):
    out = tmp_path / "masks" / "tiny.json"
    code = cli_main(["mask", "suggest", "--model", "tiny-random", "--device", "cpu", "--budget", "50", "--text", "A short test sentence.", "--out", str(out), "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["files"] == [str(out), str(out.with_suffix(".safetensors"))]
    assert load_mask(out).same_as(load_mask(out.with_suffix(".safetensors")))
    assert printed["mask"]["count"] == load_mask(out).count <= 50
    assert cli_main(["mask", "show", str(out)]) == 0


@pytest.mark.real
def test_rules_find_the_super_weights_of_smollm2(smol):
    """Measured: down_proj[507, 1487] = 6.07 and [507, 1229] = 5.88 at layer 11 write dim 507."""
    prompt = mask_rules.prompt_from_text(smol, PROSE, True, 64)
    mask = mask_rules.suggest_mask(smol, prompt, 64, mask_rules.RuleConfig(rules=("super_weights",))).mask
    picked = {tuple(i) for p in mask.parts if p.parameter == "model.layers.11.mlp.down_proj.weight" for i in p.index.tolist()}
    assert {(507, 1487), (507, 1229)} <= picked
    with pytest.raises(InputError) as err:
        mask.validate(load_model("tiny-random", device="cpu"))
    assert err.value.field == "mask.model"


def test_cli_rule_names_mirror_the_core():
    from app.cli import mask_cmd

    assert mask_cmd.RULES == mask_rules.RULES
