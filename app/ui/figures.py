"""Figure builders: plain functions from API data to Plotly figures. No HTTP, no Dash.

Magnitudes span five orders (median |x| ~ 1, massive ~ 25,000), so every magnitude axis
and colour scale is logarithmic.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.ui.state import token_label, top_values

TOP_COLORS = ("#c0392b", "#e67e22", "#f1c40f")  # top-1/2/3: hot to warm
MEDIAN_COLOR = "#7f8c8d"
BEFORE_COLOR = "#2c3e50"
AFTER_COLOR = "#c0392b"
ACCENT = "#2471a3"
MARK_COLOR = "#8e44ad"  # massive dims marked on weight plots
LOG_FLOOR = 1e-6  # |x| below this is drawn at the floor of the log colour scale
HEATMAP_ROW_PX = 18  # per token row, so labels stay legible on long prompts


PAPER_WIDTH_PX = 672  # 7 in at the 96 px per inch plotly lays out in: a two-column figure of a paper
PAPER_DPI = 300
NO_SHARING = ["sendChartToCloud", "sendDataToCloud", "editInChartStudio"]  # they upload the data to a third-party service


def graph_config(name: str) -> dict:
    """A figure's plotly config: no button that sends data off the machine, and the camera button
    downloading a PNG at 300 dpi named after the figure."""
    return {
        "displaylogo": False,
        "showSendToCloud": False,
        "showEditInChartStudio": False,
        "showLink": False,
        "modeBarButtonsToRemove": NO_SHARING,
        "toImageButtonOptions": {"format": "png", "filename": name, "scale": PAPER_DPI / 96},
    }


def _layout(fig: go.Figure, title: str, height: int = 360, **kwargs) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 15}},
        template="plotly_white",
        height=height,
        margin={"l": 60, "r": 20, "t": 48, "b": 48},
        legend={"orientation": "h", "y": -0.18},
        hoverlabel={"font_family": "monospace"},
        **kwargs,
    )
    return fig


def empty_figure(message: str, height: int = 260) -> go.Figure:
    """A blank plot that says why it is blank (no prompt yet, the API down ...)."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 14, "color": "#666"})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, "", height)


def layer_curve(scan: dict) -> go.Figure:
    """Per layer: top-1/2/3 |x| and the median |x|, log scale — the rise, plateau and fall."""
    layers = [entry["layer"] for entry in scan["layers"]]
    fig = go.Figure()
    for rank in range(3):
        values = [(top_values(entry) + [None] * 3)[rank] for entry in scan["layers"]]
        hover = []
        for entry in scan["layers"]:
            ordered = sorted(entry["top"], key=lambda t: -abs(t["value"]))
            t = ordered[rank] if rank < len(ordered) else None
            hover.append(f"pos {t['position']} {t['token']!r} dim {t['dim']}: {t['value']:,.1f}" if t else "")
        fig.add_trace(go.Scatter(
            x=layers, y=values, mode="lines+markers", name=f"top-{rank + 1} |x|", line={"color": TOP_COLORS[rank], "width": 3 - rank * 0.7},
            text=hover, hovertemplate="layer %{x}<br>%{text}<extra>top-" + str(rank + 1) + "</extra>",
        ))
    fig.add_trace(go.Scatter(
        x=layers, y=[entry["median_abs"] for entry in scan["layers"]], mode="lines+markers", name="median |x|",
        line={"color": MEDIAN_COLOR, "dash": "dot"}, hovertemplate="layer %{x}<br>median |x| %{y:.3g}<extra></extra>",
    ))
    massive_layers = sorted({m["layer"] for m in scan.get("massive", [])})
    for layer in massive_layers:
        fig.add_vrect(x0=layer - 0.5, x1=layer + 0.5, fillcolor=TOP_COLORS[0], opacity=0.07, line_width=0, layer="below")
    fig.update_yaxes(type="log", title="|activation|")
    fig.update_xaxes(title="layer", dtick=1 if len(layers) <= 32 else None, range=[-0.5, len(layers) - 0.5])
    title = "Largest activations per layer" + (" (shaded: layers with massive activations)" if massive_layers else "")
    return _layout(fig, title, 380)


