"""The sweep's parts without processes: the grid, the store, the statistics, the tables."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import statistics

import pytest
from scipy import stats

from outlier_core.errors import InputError
from outlier_core.tune.mask_recipe import MaskRecipe
from outlier_core.tune.run_config import RunConfig
from outlier_core.tune.sweep.config import RuleSetting, SweepConfig, plan_trials, read_sweep, sweep_id, sweep_json
from outlier_core.tune.sweep.results import pareto_front, pareto_points, summarise, summary_csv, summary_markdown, trial_metrics
from outlier_core.tune.sweep.store import SweepStore, TrialRecord
from outlier_core.tune.train_data import TrainConfig

GRID = SweepConfig(model="tiny-random", budgets=(64, 256), methods=("mask", "random"), seeds=(0, 1), train=TrainConfig(steps=2))


def record(method: str, budget: int, seed: int, acc: float, loss: float, trainable: int = 10, state: str = "done") -> TrialRecord:
    metrics = {"outlier_reviews.acc": acc, "held_out_loss": loss, "trainable": trainable, "peak_memory_mb": 5.0 + budget / 100, "base.outlier_reviews.acc": 0.5}
    return TrialRecord(f"{method}{budget}{seed}", method, budget, seed, "all", "trials/x", state, trainable, metrics)


def test_the_grid_expands_to_one_trial_per_cell_with_stable_keys():
    trials = plan_trials(GRID)
    assert [(t.budget, t.seed, t.method) for t in trials][:4] == [(64, 0, "mask"), (64, 0, "random"), (64, 1, "mask"), (64, 1, "random")]
    assert len(trials) == len({t.key for t in trials}) == 8
    assert [t.key for t in plan_trials(GRID)] == [t.key for t in trials]
    first = trials[0].config
    assert first.recipe == MaskRecipe(64) and first.methods == ("mask",) and first.train.seed == 0 and first.data == "outlier_reviews"
    assert [t.config.eval_base for t in trials] == [True] + [False] * 7  # the base scores the same in every trial
    wider = SweepConfig(model="tiny-random", budgets=(64, 256, 1024), methods=("mask", "random"), seeds=(0, 1), train=TrainConfig(steps=2))
    assert {t.key for t in trials} < {t.key for t in plan_trials(wider)}  # the same trial in another sweep is the same trial
    assert sweep_id(wider) != sweep_id(GRID) == sweep_id(read_sweep(sweep_json(GRID)))
    windows = SweepConfig(model="m", budgets=(64,), methods=("mask",), settings=(RuleSetting(), RuleSetting(("norm_outliers",), 2)))
    assert [t.setting for t in plan_trials(windows)] == ["super_weights+norm_outliers+attention_reads+ffn_reads", "norm_outliers, n=2"]


@pytest.mark.parametrize(
    "change, field",
    [({"budgets": ()}, "budgets"), ({"budgets": (0,)}, "budgets"), ({"methods": ("dora",)}, "methods"), ({"seeds": (1, 1)}, "seeds"), ({"budgets": tuple(range(1, 2002))}, "budgets")],
)
def test_a_bad_grid_names_its_field(change, field):
    with pytest.raises(InputError) as err:
        SweepConfig(**{"model": "m", "budgets": (1,), "methods": ("mask",), **change})
    assert err.value.field == field


def test_a_run_takes_a_mask_or_a_recipe_and_known_methods():
    for bad, field in (({}, "mask"), ({"mask": "m.json", "recipe": MaskRecipe(4)}, "mask"), ({"mask": "m.json", "methods": ("dora",)}, "methods")):
        with pytest.raises(InputError) as err:
            RunConfig(model="tiny-random", **bad)
        assert err.value.field == field
    with pytest.raises(InputError) as err:
        MaskRecipe(8, rules=("norm_outliers", "norm_outliers"))
    assert err.value.field == "rules"


def test_the_store_keeps_each_finished_trial_in_its_own_transaction(tmp_path):
    trials = plan_trials(GRID)
    store = SweepStore(tmp_path)
    store.register(sweep_id(GRID), GRID, trials)
    store.register(sweep_id(GRID), GRID, trials)  # again: nothing doubles, nothing resets
    store.start_trial(trials[0].key)
    store.finish_trial(trials[0].key, "done", 7, {"held_out_loss": 1.5, "nan": float("nan")})
    store.register(sweep_id(GRID), GRID, trials)
    with sqlite3.connect(tmp_path / "sweeps.sqlite") as db:  # another connection sees it committed
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT state, trainable, launches FROM trials WHERE key = ?", (trials[0].key,)).fetchone() == ("done", 7, 1)
        assert db.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == 8
    records = store.trials(sweep_id(GRID))
    assert [r.key for r in records] == [t.key for t in trials]
    assert records[0].metrics == {"held_out_loss": 1.5, "nan": None} and records[1].state == "pending"
    assert RunConfig(**{**records[0].config, "recipe": MaskRecipe(**records[0].config["recipe"])}).recipe.budget == 64
    assert store.sweep(sweep_id(GRID)).config == GRID
    with pytest.raises(InputError):
        store.sweep("sweep-nope")


def test_the_summary_is_the_mean_and_students_t_interval_over_seeds():
    trials = [record("mask", 64, s, acc, loss) for s, (acc, loss) in enumerate([(0.5, 2.0), (0.625, 1.5), (0.75, 1.25)])]
    trials += [record("random", 64, 0, 0.5, 2.5), record("random", 64, 1, 0.4, 2.6, state="failed")]
    rows = {(r.method, r.metric): r for r in summarise(trials)}
    acc = rows[("mask", "outlier_reviews.acc")]
    values = [0.5, 0.625, 0.75]
    low, high = stats.t.interval(0.95, len(values) - 1, loc=statistics.mean(values), scale=statistics.stdev(values) / len(values) ** 0.5)
    assert (acc.n, acc.mean, acc.std) == (3, pytest.approx(statistics.mean(values)), pytest.approx(statistics.stdev(values)))
    assert (acc.ci_low, acc.ci_high) == (pytest.approx(low), pytest.approx(high))
    one = rows[("random", "outlier_reviews.acc")]  # the failed trial is not counted; one seed has no interval
    assert (one.n, one.mean, one.ci_low, one.ci_high) == (1, 0.5, None, None)


def test_tables_carry_the_interval_columns():
    trials = [record("mask", 64, s, 0.5 + s / 10, 2.0 - s / 10) for s in range(2)] + [record("random", 64, s, 0.5, 2.0 + s / 10) for s in range(2)]
    rows = summarise(trials)
    parsed = list(csv.DictReader(io.StringIO(summary_csv(rows))))
    assert list(parsed[0]) == ["method", "budget", "setting", "metric", "n", "mean", "std", "ci_low", "ci_high"]
    mask_acc = next(p for p in parsed if p["method"] == "mask" and p["metric"] == "outlier_reviews.acc")
    assert float(mask_acc["mean"]) == pytest.approx(0.55) and float(mask_acc["ci_low"]) < 0.55 < float(mask_acc["ci_high"])
    markdown = summary_markdown(rows)
    assert "| method | budget | trainable | seeds | outlier_reviews.acc (95% CI) | held-out loss (95% CI) |" in markdown
    assert "| mask | 64 | 10 | 2 | 0.5500 [" in markdown and "Before training (the base model): outlier_reviews.acc 0.5000." in markdown


def test_the_pareto_front_keeps_what_nothing_beats():
    assert pareto_front([(1, 0.5), (2, 0.6), (3, 0.55), (2, 0.6), (0.5, 0.1)], higher_is_better=True) == [True, True, False, True, True]
    assert pareto_front([(1, 2.0), (2, 1.0), (3, 1.5)], higher_is_better=False) == [True, True, False]
    trials = [record("mask", 64, 0, 0.6, 1.0, 10), record("random", 64, 0, 0.5, 1.1, 10), record("lora", 64, 0, 0.7, 1.2, 1000)]
    points = {p.method: p.on_front for p in pareto_points(summarise(trials), "outlier_reviews.acc", "trainable")}
    assert points == {"mask": True, "random": False, "lora": True}
    by_loss = {p.method: p.on_front for p in pareto_points(summarise(trials), "held_out_loss", "trainable")}
    assert by_loss == {"mask": True, "random": False, "lora": False}


def test_trial_metrics_read_a_runs_result():
    result = {
        "eval_before": {"loss": 3.0},
        "runs": [{"method": "mask", "trainable": 12, "eval_after": {"loss": 2.0}, "peak_memory_mb": 9.5, "seconds": 4.0, "train_loss": [1, 2], "tokens_per_s": 100.0}],
        "lm_eval": {"base": {"scores": {"t": {"acc": 0.5}}}, "mask": {"scores": {"t": {"acc": 0.75, "acc_norm": 0.7}}}},
    }
    trainable, metrics = trial_metrics(json.loads(json.dumps(result)))
    assert trainable == 12
    assert metrics == {
        "held_out_loss": 2.0, "base.held_out_loss": 3.0, "trainable": 12.0, "peak_memory_mb": 9.5, "step_s": 2.0, "tokens_per_s": 100.0,
        "t.acc": 0.75, "t.acc_norm": 0.7, "base.t.acc": 0.5,
    }


def test_concurrent_trials_spread_over_the_gpus_of_a_box_and_share_any_other_device() -> None:
    from outlier_core.tune.sweep.runner import default_concurrent, trial_devices

    assert default_concurrent("cuda", 4) == default_concurrent(None, 4) == 4  # one trial per GPU
    assert default_concurrent("cpu", 4) == default_concurrent("cuda:1", 4) == default_concurrent(None, 0) == 1
    assert trial_devices("cuda", 4, 4) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert trial_devices(None, 3, 2) == ["cuda:0", "cuda:1", "cuda:0"]  # more workers than GPUs: round robin
    assert trial_devices("cuda:1", 2, 4) == [None, None]  # a pinned device stays every trial's own
    assert trial_devices("cpu", 2, 4) == trial_devices(None, 2, 0) == [None, None]
