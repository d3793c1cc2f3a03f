"""Interventions, weight edits, reference means and evaluation on the tiny model.

Every effect is checked against a plain Hugging Face model built separately with the same
seed: forward hooks on its decoder layers, weights edited by hand, NLL by log_softmax.
"""

from __future__ import annotations

import json
import math
from typing import Callable

import pytest
import torch

from app.cli.main import main
from outlier_core.contract import to_json
from outlier_core.errors import InputError
from outlier_core.intervene import reference_means as reference_means_module
from outlier_core.intervene.corpus import Corpus, bundled, from_file, from_text
from outlier_core.intervene.evaluate import evaluate
from outlier_core.intervene.interventions import Intervention, intervened
from outlier_core.intervene.loss import Loss
from outlier_core.intervene.reference_means import corpus_windows, reference_means
from outlier_core.intervene.weight_edits import WeightEdit, edited_weights
from outlier_core.load.models import load_model, tiny_random_hf
from outlier_core.load.sites import hook_name
from outlier_core.load.tokens import encode

TEXT = "A small boat crossed the bay at dawn, and the gulls followed it home."
DOWN = "model.layers.1.mlp.down_proj.weight"


@pytest.fixture(scope="module")
def hf():
    """The tiny model again, as plain Hugging Face: the independent reference."""
    model, _ = tiny_random_hf()
    return model.eval()


def hf_forward(hf_model, ids: torch.Tensor, edits: dict[int, Callable] | None = None, **kwargs):
    """The plain HF model's output; `edits[l](h)` rewrites decoder layer l's output (B, T, D) in place."""
    handles = []
    for layer, edit in (edits or {}).items():
        def hook(module, args, output, edit=edit):
            h = (output[0] if isinstance(output, tuple) else output).clone()
            edit(h)
            return (h, *output[1:]) if isinstance(output, tuple) else h

        handles.append(hf_model.model.layers[layer].register_forward_hook(hook))
    try:
        with torch.no_grad():
            return hf_model(ids, **kwargs)
    finally:
        for handle in handles:
            handle.remove()


def hf_logits(hf_model, ids: torch.Tensor, edits: dict[int, Callable] | None = None) -> torch.Tensor:
    return hf_forward(hf_model, ids, edits).logits


def entries(positions, dims, new: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
    """A reference edit: h[:, positions x dims] = new(old), written with plain indexing."""

    def edit(h: torch.Tensor) -> None:  # (B, T, D)
        p = torch.arange(h.shape[1]) if positions == "all" else torch.tensor(positions)
        d = torch.arange(h.shape[2]) if dims == "all" else torch.tensor(dims)
        index = (slice(None), p[:, None], d[None, :])
        h[index] = new(h[index])

    return edit


def hf_loss(logits: torch.Tensor, ids: torch.Tensor) -> tuple[float, int]:
    """Sum of next-token NLL over positions 1.. and the count, by hand."""
    logp = torch.log_softmax(logits[0].double(), dim=-1)  # (T, V)
    nll = -logp[:-1].gather(-1, ids[0, 1:, None])[:, 0]
    return float(nll.sum()), nll.numel()


def bridge_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.bridge(ids, return_type="logits")


def count_forwards(model):
    """Counts full forward passes of the wrapped HF model, whatever the batch size."""
    calls = []
    handle = model.hf_model.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls, handle


# ---- interventions as data ----


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"layer": 0, "position": 0, "dim": 0, "mode": "average"}, "mode"),
        ({"layer": 0, "position": 0, "dim": 0, "mode": "scale"}, "value"),
        ({"layer": 0, "position": 0, "dim": 0, "mode": "set"}, "value"),
        ({"layer": 0, "position": 0, "dim": 0, "mode": "set", "value": math.nan}, "value"),
        ({"layer": 0, "position": 0, "dim": 0, "mode": "scale", "value": math.inf}, "value"),
        ({"layer": 0, "position": 0, "dim": 0, "mode": "zero", "value": -math.inf}, "value"),
        ({"layer": 0, "position": -1, "dim": 0}, "position"),
        ({"layer": 0, "position": 0, "dim": [1, 2.5]}, "dim"),
        ({"layer": 0, "position": [], "dim": 0}, "position"),
        ({"layer": 0, "position": "first", "dim": 0}, "position"),
        ({"layer": "3", "position": 0, "dim": 0}, "layer"),
        ({"layer": 0, "position": 0, "dim": 0, "site": "nowhere"}, "site"),
    ],
)
def test_bad_intervention_names_the_field(kwargs, field):
    with pytest.raises(InputError) as err:
        Intervention(**kwargs)
    assert err.value.field == field