def sink_curve(sink_share: list[float], after: list[float] | None = None, title: str = "Attention sink: mean attention on position 0") -> go.Figure:
    """Per layer, the share of attention that goes to the first token; optionally after an intervention."""
    layers = list(range(len(sink_share)))
    fig = go.Figure(go.Scatter(x=layers, y=sink_share, mode="lines+markers", name="before" if after is not None else "sink share", line={"color": BEFORE_COLOR},
                               hovertemplate="layer %{x}: %{y:.1%}<extra></extra>"))
    if after is not None:
        fig.add_trace(go.Scatter(x=layers, y=after, mode="lines+markers", name="after", line={"color": AFTER_COLOR, "dash": "dash"},
                                 hovertemplate="layer %{x}: %{y:.1%}<extra>after</extra>"))
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", title="share")
    fig.update_xaxes(title="layer", dtick=1 if len(layers) <= 32 else None, range=[-0.5, len(layers) - 0.5])
    return _layout(fig, title, 300)


def head_sink_heatmap(head_sink_share: list[list[float]]) -> go.Figure:
    """(layers, heads): how much each head attends to position 0."""
    fig = go.Figure(go.Heatmap(
        z=head_sink_share, colorscale="Blues", zmin=0, zmax=1, colorbar={"title": "share", "tickformat": ".0%"},
        hovertemplate="layer %{y}, head %{x}: %{z:.1%}<extra></extra>",
    ))
    fig.update_xaxes(title="head", dtick=1)
    fig.update_yaxes(title="layer", autorange="reversed")
    return _layout(fig, "Sink share per layer and head", max(300, 16 * len(head_sink_share) + 110))


def _log_ticks(z_min: float, z_max: float) -> tuple[list[float], list[str]]:
    lo, hi = math.floor(z_min), math.ceil(z_max)
    values = list(range(lo, hi + 1))
    return values, [f"1e{v}" if abs(v) > 2 else f"{10.0 ** v:g}" for v in values]


def activation_heatmap(matrix: dict, selected: dict | None = None) -> go.Figure:
    """Position × dim heatmap of |x| on a log colour scale; hover shows the signed value.

    Columns are the dims the API sent (the top dims, or pooled blocks), plus a 'rest' column
    with the largest |x| among the dims not shown, so nothing large can hide off-screen.
    """
    tokens, dims, values = matrix["tokens"], matrix["dims"], matrix["values"]
    block = matrix.get("block_size", 1)
    x_labels = [f"{d}" if block == 1 else f"{d}–{d + block - 1}" for d in dims]
    has_rest = matrix["view"] == "top" and len(dims) < matrix["d_model"]
    if has_rest:
        x_labels.append("rest")
    y_labels = [token_label(i, t) for i, t in enumerate(tokens)]
    z, custom = [], []
    for position, row in enumerate(values):
        cells = list(row) + ([matrix["rest_max_abs"][position]] if has_rest else [])
        z.append([math.log10(max(abs(v), LOG_FLOOR)) for v in cells])
        custom.append([[position, d, v] for d, v in zip(dims, row)] + ([[position, -1, cells[-1]]] if has_rest else []))
    flat = [v for row in z for v in row] or [0.0]
    tickvals, ticktext = _log_ticks(max(min(flat), -3), max(flat))
    fig = go.Figure(go.Heatmap(
        z=z, x=x_labels, y=y_labels, customdata=custom, colorscale="Inferno",
        zmin=max(min(flat), -3), zmax=max(flat),
        colorbar={"title": "|x|", "tickvals": tickvals, "ticktext": ticktext},
        hovertemplate="%{y}<br>dim %{x}<br>x = %{customdata[2]:,.4g}<extra></extra>",
        xgap=1, ygap=1,
    ))
    if selected and selected.get("layer") == matrix["layer"] and selected.get("site") == matrix["site"] and selected["dim"] in dims:
        col = dims.index(selected["dim"])
        fig.add_shape(type="rect", x0=col - 0.5, x1=col + 0.5, y0=selected["position"] - 0.5, y1=selected["position"] + 0.5,
                      line={"color": "#00e5ff", "width": 3})
    fig.update_xaxes(type="category", title="dim" + (" (block start)" if block > 1 else f" (the {len(dims)} with the largest |x|, in index order)"), tickangle=-90 if len(x_labels) > 24 else 0)
    fig.update_yaxes(type="category", autorange="reversed", title=None, tickfont={"family": "monospace", "size": 11})
    shown = "top dims" if matrix["view"] == "top" else f"blocks of {block}" if block > 1 else "dims"
    title = f"Layer {matrix['layer']} {matrix['site']}: |x| by position and {shown} (max {matrix['max_abs']:,.1f})"
    fig = _layout(fig, title, max(320, HEATMAP_ROW_PX * len(tokens) + 150))
    fig.update_layout(margin={"l": 150, "r": 20, "t": 48, "b": 70}, clickmode="event")
    return fig


