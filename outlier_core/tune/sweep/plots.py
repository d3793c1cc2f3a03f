"""The Pareto figures of a sweep: the headline metric against what a method spends
(trainable parameters, peak memory), one point per method and budget with its 95% interval,
the front drawn through the points nothing beats, the base model as a dotted line.

Exported as PNG and SVG through plotly's kaleido, which drives a Chromium (Debian's
/usr/bin/chromium here).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go

from outlier_core.tune.sweep.results import SummaryRow, pareto_points

COST_TITLES = {"trainable": "trainable parameters", "peak_memory_mb": "peak memory (MB)"}


def pareto_figure(rows: Sequence[SummaryRow], metric: str, cost: str) -> go.Figure:
    points = pareto_points(rows, metric, cost)
    figure = go.Figure()
    for method in dict.fromkeys(p.method for p in points):
        mine = sorted((p for p in points if p.method == method), key=lambda p: p.cost)
        has_ci = [p.ci_low is not None for p in mine]
        figure.add_trace(
            go.Scatter(
                x=[p.cost for p in mine], y=[p.value for p in mine], mode="markers+lines", name=method,
                text=[f"budget {p.budget:,}" + (f", {p.setting}" if p.setting else "") for p in mine],
                hovertemplate="%{text}<br>" + COST_TITLES.get(cost, cost) + " %{x:,.0f}<br>" + metric + " %{y:.4f}<extra>" + method + "</extra>",
                error_y=dict(
                    type="data", symmetric=False,
                    array=[p.ci_high - p.value if ok else 0 for p, ok in zip(mine, has_ci)],
                    arrayminus=[p.value - p.ci_low if ok else 0 for p, ok in zip(mine, has_ci)],
                ),
            )
        )
    front = sorted((p for p in points if p.on_front), key=lambda p: p.cost)
    if front:
        figure.add_trace(go.Scatter(x=[p.cost for p in front], y=[p.value for p in front], mode="lines", name="Pareto front", line=dict(dash="dash", color="black")))
    base = [r.mean for r in rows if r.metric == f"base.{metric}"]
    if base:
        figure.add_hline(y=base[0], line_dash="dot", annotation_text="base model")
    figure.update_layout(
        title=f"{metric} vs {COST_TITLES.get(cost, cost)} (mean over seeds, 95% CI)", template="plotly_white",
        xaxis_title=COST_TITLES.get(cost, cost), yaxis_title=metric, width=820, height=520,
    )
    figure.update_xaxes(type="log")
    return figure


def export_figures(figures: dict[str, go.Figure], folder: str | Path) -> list[Path]:
    """Each figure as NAME.png and NAME.svg in `folder`; one browser session draws them all."""
    import plotly.io as pio

    folder = Path(folder)
    paths = [(folder / f"{name}.{kind}", figure) for name, figure in figures.items() for kind in ("png", "svg")]
    for name in ("kaleido", "choreographer"):  # they narrate every browser tab at INFO, some of it after the export returns
        logging.getLogger(name).setLevel(logging.WARNING)
    pio.write_images([figure for _, figure in paths], [path for path, _ in paths])
    return [path for path, _ in paths]