@pytest.mark.parametrize(
    ("iv", "field"),
    [
        (Intervention(4, 0, 0), "layer"),
        (Intervention(-1, 0, 0), "layer"),
        (Intervention(0, 12, 0), "position"),
        (Intervention(0, [0, 12], 0), "position"),
        (Intervention(0, 0, 64), "dim"),
        (Intervention(0, 0, 127, site="mlp_post"), None),  # d_mlp is 128: in range
        (Intervention(0, 0, 128, site="mlp_post"), "dim"),
    ],
)
def test_coordinates_are_checked_against_the_model_and_sequence(tiny, iv, field):
    if field is None:
        iv.check(tiny, 12)
        return
    with pytest.raises(InputError) as err:
        iv.check(tiny, 12)
    assert err.value.field == field


def test_json_round_trip_and_normal_form():
    iv = Intervention.from_json({"layer": 2, "site": "hook_resid_post", "position": [5, 0, 5], "dim": "all", "mode": "scale", "value": 2})
    assert (iv.site, iv.position, iv.dim) == ("resid_post", (0, 5), "all")
    assert Intervention.from_json(to_json(iv)) == iv
    assert Intervention(1, 0, 3, "zero", 7.0).value is None  # a stale value from a form is dropped
    with pytest.raises(InputError) as err:
        Intervention.from_json({"layer": 1, "dim": 3})
    assert err.value.field == "position"


# ---- hooks against an independent HF computation ----


@pytest.mark.parametrize(
    ("iv", "edit"),
    [
        (Intervention(1, 3, 5, "zero"), entries([3], [5], torch.zeros_like)),
        (Intervention(2, [0, 4], [7, 9], "scale", -3.0), entries([0, 4], [7, 9], lambda old: old * -3.0)),
        (Intervention(0, "all", 11, "set", 2.5), entries("all", [11], lambda old: torch.full_like(old, 2.5))),
        (Intervention(3, 6, "all", "zero"), entries([6], "all", torch.zeros_like)),
    ],
)
def test_resid_post_intervention_equals_hf_forward_hook(tiny, hf, iv, edit):
    ids = encode(tiny, TEXT).ids
    with intervened(tiny, [iv], ids.shape[1]):
        ours = bridge_logits(tiny, ids)
    reference = hf_logits(hf, ids, {iv.layer: edit})
    assert not torch.allclose(reference, hf_logits(hf, ids), atol=1e-6)  # the edit does something
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_interventions_at_two_layers_apply_together(tiny, hf):
    ids = encode(tiny, TEXT).ids
    ivs = [Intervention(0, 2, 1, "set", 4.0), Intervention(2, 5, 3, "zero")]
    with intervened(tiny, ivs, ids.shape[1]):
        ours = bridge_logits(tiny, ids)
    reference = hf_logits(hf, ids, {0: entries([2], [1], lambda old: torch.full_like(old, 4.0)), 2: entries([5], [3], torch.zeros_like)})
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def _registered(model) -> int:
    return sum(len(hp.fwd_hooks) + len(hp._forward_hooks) for hp in model.bridge.hook_dict.values())


def test_nothing_stays_registered_after_an_error(tiny):
    ids = encode(tiny, TEXT).ids
    before = bridge_logits(tiny, ids)
    assert _registered(tiny) == 0
    point = tiny.bridge.hook_dict[hook_name("resid_post", 1)]
    with pytest.raises(RuntimeError, match="boom"):
        with intervened(tiny, [Intervention(1, 0, "all", "zero"), Intervention(2, 1, 1, "zero")], ids.shape[1]):
            assert len(point.fwd_hooks) == 1 and len(point._forward_hooks) == 1
            raise RuntimeError("boom")
    assert _registered(tiny) == 0
    with pytest.raises(InputError):  # the second intervention is bad: the first must not linger either
        with intervened(tiny, [Intervention(1, 0, 0, "zero"), Intervention(1, 99, 0, "zero")], ids.shape[1]):
            pass
    assert _registered(tiny) == 0
    assert torch.equal(bridge_logits(tiny, ids), before)