def effect_curve(layers: list[dict]) -> go.Figure:
    """Per layer max |x|, before and after the interventions (log scale)."""
    x = [e["layer"] for e in layers]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=[e["max_abs_before"] for e in layers], mode="lines+markers", name="before", line={"color": BEFORE_COLOR},
                             hovertemplate="layer %{x}: %{y:,.1f}<extra>before</extra>"))
    fig.add_trace(go.Scatter(x=x, y=[e["max_abs_after"] for e in layers], mode="lines+markers", name="after", line={"color": AFTER_COLOR, "dash": "dash"},
                             hovertemplate="layer %{x}: %{y:,.1f}<extra>after</extra>"))
    fig.update_yaxes(type="log", title="max |x|")
    fig.update_xaxes(title="layer", dtick=1 if len(x) <= 32 else None, range=[-0.5, len(x) - 0.5])
    return _layout(fig, "Largest activation per layer, before and after", 300)


def position_labels(tokens: list[str], positions: list[int] | None = None) -> list[str]:
    """One label per pattern row: the token at each position, or for a long prompt the API pooled
    into blocks of positions, each block's span and its first token ('120–127 ' the'…')."""
    if positions is None or len(positions) == len(tokens):
        return [token_label(i, t) for i, t in enumerate(tokens)]
    ends = [*positions[1:], len(tokens)]
    return [token_label(start, tokens[start]) if end - start == 1 else f"{start}–{end - 1} {tokens[start]!r}…" for start, end in zip(positions, ends)]


def attention_heatmap(tokens: list[str], pattern: list[list[float]], title: str, positions: list[int] | None = None) -> go.Figure:
    """One (query, key) attention pattern with token labels on both axes (block labels when pooled)."""
    labels = position_labels(tokens, positions)
    fig = go.Figure(go.Heatmap(
        z=pattern, x=labels, y=labels, colorscale="Blues", zmin=0, zmax=1, colorbar={"title": "attn"},
        hovertemplate="query %{y}<br>key %{x}<br>%{z:.3f}<extra></extra>", xgap=1, ygap=1,
    ))
    fig.update_xaxes(type="category", title="key", tickangle=-60, tickfont={"family": "monospace", "size": 10})
    fig.update_yaxes(type="category", autorange="reversed", title="query", tickfont={"family": "monospace", "size": 10})
    fig = _layout(fig, title, max(360, HEATMAP_ROW_PX * len(labels) + 190))
    fig.update_layout(margin={"l": 150, "r": 20, "t": 48, "b": 140})
    return fig


