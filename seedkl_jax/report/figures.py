"""The study's figures, from summary.parquet and phases.json alone (so they can be redrawn any time).

Written with matplotlib's object API on an Agg canvas (no pyplot, no global backend switch), so
drawing works headless and does not disturb a user's notebook backend. Steps go on a symlog x axis
(linear below 1, logarithmic above) so step 0 is shown next to 1, 2, 4, ... Every file is written
to a temporary name and moved into place, so a crash never leaves a half-written PNG.

Files (each skipped when its data is absent):
  econv.png                     E[conv] vs step, one panel per size: +-1 SD band (over tokens),
                                95% bootstrap CI band, detected phases shaded, fitted phase model,
                                the paper's boundaries 16/256/2000 dashed
  econv_sizes.png               all sizes on one axis, +-1 SD bands
  kl_baselines.png              mean KL to the uniform and to the unigram distribution vs step
  econv_by_freq_bin.png         E[conv] per frequency bin, one panel per size
  econv_by_pos_group.png        per function / content / other
  econv_by_upos.png             per UPOS tag
  econv_by_final_surprisal_bin.png  per bin of the token's final surprisal (depends on size)
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from seedkl_jax.analysis.aggregate import category_order, size_order
from seedkl_jax.analysis.phases import PAPER_BOUNDARIES

PHASE_COLORS = {"uniform": "#bdbdbd", "convergence": "#a1d99b", "divergence": "#fc9272",
                "reconvergence": "#9ecae1", "late": "#fdd0a2"}
CATEGORY_FIGURES = (("freq_bin", "frequency bin (corpus count)"), ("pos_group", "word class"),
                    ("upos", "UPOS"), ("final_surprisal_bin", "final surprisal (nats)"))
DPI = 150
LINE = "#54278f"  # E[conv] line and bands: purple, distinct from every phase shade


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png")
    os.replace(tmp, path)
    return path


def _step_axis(ax, steps) -> None:
    ax.set_xscale("symlog", linthresh=1.0, linscale=0.4)
    hi = max(max(steps), 1)
    ax.set_xlim(0, hi * 1.4)
    ax.set_xlabel("training step (symlog: 0, then log scale)")
    ax.grid(True, which="major", alpha=0.3, lw=0.6)


def _paper_lines(ax, steps, label=True) -> None:
    hi = max(steps)
    for i, s in enumerate(PAPER_BOUNDARIES.values()):
        if s <= hi:
            ax.axvline(s, color="0.35", ls="--", lw=0.8,
                       label="paper boundaries (16/256/2000)" if label and i == 0 else None)


def _shade(ax, p: dict | None) -> None:
    for ph in (p or {}).get("phases", []):
        if ph["name"] == "uniform" and not ph["present"]:
            continue
        ax.axvspan(ph["start_step"], ph["end_step"], color=PHASE_COLORS.get(ph["name"], "0.9"), alpha=0.35, lw=0)


def _grid(n: int, w=4.4, h=3.3, sharey=True):
    """n panels, 3 per row; size panels share the y axis so sizes compare at a glance."""
    ncol = min(n, 3)
    nrow = math.ceil(n / ncol)
    fig = Figure(figsize=(w * ncol, h * nrow), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False, sharey=sharey).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _rows(summary, metric, kind, size=None) -> pl.DataFrame:
    r = summary.filter((pl.col("metric") == metric) & (pl.col("category_kind") == kind))
    if size is not None:
        r = r.filter(pl.col("size") == size)
    return r.sort("step")


def _band(ax, r: pl.DataFrame, lo, hi, **kw) -> None:
    a, b = r[lo].to_numpy().astype(float), r[hi].to_numpy().astype(float)
    ax.fill_between(r["step"].to_numpy(), a, b, lw=0, **kw)


def _econv_panels(summary, phases, sizes, path) -> Path:
    fig, axes = _grid(len(sizes))
    for i, (ax, size) in enumerate(zip(axes, sizes)):
        r = _rows(summary, "seeds", "all", size)
        st, y, sd = r["step"].to_numpy(), r["e_conv"].to_numpy(), r["sd"].to_numpy()
        p = phases.get(size)
        _shade(ax, p)
        ax.fill_between(st, y - sd, y + sd, color=LINE, alpha=0.18, lw=0, label="±1 SD over tokens")
        _band(ax, r, "ci_low", "ci_high", color=LINE, alpha=0.4, label="95% bootstrap CI")
        ax.plot(st, y, "o-", color=LINE, ms=3, lw=1.5, label="E[conv]")
        if p and any(v is not None for v in p.get("e_conv_fit", [])):
            fx = [s for s, v in zip(p["steps"], p["e_conv_fit"]) if v is not None]
            fy = [v for v in p["e_conv_fit"] if v is not None]
            ax.plot(fx, fy, ":", color="k", lw=1.0, label="phase fit")
        _paper_lines(ax, st)
        _step_axis(ax, st)
        ax.set_ylabel("E[conv] (nats)" if i % 3 == 0 else "")
        status = (p or {}).get("status", "no phases computed").replace("_", " ")
        ax.set_title(f"{size}: {status}", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    shown = {ph["name"]: ph["label"] for p in phases.values() for ph in (p or {}).get("phases", [])
             if ph["name"] != "uniform" or ph["present"]}
    for name, color in PHASE_COLORS.items():
        if name in shown:
            handles.append(Patch(color=color, alpha=0.5))
            labels.append(f"phase: {shown[name]}")
    fig.legend(handles, labels, loc="outside lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle("Convergence between seeds over training: E[conv] = −mean KL between seed pairs "
                 "(higher = more alike)", fontsize=11)
    return _save(fig, path)


def _econv_sizes(summary, sizes, path) -> Path:
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    allst = []
    for i, size in enumerate(sizes):
        r = _rows(summary, "seeds", "all", size)
        st, y, sd = r["step"].to_numpy(), r["e_conv"].to_numpy(), r["sd"].to_numpy()
        allst += list(st)
        ax.fill_between(st, y - sd, y + sd, color=f"C{i}", alpha=0.12, lw=0)
        ax.plot(st, y, "o-", color=f"C{i}", ms=3, label=size)
    _paper_lines(ax, allst)
    _step_axis(ax, allst)
    ax.set_ylabel("E[conv] (nats)")
    ax.set_title("E[conv] by model size (bands: ±1 SD over tokens)")
    ax.legend(fontsize=8, title="size")
    return _save(fig, path)


def _baselines(summary, sizes, path) -> Path | None:
    metrics = [m for m in ("uniform", "unigram") if _rows(summary, m, "all").height]
    if not metrics:
        return None
    fig, axes = _grid(len(metrics), w=5.0, h=3.6, sharey=False)
    for ax, m in zip(axes, metrics):
        allst = []
        for i, size in enumerate(sizes):
            r = _rows(summary, m, "all", size)
            if not r.height:
                continue
            allst += r["step"].to_list()
            # CI columns are of e_conv = -mean_kl: the mean-KL interval is their negation
            ax.fill_between(r["step"].to_numpy(), -r["ci_high"].to_numpy().astype(float),
                            -r["ci_low"].to_numpy().astype(float), color=f"C{i}", alpha=0.25, lw=0)
            ax.plot(r["step"].to_numpy(), r["mean_kl"].to_numpy(), "o-", color=f"C{i}", ms=3, label=size)
        _step_axis(ax, allst)
        ax.set_ylabel(f"mean KL(model ‖ {m}) (nats)")
        ax.set_title(f"KL to the {m} distribution", fontsize=10)
        ax.legend(fontsize=8, title="size")
    fig.suptitle("Distance of each seed's predictions from simple baselines (bands: 95% CI)")
    return _save(fig, path)


def _by_category(summary, sizes, kind, what, path) -> Path | None:
    allrows = _rows(summary, "seeds", kind)
    if not allrows.height:
        return None
    cats = category_order(kind, allrows["category"].unique().to_list())
    ordered = kind in ("freq_bin", "final_surprisal_bin")
    if ordered:
        cmap = matplotlib.colormaps["viridis"]
        colors = {c: cmap(0.9 * i / max(len(cats) - 1, 1)) for i, c in enumerate(cats)}
    else:
        cmap = matplotlib.colormaps["tab20" if len(cats) > 10 else "tab10"]
        colors = {c: cmap(i % cmap.N) for i, c in enumerate(cats)}
    fig, axes = _grid(len(sizes))
    for i, (ax, size) in enumerate(zip(axes, sizes)):
        r = allrows.filter(pl.col("size") == size)
        for c in cats:
            rc = r.filter(pl.col("category") == c).sort("step")
            if rc.height:
                ax.plot(rc["step"].to_numpy(), rc["e_conv"].to_numpy(), "o-", ms=2.5, lw=1.3, color=colors[c])
        _paper_lines(ax, r["step"].to_list() or [1], label=False)
        _step_axis(ax, r["step"].to_list() or [1])
        ax.set_ylabel("E[conv] (nats)" if i % 3 == 0 else "")
        ax.set_title(size, fontsize=10)
    last = allrows.filter(pl.col("step") == allrows["step"].max())
    n = {}                                    # token count per category, shown when all sizes agree
    for c, k in zip(last["category"].to_list(), last["n_tokens"].to_list()):
        n[c] = k if n.get(c, k) == k else None
    n = {c: k for c, k in n.items() if k is not None}
    handles = [Patch(color=colors[c]) for c in cats]
    labels = [f"{c} (n={n[c]})" if c in n else c for c in cats]
    fig.legend(handles, labels, loc="outside right center", fontsize=8, title=what, frameon=False)
    fig.suptitle(f"E[conv] by {what}")
    return _save(fig, path)


def make_figures(summary: pl.DataFrame, phases: dict, fig_dir) -> list[Path]:
    """Draw every figure the summary has data for into fig_dir; returns the written paths."""
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    sizes = size_order(summary.filter(pl.col("metric") == "seeds")["size"].to_list())
    out: list[Path | None] = []
    if sizes:
        out.append(_econv_panels(summary, phases or {}, sizes, fig_dir / "econv.png"))
        out.append(_econv_sizes(summary, sizes, fig_dir / "econv_sizes.png"))
    out.append(_baselines(summary, size_order(summary["size"].to_list()), fig_dir / "kl_baselines.png"))
    for kind, what in CATEGORY_FIGURES:
        if sizes:
            out.append(_by_category(summary, sizes, kind, what, fig_dir / f"econv_by_{kind}.png"))
    return [p for p in out if p is not None]