# ---- weight edits ----


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.hf_parameters().items()}


def test_weight_edits_restore_bit_for_bit_even_on_error(tiny):
    before = _snapshot(tiny)
    edits = [
        WeightEdit(DOWN, (5, 7)),
        WeightEdit(DOWN, (5, "all"), "scale", 3.0),  # overlaps the first
        WeightEdit(DOWN, ("all", 100), "set", -1.5),
        WeightEdit("model.layers.2.post_attention_layernorm.weight", (9,), "set", 0.0),
    ]
    p = tiny.hf_parameters()[DOWN].detach()
    with pytest.raises(RuntimeError, match="inside"):
        with edited_weights(tiny, edits):
            assert float(p[5, 7]) == 0.0  # zeroed, then scaled: still zero
            assert torch.equal(p[5, :7], before[DOWN][5, :7] * 3.0)
            assert torch.all(p[:, 100] == -1.5)
            assert float(tiny.hf_parameters()["model.layers.2.post_attention_layernorm.weight"].detach()[9]) == 0.0
            raise RuntimeError("inside")
    after = tiny.hf_parameters()
    assert all(torch.equal(after[name], before[name]) for name in before)


def test_weight_edit_forward_equals_hf_with_the_weight_edited_by_hand(tiny, hf):
    ids = encode(tiny, TEXT).ids
    with edited_weights(tiny, [WeightEdit(DOWN, (5, "all"), "scale", 40.0)]):
        ours = bridge_logits(tiny, ids)
    original = hf.model.layers[1].mlp.down_proj.weight.detach().clone()
    try:
        with torch.no_grad():
            hf.model.layers[1].mlp.down_proj.weight[5, :] *= 40.0
        reference = hf_logits(hf, ids)
    finally:
        with torch.no_grad():
            hf.model.layers[1].mlp.down_proj.weight.copy_(original)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ours, bridge_logits(tiny, ids), atol=1e-4)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda: WeightEdit("model.layers.9.mlp.down_proj.weight", (0, 0)), "parameter"),
        (lambda: WeightEdit(DOWN, (64, 0)), "index"),
        (lambda: WeightEdit(DOWN, (0, -1)), "index"),
        (lambda: WeightEdit(DOWN, (0,)), "index"),
        (lambda: WeightEdit("model.norm.weight", (0, 0)), "index"),
        (lambda: WeightEdit(DOWN, (0, 1.5)), "index"),
        (lambda: WeightEdit(DOWN, (0, 0), "mean"), "mode"),
        (lambda: WeightEdit(DOWN, (0, 0), "scale"), "value"),
        (lambda: WeightEdit(DOWN, (0, 0), "set", math.nan), "value"),
    ],
)
def test_bad_weight_edit_names_the_field(tiny, edit, field):
    before = _snapshot(tiny)
    with pytest.raises(InputError) as err:
        with edited_weights(tiny, [WeightEdit(DOWN, (1, 1)), edit()]):
            pass
    assert err.value.field == field
    after = tiny.hf_parameters()
    assert all(torch.equal(after[name], before[name]) for name in before)


# ---- evaluation ----


def test_perplexities_equal_plain_hf_computations(tiny, hf):
    """Baseline, intervened and control arms, each recomputed on the plain HF model."""
    ids = encode(tiny, TEXT).ids
    iv = Intervention(1, [0, 3], [2, 8], "set", 5.0)
    result = evaluate(tiny, TEXT, [iv], seed=3)

    nll, n = hf_loss(hf_logits(hf, ids), ids)
    assert result.baseline.n_tokens == n == ids.shape[1] - 1
    assert result.baseline.loss == pytest.approx(nll / n, rel=1e-5)
    assert result.baseline.perplexity == pytest.approx(math.exp(nll / n), rel=1e-5)

    def setter(positions, dims):
        return entries(list(positions), list(dims), lambda old: torch.full_like(old, 5.0))

    nll_after, _ = hf_loss(hf_logits(hf, ids, {1: setter([0, 3], [2, 8])}), ids)
    assert result.intervened.loss == pytest.approx(nll_after / n, rel=1e-5)
    (control,) = result.control_interventions
    assert (control.layer, control.mode, control.value) == (1, "set", 5.0)
    assert len(control.position) == 2 and len(control.dim) == 2
    assert set(control.position).isdisjoint({0, 3}) and set(control.dim).isdisjoint({2, 8})
    nll_control, _ = hf_loss(hf_logits(hf, ids, {1: setter(control.position, control.dim)}), ids)
    assert result.control.loss == pytest.approx(nll_control / n, rel=1e-5)

    probs = torch.softmax(hf_logits(hf, ids)[0, -1].double(), dim=-1)
    expected = probs.topk(5)
    assert [p.token_id for p in result.top_k.before] == expected.indices.tolist()
    assert [p.prob for p in result.top_k.before] == pytest.approx(expected.values.tolist(), rel=1e-5)