def attention_before_after(tokens: list[str], before: list[list[float]], after: list[list[float]], title: str, positions: list[int] | None = None) -> go.Figure:
    """The same (query, key) pattern without and with the interventions, side by side on one colour scale."""
    labels = position_labels(tokens, positions)
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04, subplot_titles=("before", "after the interventions"))
    for col, (name, pattern) in enumerate((("before", before), ("after", after)), start=1):
        fig.add_trace(go.Heatmap(
            z=pattern, x=labels, y=labels, colorscale="Blues", zmin=0, zmax=1, name=name, showscale=col == 2, colorbar={"title": "attn"},
            hovertemplate=f"{name}<br>query %{{y}}<br>key %{{x}}<br>%{{z:.3f}}<extra></extra>", xgap=1, ygap=1,
        ), row=1, col=col)
        fig.update_xaxes(type="category", title="key", tickangle=-60, tickfont={"family": "monospace", "size": 10}, row=1, col=col)
    fig.update_yaxes(type="category", autorange="reversed", tickfont={"family": "monospace", "size": 10})
    fig.update_yaxes(title="query", row=1, col=1)
    fig = _layout(fig, title, max(360, HEATMAP_ROW_PX * len(labels) + 190))
    fig.update_layout(margin={"l": 150, "r": 20, "t": 72, "b": 140})
    return fig


def weight_histogram(stats: dict, marks: list[dict] | None = None) -> go.Figure:
    """A tensor's value histogram (log counts) with the rule's bounds and its outliers marked.

    `marks`: [{"dim", "value"}] — entries to point at, such as the massive-activation dims.
    """
    hist = stats["histogram"]
    edges, counts = hist["edges"], hist["counts"]
    centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
    fig = go.Figure(go.Bar(x=centers, y=counts, width=widths, marker={"color": ACCENT, "line": {"width": 0}}, name="entries",
                           hovertemplate="%{x:.4g}: %{y} entries<extra></extra>"))
    outliers = stats["outliers"]
    for bound in (outliers["low"], outliers["high"]):
        fig.add_vline(x=bound, line={"color": TOP_COLORS[0], "dash": "dash", "width": 1})
    listed = outliers["listed"]
    if listed:
        fig.add_trace(go.Scatter(
            x=[o["value"] for o in listed], y=[0.6] * len(listed), mode="markers", name=f"outliers ({outliers['count']})",
            marker={"symbol": "triangle-up", "size": 11, "color": TOP_COLORS[0]},
            text=[f"index {o['index']}" for o in listed], hovertemplate="%{text}: %{x:.4g}<extra>outlier</extra>",
            customdata=[o["index"] for o in listed],  # the entry's index, for click-to-select
        ))
        for i, o in enumerate(listed[:2] if len(listed[0]["index"]) == 2 else []):  # name the extreme matrix entries (super weights)
            fig.add_annotation(x=o["value"], y=math.log10(0.6), text=f"[{o['index'][0]}, {o['index'][1]}] = {o['value']:.3g}", showarrow=True,
                               arrowhead=0, ax=-60, ay=-35 - 30 * i, font={"color": TOP_COLORS[0], "size": 11}, bgcolor="rgba(255,255,255,0.85)")
    for i, mark in enumerate(marks or []):
        fig.add_vline(x=mark["value"], line={"color": MARK_COLOR, "width": 2})
        fig.add_annotation(x=mark["value"], y=1.0 - 0.09 * i, yref="paper", text=f"dim {mark['dim']}", showarrow=False,
                           font={"color": MARK_COLOR}, xanchor="left", xshift=3, bgcolor="rgba(255,255,255,0.8)")
    rule = outliers["rule"]
    scale = " (effective scale 1 + w)" if stats.get("effective_scale_offset") else ""
    fig.update_xaxes(title="value" + scale)
    fig.update_yaxes(type="log", title="entries", dtick=1)
    title = f"{stats['name']} — {outliers['count']} outliers by {rule['kind']} k={rule['k']:g}"
    return _layout(fig, title, 340, bargap=0)


