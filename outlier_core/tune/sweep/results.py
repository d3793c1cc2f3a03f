"""A sweep's numbers: each trial's metrics from its run, their mean and 95% interval over
seeds per method, budget and rule setting, the Pareto front, and the tables.

Metric names: `held_out_loss` (the completion loss on the task's held-out rows after
training), `<task>.<metric>` from lm-eval (`outlier_reviews.acc`), the same with `base.`
for the model before training, and the costs: `trainable`, `peak_memory_mb`, `step_s`
(training seconds per step), `tokens_per_s`.

The interval is Student's t over the seeds: mean ± t(0.975, n-1) · s / √n, with s the
sample standard deviation; one seed has no interval (null).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from outlier_core.tune.sweep.store import TrialRecord

COSTS = ("trainable", "peak_memory_mb")
LOWER_IS_BETTER = ("held_out_loss", "base.held_out_loss", "peak_memory_mb", "step_s", "trainable")


@dataclass(frozen=True)
class SummaryRow:
    method: str
    budget: int
    setting: str
    metric: str
    n: int
    mean: float
    std: float | None  # sample standard deviation; None for one seed
    ci_low: float | None
    ci_high: float | None


def trial_metrics(result: dict) -> tuple[int, dict[str, float]]:
    """(trainable, metrics) of a finished trial from its run's result.json (one method)."""
    run = result["runs"][0]
    metrics = {
        "held_out_loss": run["eval_after"]["loss"],
        "base.held_out_loss": result["eval_before"]["loss"],
        "trainable": run["trainable"],
        "peak_memory_mb": run["peak_memory_mb"],
        "step_s": run["seconds"] / max(1, len(run["train_loss"])),
        "tokens_per_s": run["tokens_per_s"],
    }
    scored = result.get("lm_eval") or {}
    for prefix, who in (("", run["method"]), ("base.", "base")):
        for task, values in (scored.get(who) or {}).get("scores", {}).items():
            metrics.update({f"{prefix}{task}.{name}": value for name, value in values.items()})
    return int(run["trainable"]), {name: float(v) for name, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float | None, float | None, float | None]:
    """(mean, std, low, high): Student's t interval of the mean; no interval for one value."""
    from scipy.stats import t

    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return mean, None, None, None
    std = statistics.stdev(values)
    half = float(t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def summarise(trials: Sequence[TrialRecord]) -> list[SummaryRow]:
    """Per (method, budget, setting) and metric, over the finished trials (one per seed)."""
    groups: dict[tuple[str, int, str], dict[str, list[float]]] = {}
    for trial in trials:
        if trial.state != "done":
            continue
        group = groups.setdefault((trial.method, trial.budget, trial.setting), {})
        for name, value in trial.metrics.items():
            group.setdefault(name, []).append(value)
    rows = []
    for (method, budget, setting), metrics in groups.items():
        for name in sorted(metrics):
            mean, std, low, high = t_interval(metrics[name])
            rows.append(SummaryRow(method, budget, setting, name, len(metrics[name]), mean, std, low, high))
    return rows


def headline_metric(rows: Sequence[SummaryRow]) -> str:
    """What the sweep is judged on: the first lm-eval accuracy it has, else the held-out loss."""
    accuracies = sorted({r.metric for r in rows if r.metric.endswith(".acc") and not r.metric.startswith("base.")})
    return accuracies[0] if accuracies else "held_out_loss"


def pareto_front(points: Sequence[tuple[float, float]], higher_is_better: bool) -> list[bool]:
    """Which (cost, value) points no other point beats: as cheap or cheaper and as good or
    better, strictly in one of the two."""
    sign = 1 if higher_is_better else -1

    def beats(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] <= b[0] and sign * a[1] >= sign * b[1] and (a[0] < b[0] or sign * a[1] > sign * b[1])

    return [not any(beats(other, point) for other in points if other is not point) for point in points]


@dataclass(frozen=True)
class ParetoPoint:
    method: str
    budget: int
    setting: str
    cost: float
    value: float
    ci_low: float | None
    ci_high: float | None
    on_front: bool


def pareto_points(rows: Sequence[SummaryRow], metric: str, cost: str) -> list[ParetoPoint]:
    """Each (method, budget, setting): the mean cost and the metric's mean and interval, marked when on the front."""
    by_group = {(r.method, r.budget, r.setting, r.metric): r for r in rows}
    points = []
    for (method, budget, setting, name), row in by_group.items():
        spent = by_group.get((method, budget, setting, cost))
        if name == metric and spent is not None:
            points.append(ParetoPoint(method, budget, setting, spent.mean, row.mean, row.ci_low, row.ci_high, False))
    front = pareto_front([(p.cost, p.value) for p in points], metric not in LOWER_IS_BETTER)
    return [ParetoPoint(**{**vars(p), "on_front": flag}) for p, flag in zip(points, front)]


def summary_csv(rows: Sequence[SummaryRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["method", "budget", "setting", "metric", "n", "mean", "std", "ci_low", "ci_high"])
    for r in rows:
        writer.writerow([r.method, r.budget, r.setting, r.metric, r.n, _plain(r.mean), _plain(r.std), _plain(r.ci_low), _plain(r.ci_high)])
    return out.getvalue()


def summary_markdown(rows: Sequence[SummaryRow]) -> str:
    """One line per method, budget and setting: the headline metric and the held-out loss
    with their intervals, then the costs (means over seeds)."""
    metric = headline_metric(rows)
    by_group: dict[tuple[str, int, str], dict[str, SummaryRow]] = {}
    for r in rows:
        by_group.setdefault((r.method, r.budget, r.setting), {})[r.metric] = r
    settings = {setting for _, _, setting in by_group}
    head = ["method", "budget", *(["rules"] if len(settings) > 1 else []), "trainable", "seeds", f"{metric} (95% CI)", "held-out loss (95% CI)", "peak MB", "s/step", "tokens/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for (method, budget, setting), found in sorted(by_group.items(), key=lambda item: (item[0][2], item[0][1], item[0][0])):
        cells = [
            method, f"{budget:,}", *([setting] if len(settings) > 1 else []),
            f"{found['trainable'].mean:,.0f}" if "trainable" in found else "",
            str(max((r.n for r in found.values()), default=0)),
            _with_interval(found.get(metric)), _with_interval(found.get("held_out_loss")),
            _number(found.get("peak_memory_mb"), "{:,.0f}"), _number(found.get("step_s"), "{:.3f}"), _number(found.get("tokens_per_s"), "{:,.0f}"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    base = [r for r in rows if r.metric in (f"base.{metric}", "base.held_out_loss")]
    if base:
        values = {r.metric: r.mean for r in base}
        words = [f"{name.removeprefix('base.')} {value:.4f}" for name, value in sorted(values.items())]
        lines += ["", f"Before training (the base model): {', '.join(words)}."]
    return "\n".join(lines) + "\n"


def _with_interval(row: SummaryRow | None) -> str:
    if row is None:
        return ""
    if row.ci_low is None:
        return f"{row.mean:.4f}"
    return f"{row.mean:.4f} [{row.ci_low:.4f}, {row.ci_high:.4f}]"


def _number(row: SummaryRow | None, form: str) -> str:
    return form.format(row.mean) if row is not None else ""


def _plain(value: float | None) -> str:
    return "" if value is None else repr(float(value))