def test_layer_curves_after_equal_hf_hidden_states(tiny, hf):
    ids = encode(tiny, TEXT).ids
    result = evaluate(tiny, TEXT, [Intervention(1, 2, "all", "scale", 50.0)])

    hidden = hf_forward(hf, ids, {1: entries([2], "all", lambda old: old * 50.0)}, output_hidden_states=True).hidden_states
    # hidden_states[l + 1] is decoder layer l's output, except the last, which HF stores after the final norm
    for layer in range(tiny.n_layers - 1):
        assert result.layers[layer].max_abs_after == pytest.approx(float(hidden[layer + 1][0].abs().max()), rel=1e-5)
    assert result.layers[1].max_abs_after > 10 * result.layers[1].max_abs_before
    assert result.layers[0].max_abs_after == result.layers[0].max_abs_before


def test_one_forward_per_call_once_the_baseline_is_cached(tiny):
    calls, handle = count_forwards(tiny)
    try:
        text = TEXT + " Counted."
        evaluate(tiny, text, [Intervention(1, 0, 3, "zero")])
        assert len(calls) == 2  # the baseline once, then intervened + control as two batch rows of one pass
        calls.clear()
        evaluate(tiny, text, [Intervention(2, [1, 2], "all", "scale", 0.5)])
        assert len(calls) == 1
        calls.clear()
        evaluate(tiny, text, weight_edits=[WeightEdit(DOWN, (3, 4))])
        assert len(calls) == 2  # weight edits touch every row: one pass per arm, baseline still cached
        calls.clear()
        evaluate(tiny, text, [Intervention(1, 0, 3, "zero")], prepend_bos=False)
        assert len(calls) == 2  # another BOS setting is another baseline
    finally:
        handle.remove()


def test_a_changed_model_misses_the_caches(tiny):
    text = TEXT + " Changed."
    evaluate(tiny, text, [Intervention(1, 0, 3, "zero")])
    p = tiny.hf_parameters()["model.layers.0.mlp.up_proj.weight"]
    original = p.detach().clone()
    calls, handle = count_forwards(tiny)
    try:
        with torch.no_grad():
            p.mul_(2.0)  # an in-place update, as an optimizer step or a merge makes
        changed = evaluate(tiny, text, [Intervention(1, 0, 3, "zero")])
        assert len(calls) == 2
    finally:
        handle.remove()
        with torch.no_grad():
            p.copy_(original)
    assert changed.baseline.loss != evaluate(tiny, text, [Intervention(1, 0, 3, "zero")]).baseline.loss


def test_eval_text_in_windows_equals_hf(tiny, hf):
    corpus = Corpus("mini", ("The first passage is about rivers and the sea.", "The second one talks about bread and ovens."))
    result = evaluate(tiny, TEXT, [Intervention(1, 0, 3, "zero")], eval_text=corpus, eval_window=32)
    assert result.eval_source == "mini"
    stream = tiny.tokenizer(corpus.passages[0] + "\n\n" + corpus.passages[1], add_special_tokens=False).input_ids
    total, count = 0.0, 0
    n_windows = len(stream) // 31  # 31 text tokens + BOS per window; the ragged tail is left out
    for start in range(0, 31 * n_windows, 31):
        ids = torch.tensor([[tiny.bos_token_id, *stream[start:start + 31]]])
        nll, n = hf_loss(hf_logits(hf, ids), ids)
        total, count = total + nll, count + n
    assert n_windows > 1 and result.baseline.n_tokens == count == 31 * n_windows
    assert result.baseline.loss == pytest.approx(total / count, rel=1e-5)
    assert result.prompt.baseline.n_tokens == len(TEXT)  # byte tokens after BOS