def norm_summary(weights: dict) -> go.Figure:
    """Across layers, per norm: the largest |scale| (log axis), the outlier count on hover."""
    series: dict[str, dict[str, list]] = {}
    for p in weights["parameters"]:
        if p["kind"] != "norm" or p["layer"] is None:
            continue
        s = series.setdefault(p["name"].split(".")[-2], {"layer": [], "max": [], "outliers": []})
        s["layer"].append(p["layer"])
        s["max"].append(max(abs(p["summary"]["max"]), abs(p["summary"]["min"])))
        s["outliers"].append(p["outliers"]["count"])
    fig = go.Figure()
    palette = (ACCENT, TOP_COLORS[1], MARK_COLOR, MEDIAN_COLOR)
    for i, (short, s) in enumerate(sorted(series.items())):
        color = palette[i % len(palette)]
        fig.add_trace(go.Scatter(x=s["layer"], y=s["max"], mode="lines+markers", name=f"{short}: max |w|", line={"color": color},
                                 customdata=s["outliers"], hovertemplate="layer %{x}: max |w| %{y:.3g}, %{customdata} outliers<extra>" + short + "</extra>"))
    fig.update_yaxes(type="log", title="max |scale|")
    fig.update_xaxes(title="layer")
    return _layout(fig, "Largest norm scale per layer (hover: outlier count)", 320)


def norm_overview(entries: list[dict], dims: list[int]) -> go.Figure:
    """Layer × dim, one panel per norm: the effective scale at chosen dims, log |scale| colour.

    A massive dim that a norm mutes shows as a dark column (SmolLM2: post-attention norm, dim 507).
    """
    norms = sorted({e["norm"] for e in entries})
    layers = sorted({e["layer"] for e in entries})
    by_key = {(e["norm"], e["layer"], e["dim"]): e for e in entries}
    logs = [math.log10(max(abs(e["value"]), LOG_FLOOR)) for e in entries] or [0.0]
    z_min, z_max = min(logs), max(logs)
    tickvals, ticktext = _log_ticks(z_min, z_max)
    fig = make_subplots(rows=1, cols=len(norms), shared_yaxes=True, subplot_titles=norms, horizontal_spacing=0.04)
    for col, norm in enumerate(norms, start=1):
        z, text = [], []
        for layer in layers:
            cells = [by_key.get((norm, layer, d)) for d in dims]
            z.append([math.log10(max(abs(c["value"]), LOG_FLOOR)) if c else None for c in cells])
            text.append([f"{c['value']:.4g} (rank {c['rank_abs']} of {c['size']} by |scale|)" if c else "" for c in cells])
        fig.add_trace(go.Heatmap(
            z=z, x=[str(d) for d in dims], y=layers, text=text, colorscale="Viridis", zmin=z_min, zmax=z_max, showscale=col == len(norms),
            colorbar={"title": "|scale|", "tickvals": tickvals, "ticktext": ticktext},
            hovertemplate=f"{norm}<br>layer %{{y}}, dim %{{x}}: %{{text}}<extra></extra>", xgap=1,
        ), row=1, col=col)
        fig.update_xaxes(type="category", title="dim", tickfont={"size": 9}, row=1, col=col)
    fig.update_yaxes(autorange="reversed", title="layer", row=1, col=1)
    return _layout(fig, "Norm scale at the massive and outlier dims, per layer", max(360, 12 * len(layers) + 140))