def test_evaluate_rejects_bad_input(tiny):
    with pytest.raises(InputError) as err:
        evaluate(tiny, TEXT)
    assert err.value.field == "interventions"
    with pytest.raises(InputError) as err:
        evaluate(tiny, TEXT, [Intervention(1, 40, 0, "zero")], eval_text=from_text("short text"))
    assert err.value.field == "position"  # fits the prompt, not the evaluation text
    with pytest.raises(InputError) as err:
        evaluate(tiny, "", [Intervention(1, 0, 0, "zero")])
    assert err.value.field == "text"
    with pytest.raises(InputError) as err:
        evaluate(tiny, TEXT, [Intervention(1, 0, 0, "zero")], top_k=0)
    assert err.value.field == "top_k"


def test_json_has_no_nan_or_inf():
    assert to_json(Loss(800.0, 3)) == {"loss": 800.0, "perplexity": None, "n_tokens": 3}
    assert to_json(Loss(float("nan"), 3))["loss"] is None


# ---- reference means ----


def plant(model: torch.nn.Module, bos: int) -> None:
    with torch.no_grad():
        model.get_input_embeddings().weight[bos, 5] = 1000.0


@pytest.fixture(scope="module")
def planted():
    """The tiny model with a planted massive activation: the BOS embedding carries 1000 in dim 5."""
    model = load_model("tiny-random", device="cpu")
    plant(model.hf_model, model.bos_token_id)
    return model


def test_means_split_carrier_tokens_from_ordinary_ones(planted, hf):
    """Carrier mean: the BOS state (the same in every window); ordinary mean: every other token, from HF."""
    corpus = bundled("prose")
    means = reference_means(planted, "resid_post", corpus)
    ids = corpus_windows(planted, corpus, prepend_bos=True)  # (N, 128)
    original = hf.get_input_embeddings().weight.detach().clone()
    plant(hf, planted.bos_token_id)
    try:
        hidden = hf_forward(hf, ids, output_hidden_states=True).hidden_states
    finally:
        with torch.no_grad():
            hf.get_input_embeddings().weight.copy_(original)
    for layer in range(planted.n_layers - 1):
        h = hidden[layer + 1].double()  # (N, T, D)
        assert int(means.carrier_count[layer, 5]) == ids.shape[0]  # exactly the first token of each window
        assert float(means.carrier_mean[layer, 5]) == pytest.approx(float(h[:, 0, 5].mean()), rel=1e-4)
        assert float(means.ordinary_mean[layer, 5]) == pytest.approx(float(h[:, 1:, 5].mean()), rel=1e-4, abs=1e-6)
        assert float(means.ordinary_mean[layer, 6]) == pytest.approx(float(h[:, :, 6].mean()), rel=1e-4, abs=1e-6)
        assert int(means.carrier_count[layer, 6]) == 0
    assert reference_means(planted, "resid_post", corpus) is means  # cached


def test_mean_mode_replaces_each_entry_with_its_own_kind_of_mean(planted):
    means = reference_means(planted, "resid_post", bundled())
    ids = encode(planted, TEXT).ids
    seen = {}

    def capture(h, *, hook):
        seen["h"] = h[0].clone()

    with intervened(planted, [Intervention(1, [0, 4], [5, 6], "mean")], ids.shape[1], {"resid_post": means}):
        with planted.bridge.hooks(fwd_hooks=[(hook_name("resid_post", 1), capture)]):  # inner: runs after ours
            bridge_logits(planted, ids)
    h = seen["h"]
    assert float(h[0, 5]) == pytest.approx(float(means.carrier_mean[1, 5]), rel=1e-5)  # massive here: carrier mean
    assert float(h[4, 5]) == pytest.approx(float(means.ordinary_mean[1, 5]), rel=1e-5, abs=1e-7)
    assert float(h[0, 6]) == pytest.approx(float(means.ordinary_mean[1, 6]), rel=1e-5, abs=1e-7)
    assert float(h[4, 6]) == pytest.approx(float(means.ordinary_mean[1, 6]), rel=1e-5, abs=1e-7)


def test_control_avoids_the_massive_coordinates(planted):
    result = evaluate(planted, TEXT, [Intervention(2, 0, 5, "zero")], seed=1)
    (control,) = result.control_interventions
    assert 0 not in control.position and 5 not in control.dim
    assert result.layers[2].max_abs_before > 900 and result.layers[2].max_abs_after < 100  # the planted entry went