def line_norms(stats: dict, listed: int = 12) -> go.Figure:
    """A matrix's outlier rows and columns by L2 norm, beside the median norm of each axis."""
    fig = go.Figure()
    for axis, color in (("rows", ACCENT), ("columns", TOP_COLORS[1])):
        lines = stats.get(axis)
        if not lines:
            continue
        shown = lines["outliers"]["listed"][:listed]
        fig.add_trace(go.Bar(
            x=[f"{axis[0]}{o['index'][0]}" for o in shown], y=[o["value"] for o in shown], name=f"{axis}: {lines['outliers']['count']} outliers",
            marker={"color": color}, customdata=[[axis, o["index"][0]] for o in shown],
            hovertemplate=f"{axis[:-1]} %{{customdata[1]}}: L2 norm %{{y:.4g}}<extra>click to select</extra>",
        ))
        fig.add_hline(y=lines["summary"]["median"], line={"color": color, "dash": "dot"})
    fig.update_yaxes(title="L2 norm")
    fig.update_xaxes(type="category", tickangle=-45)
    return _layout(fig, "Outlier rows (r: write an output dim) and columns (c: read an input dim); dotted: median", 320)


def loss_curves(runs: list[dict]) -> go.Figure:
    """Training loss per step, one line per method."""
    fig = go.Figure()
    for run in runs:
        losses = run.get("train_loss") or []
        fig.add_trace(go.Scatter(x=list(range(1, len(losses) + 1)), y=losses, mode="lines", name=run["name"],
                                 hovertemplate="step %{x}: %{y:.4f}<extra>" + run["name"] + "</extra>"))
    steps = max((len(run.get("train_loss") or []) for run in runs), default=0)
    fig.update_xaxes(title="step", dtick=1 if steps <= 20 else None)
    fig.update_yaxes(title="train loss")
    return _layout(fig, "Training loss", 320)


def outlier_shift(before: dict, runs: list[dict]) -> go.Figure:
    """Per layer max |x| before fine-tuning and after each method (log scale)."""
    fig = go.Figure(go.Scatter(y=before["max_abs"], mode="lines+markers", name="base model", line={"color": BEFORE_COLOR, "width": 3},
                               hovertemplate="layer %{x}: %{y:,.1f}<extra>base</extra>"))
    for run in runs:
        after = run.get("outliers_after") or {}
        if after.get("max_abs"):
            fig.add_trace(go.Scatter(y=after["max_abs"], mode="lines", name=run["name"], line={"dash": "dash"},
                                     hovertemplate="layer %{x}: %{y:,.1f}<extra>" + run["name"] + "</extra>"))
    fig.update_yaxes(type="log", title="max |x| (resid_post)")
    fig.update_xaxes(title="layer", dtick=1 if len(before["max_abs"]) <= 32 else None, range=[-0.5, len(before["max_abs"]) - 0.5])
    return _layout(fig, "Outliers before and after fine-tuning", 320)


def live_loss(points: list[list]) -> go.Figure:
    """The loss the job reported at each poll, one line per method (phase) while it runs."""
    fig = go.Figure()
    by_phase: dict[str, tuple[list[int], list[float]]] = {}
    for step, loss, phase in points:
        xs, ys = by_phase.setdefault(phase.split(" (")[0] or "run", ([], []))
        xs.append(step)
        ys.append(loss)
    for phase, (xs, ys) in by_phase.items():
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=phase, hovertemplate="step %{x}: %{y:.4f}<extra>" + phase + "</extra>"))
    fig.update_xaxes(title="step (all methods in sequence)")
    fig.update_yaxes(title="train loss")
    return _layout(fig, "Training loss, live", 320)


COMPARE_COLORS = ("#2c3e50", "#c0392b")  # A, B


def compare_curves(a: dict, b: dict, labels: tuple[str, str]) -> go.Figure:
    """Two scans' largest |x| and median |x| per layer on one log axis: A solid, B dashed."""
    fig = go.Figure()
    for scan, label, color, dash in ((a, labels[0], COMPARE_COLORS[0], None), (b, labels[1], COMPARE_COLORS[1], "dash")):
        layers = [entry["layer"] for entry in scan["layers"]]
        fig.add_trace(go.Scatter(x=layers, y=[(top_values(e) or [None])[0] for e in scan["layers"]], mode="lines+markers", name=f"{label}: top-1 |x|",
                                 line={"color": color, "dash": dash}, hovertemplate="layer %{x}: %{y:,.1f}<extra>" + label + "</extra>"))
        fig.add_trace(go.Scatter(x=layers, y=[e["median_abs"] for e in scan["layers"]], mode="lines", name=f"{label}: median |x|",
                                 line={"color": color, "dash": "dot", "width": 1}, hovertemplate="layer %{x}: %{y:.3g}<extra>" + label + " median</extra>"))
    fig.update_yaxes(type="log", title="|activation|")
    fig.update_xaxes(title="layer")
    return _layout(fig, "Largest and median activation per layer", 360)


def compare_sinks(a: dict, b: dict, labels: tuple[str, str]) -> go.Figure:
    fig = sink_curve(a["sink_share"], b["sink_share"], "Sink share per layer")
    fig.data[0].name, fig.data[1].name = labels
    return fig


def compare_difference(a: dict, b: dict, labels: tuple[str, str]) -> go.Figure:
    """Per layer, log10 of B's largest |x| over A's: above zero B is larger."""
    ratios = []
    for ea, eb in zip(a["layers"], b["layers"]):
        ta, tb = (top_values(ea) or [0.0])[0], (top_values(eb) or [0.0])[0]
        ratios.append(math.log10(max(tb, LOG_FLOOR) / max(ta, LOG_FLOOR)))
    fig = go.Figure(go.Bar(x=list(range(len(ratios))), y=ratios, marker={"color": [COMPARE_COLORS[1] if r > 0 else COMPARE_COLORS[0] for r in ratios]},
                           hovertemplate="layer %{x}: ×%{customdata:.3g}<extra></extra>", customdata=[10 ** r for r in ratios]))
    fig.update_yaxes(title=f"log10 {labels[1]} / {labels[0]}", zeroline=True)
    fig.update_xaxes(title="layer")
    return _layout(fig, f"Difference: largest |x| of {labels[1]} over {labels[0]}", 300)


def difference_heatmap(a: dict, b: dict, labels: tuple[str, str]) -> go.Figure:
    """B − A in log10 |x| over the positions both have (tokens aligned from the end) and the same pooled columns."""
    rows = min(len(a["values"]), len(b["values"]))
    va, vb = a["values"][-rows:], b["values"][-rows:]
    z = [[math.log10(max(abs(y), LOG_FLOOR)) - math.log10(max(abs(x), LOG_FLOOR)) for x, y in zip(ra, rb)] for ra, rb in zip(va, vb)]
    bound = max((abs(v) for row in z for v in row), default=1.0) or 1.0
    block = a.get("block_size", 1)
    x_labels = [f"{d}" if block == 1 else f"{d}–{d + block - 1}" for d in a["dims"]]
    offset_b = len(b["tokens"]) - rows
    y_labels = [token_label(offset_b + i, t) for i, t in enumerate(b["tokens"][-rows:])]
    fig = go.Figure(go.Heatmap(z=z, x=x_labels, y=y_labels, colorscale="RdBu", reversescale=True, zmin=-bound, zmax=bound, colorbar={"title": "log10 ratio"},
                               hovertemplate="%{y}<br>dims %{x}<br>log10 " + labels[1] + "/" + labels[0] + " = %{z:.2f}<extra></extra>", xgap=1, ygap=1))
    fig.update_xaxes(type="category", title="dims (block start)", tickangle=-90 if len(x_labels) > 24 else 0)
    fig.update_yaxes(type="category", autorange="reversed", tickfont={"family": "monospace", "size": 11})
    fig = _layout(fig, f"Layer {a['layer']}: |x| of {labels[1]} over {labels[0]}, per position and block of dims", max(320, HEATMAP_ROW_PX * rows + 150))
    fig.update_layout(margin={"l": 150, "r": 20, "t": 48, "b": 70})
    return fig