def test_means_cache_is_keyed_by_site_corpus_and_bos(planted):
    prose = reference_means(planted, "resid_post", bundled("prose"))
    assert reference_means(planted, "resid_post", bundled("code")) is not prose
    assert reference_means(planted, "resid_post", bundled("prose"), prepend_bos=False) is not prose
    assert reference_means(planted, "mlp_post", bundled("prose")).carrier_mean.shape == (planted.n_layers, planted.d_mlp)
    with edited_weights(planted, [WeightEdit(DOWN, (0, 0))]):
        assert reference_means(planted, "resid_post", bundled("prose")) is not prose  # edits in force: no cache
    assert reference_means(planted, "resid_post", bundled("prose")) is prose
    reference_means_module.clear_cache()
    assert reference_means(planted, "resid_post", bundled("prose")) is not prose


# ---- corpus ----


def test_bundled_corpora_and_user_files(tmp_path):
    prose, code = bundled("prose"), bundled("code")
    assert len(prose.text.split()) > 2500 and len(prose.passages) > 20
    assert "def " in code.text and "function " in code.text
    with pytest.raises(InputError) as err:
        bundled("poetry")
    assert err.value.field == "corpus"
    path = tmp_path / "mine.txt"
    path.write_text("First paragraph.\n\n\nSecond paragraph.\n", encoding="utf-8")
    mine = from_file(path)
    assert mine.passages == ("First paragraph.", "Second paragraph.") and mine.name == "mine.txt"
    assert mine.key != from_text("First paragraph.\n\nSecond one.").key
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00broken")
    (tmp_path / "empty.txt").write_text("  \n")
    for bad in (tmp_path / "missing.txt", tmp_path / "bad.txt", tmp_path / "empty.txt", tmp_path):
        with pytest.raises(InputError) as err:
            from_file(bad)
        assert err.value.field == "eval_file"


# ---- CLI ----


def test_cli_json_contract(capsys):
    code = main(["intervene", "--model", "tiny-random", "--device", "cpu", "--text", TEXT,
                 "--at", "1:0:3,5", "--at", "2:all:7", "--mode", "scale", "--value", "2", "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    for arm in ("baseline", "intervened", "control"):
        assert set(payload[arm]) >= {"loss", "perplexity"}
        assert payload[arm]["perplexity"] == pytest.approx(math.exp(payload[arm]["loss"]))
    assert payload["interventions"][0] == {"layer": 1, "site": "resid_post", "position": 0, "dim": [3, 5], "mode": "scale", "value": 2.0}
    assert payload["interventions"][1]["position"] == "all"


def test_cli_weight_edit_and_table(capsys):
    code = main(["intervene", "--model", "tiny-random", "--device", "cpu", "--text", TEXT,
                 "--weight", f"{DOWN}:5,all", "--weight", "model.norm.weight:3", "--mode", "zero"])
    assert code == 0
    out = capsys.readouterr().out
    assert f"{DOWN}[5, all]" in out and "model.norm.weight[3]" in out
    assert "baseline" in out and "control" in out and "max|x|" in out


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--at", "1:99:3", "--mode", "zero"], "--at (position)"),
        (["--at", "9:0:3", "--mode", "zero"], "--at (layer)"),
        (["--at", "1:0:3", "--mode", "halve"], "--mode"),
        (["--at", "1:0:3", "--mode", "set"], "--value"),
        (["--at", "1:0:3", "--mode", "set", "--value", "nan"], "--value"),
        (["--at", "1:0", "--mode", "zero"], "--at"),
        (["--weight", "model.nothing.weight:1,2", "--mode", "zero"], "--weight (parameter)"),
        (["--weight", f"{DOWN}:1,999", "--mode", "zero"], "--weight (index)"),
        (["--weight", f"{DOWN}:1,2", "--mode", "mean"], "--mode"),
        (["--at", "1:0:3", "--mode", "zero", "--eval-file", "/no/such/file.txt"], "--eval-file"),
        (["--mode", "zero"], "--at or --weight"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(capsys, args, named):
    code = main(["intervene", "--model", "tiny-random", "--device", "cpu", "--text", "short", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith(f"outlier-lab intervene: error: {named}")
