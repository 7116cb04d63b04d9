"""The study's figures, from summary.parquet and phases.json alone (so they can be redrawn any time).

Written with matplotlib's object API on an Agg canvas (no pyplot, no global backend switch), so
drawing works headless and does not disturb a user's notebook backend. Steps go on a symlog x axis
(linear below 1, logarithmic above) so step 0 is shown next to 1, 2, 4, ... Every file is written
to a temporary name and moved into place, so a crash never leaves a half-written PNG.

Files (each skipped when its data is absent), in the paper's figure order (FIGURES):
  econv_tokens.png / econv_pairs.png   main curve per size, band +-1 SD over tokens (sd_tokens: the
                                paper's "variance across contexts") / over ordered seed pairs (sd_pairs);
                                95% bootstrap CI band, detected phases shaded, fitted phase model
  econv_sizes.png               all sizes on one axis, +-1 SD over seed pairs
  kl_baselines.png              mean KL to the uniform and to the unigram distribution vs step
  econv_by_{freq_bin, final_surprisal_bin, paper_pos}.png   per category, band +-1 SD over pairs
  econv_by_xpos_{nouns, verbs, other}.png                   the paper's Penn-tag sub-figures
  econv_by_{pos_group, upos}.png                            our UPOS views
  econv_by_word_position.png                                target starts (begin) / continues (inside) a word
  ce_by_{freq_bin, final_surprisal_bin, paper_pos}.png      cross-entropy (mean surprisal), +-1 SD over seeds
  regression.png, lr.png        report/appendix_figures.py
  agreement.png                 top-1 agreement and JS between seeds (--metrics), report/agreement.py
Phase marks are suite-aware (`phase_steps`, a suite preset's reference boundaries: PolyPythia's are
the paper's 16/256/2000): with them every step-axis panel carries those the steps reach (dashed), the
detected boundaries (dotted), the detected phases shaded and the phase fit; without them (MultiBERTs,
Mistral, local suites) none of these, as the paper draws MultiBERTs. A curve that jumps from step 0 to
a first non-zero step > 1 (MultiBERTs' 0 -> 20k) draws that segment dashed: no training in between
was measured. A band of E[conv] (which is <= 0) is clipped at 0, a band of surprisal at 0 from below.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import polars as pl
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from seedkl_jax.analysis.aggregate import category_order, size_order
from seedkl_jax.data.annotate import PAPER_XPOS_PANELS
from seedkl_jax.report import agreement
from seedkl_jax.report.appendix_figures import lr_figure, regression_figure
from seedkl_jax.report.plotting import detected_lines, gap_segment, phase_lines, save, step_axis, summary_rows

PHASE_COLORS = {"uniform": "#bdbdbd", "convergence": "#a1d99b", "divergence": "#fc9272",
                "reconvergence": "#9ecae1", "late": "#fdd0a2"}
CATEGORY_FIGURES = (("freq_bin", "frequency bin (corpus count)"),
                    ("final_surprisal_bin", "final surprisal (nats)"), ("paper_pos", "PoS (paper's groups)"))
OUR_CATEGORY_FIGURES = (("pos_group", "word class"), ("upos", "UPOS"), ("word_position", "word position"))
CE_FIGURES = CATEGORY_FIGURES
LINE = "#54278f"  # E[conv] line and bands: purple, distinct from every phase shade


def _shade(ax, p: dict | None) -> None:
    for ph in (p or {}).get("phases", []):
        if (ph["name"] == "uniform" and not ph["present"]) or ph["name"] == "none":
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


def _band(ax, r: pl.DataFrame, lo, hi, **kw) -> None:
    a, b = r[lo].to_numpy().astype(float), r[hi].to_numpy().astype(float)
    ax.fill_between(r["step"].to_numpy(), a, b, lw=0, **kw)


BAND_LABEL = {"sd_tokens": "±1 SD over tokens", "sd_pairs": "±1 SD over seed pairs"}


def _sd_band(ax, st, y, sd, upper0=True, **kw) -> None:
    """y ± sd, clipped at 0 from above (E[conv] <= 0) or from below (surprisal >= 0)."""
    sd = np.nan_to_num(np.asarray(sd, float))
    lo, hi = y - sd, y + sd
    lo, hi = (lo, np.minimum(hi, 0.0)) if upper0 else (np.maximum(lo, 0.0), hi)
    ax.fill_between(st, lo, hi, lw=0, **kw)


def _line(ax, st, y, fmt="o-", **kw) -> None:
    """The measured curve; its segment from step 0 across unmeasured training is dashed (gap_segment)."""
    st, y = np.asarray(st), np.asarray(y, float)
    gap = gap_segment(st)
    if gap is None:
        ax.plot(st, y, fmt, **kw)
        return
    cut = int(np.searchsorted(st, gap))
    seg = {k: v for k, v in kw.items() if k != "label"}
    ax.plot(st[:cut + 1], y[:cut + 1], "--", **{**seg, "marker": None})
    ax.plot(st[:1], y[:1], fmt.replace("-", ""), **seg)
    ax.plot(st[cut:], y[cut:], fmt, **kw)


def _phase_marks(ax, p: dict | None, steps, phase_steps, label=False) -> None:
    """Reference (dashed) and detected (dotted) boundaries, only for a suite with phase_steps."""
    if phase_steps:
        phase_lines(ax, steps, phase_steps, label=label)
        detected_lines(ax, p, label=label)


def _econv_panels(summary, phases, sizes, path, band="sd_tokens", phase_steps=None) -> Path:
    fig, axes = _grid(len(sizes))
    for i, (ax, size) in enumerate(zip(axes, sizes)):
        r = summary_rows(summary, "seeds", "all", size)
        st, y, sd = r["step"].to_numpy(), r["e_conv"].to_numpy(), r[band].to_numpy()
        p = phases.get(size) if phase_steps else None
        _shade(ax, p)
        _sd_band(ax, st, y, sd, color=LINE, alpha=0.18, label=BAND_LABEL[band])
        _band(ax, r, "ci_low", "ci_high", color=LINE, alpha=0.4, label="95% bootstrap CI")
        _line(ax, st, y, color=LINE, ms=3, lw=1.5, label="E[conv]")
        if p and any(v is not None for v in p.get("e_conv_fit", [])):
            fx = [s for s, v in zip(p["steps"], p["e_conv_fit"]) if v is not None]
            fy = [v for v in p["e_conv_fit"] if v is not None]
            ax.plot(fx, fy, ":", color="k", lw=1.0, label="phase fit")
        _phase_marks(ax, p, st, phase_steps, label=i == 0)
        step_axis(ax, st)
        ax.set_ylabel("E[conv] (nats)" if i % 3 == 0 else "")
        status = (p or {}).get("status", "no phases computed").replace("_", " ")
        ax.set_title(f"{size}: {status}" if phase_steps else size, fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    shown = {ph["name"]: ph["label"] for p in (phases.values() if phase_steps else ())
             for ph in (p or {}).get("phases", []) if ph["name"] != "uniform" or ph["present"]}
    for name, color in PHASE_COLORS.items():
        if name in shown:
            handles.append(Patch(color=color, alpha=0.5))
            labels.append(f"phase: {shown[name]}")
    fig.legend(handles, labels, loc="outside lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle("Convergence between seeds over training: E[conv] = −mean KL between seed pairs "
                 f"(higher = more alike); band {BAND_LABEL[band]}", fontsize=11)
    return save(fig, path)


def _econv_sizes(summary, sizes, path, phase_steps=None) -> Path:
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    allst = []
    for i, size in enumerate(sizes):
        r = summary_rows(summary, "seeds", "all", size)
        st, y, sd = r["step"].to_numpy(), r["e_conv"].to_numpy(), r["sd_pairs"].to_numpy()
        allst += list(st)
        _sd_band(ax, st, y, sd, color=f"C{i}", alpha=0.15)
        _line(ax, st, y, color=f"C{i}", ms=3, label=size)
    if phase_steps:
        phase_lines(ax, allst, phase_steps)
    step_axis(ax, allst)
    ax.set_ylabel("E[conv] (nats)")
    ax.set_title("E[conv] by model size (bands: ±1 SD over seed pairs)")
    ax.legend(fontsize=8, title="size")
    return save(fig, path)


def _baselines(summary, sizes, path) -> Path | None:
    metrics = [m for m in ("uniform", "unigram") if summary_rows(summary, m, "all").height]
    if not metrics:
        return None
    fig, axes = _grid(len(metrics), w=5.0, h=3.6, sharey=False)
    for ax, m in zip(axes, metrics):
        allst = []
        for i, size in enumerate(sizes):
            r = summary_rows(summary, m, "all", size)
            if not r.height:
                continue
            allst += r["step"].to_list()
            # CI columns are of e_conv = -mean_kl: the mean-KL interval is their negation
            ax.fill_between(r["step"].to_numpy(), -r["ci_high"].to_numpy().astype(float),
                            -r["ci_low"].to_numpy().astype(float), color=f"C{i}", alpha=0.25, lw=0)
            ax.plot(r["step"].to_numpy(), r["mean_kl"].to_numpy(), "o-", color=f"C{i}", ms=3, label=size)
        step_axis(ax, allst)
        ax.set_ylabel(f"mean KL(model ‖ {m}) (nats)")
        ax.set_title(f"KL to the {m} distribution", fontsize=10)
        ax.legend(fontsize=8, title="size")
    fig.suptitle("Distance of each seed's predictions from simple baselines (bands: 95% CI)")
    return save(fig, path)


def _by_category(summary, sizes, phases, kind, what, path, metric="seeds", only=None, phase_steps=None
                 ) -> Path | None:
    """One panel per size, one line per category (only: a subset, in the given order), band +-1 sd_pairs."""
    allrows = summary_rows(summary, metric, kind)
    if only is not None:
        allrows = allrows.filter(pl.col("category").is_in(list(only)))
    if not allrows.height:
        return None
    present = set(allrows["category"].to_list())
    cats = [c for c in only if c in present] if only is not None else category_order(kind, present)
    if kind in ("freq_bin", "final_surprisal_bin"):
        cmap = matplotlib.colormaps["viridis"]
        colors = {c: cmap(0.9 * i / max(len(cats) - 1, 1)) for i, c in enumerate(cats)}
    else:
        cmap = matplotlib.colormaps["tab20" if len(cats) > 10 else "tab10"]
        colors = {c: cmap(i % cmap.N) for i, c in enumerate(cats)}
    ce = metric == "surprisal"
    fig, axes = _grid(len(sizes))
    for i, (ax, size) in enumerate(zip(axes, sizes)):
        r = allrows.filter(pl.col("size") == size)
        for c in cats:
            rc = r.filter(pl.col("category") == c).sort("step")
            if rc.height:
                st, y = rc["step"].to_numpy(), rc["mean_kl" if ce else "e_conv"].to_numpy()
                _sd_band(ax, st, y, rc["sd_pairs"].to_numpy(), upper0=not ce, color=colors[c], alpha=0.12)
                _line(ax, st, y, ms=2.5, lw=1.3, color=colors[c])
        _phase_marks(ax, (phases or {}).get(size), r["step"].to_list() or [1], phase_steps)
        step_axis(ax, r["step"].to_list() or [1])
        ax.set_ylabel(("cross-entropy (nats)" if ce else "E[conv] (nats)") if i % 3 == 0 else "")
        ax.set_title(size, fontsize=10)
    last = allrows.filter(pl.col("step") == allrows["step"].max())
    n = {}                                    # token count per category, shown when all sizes agree
    for c, k in zip(last["category"].to_list(), last["n_tokens"].to_list()):
        n[c] = k if n.get(c, k) == k else None
    n = {c: k for c, k in n.items() if k is not None}
    handles = [Patch(color=colors[c]) for c in cats]
    labels = [f"{c} (n={n[c]})" if c in n else c for c in cats]
    fig.legend(handles, labels, loc="outside right center", fontsize=8, title=what, frameon=False)
    band = "±1 SD over seeds" if ce else "±1 SD over seed pairs"
    fig.suptitle(f"{'Cross-entropy' if ce else 'E[conv]'} by {what} (bands: {band})")
    return save(fig, path)


def _order(sizes):
    """labels -> the present ones in `sizes`' order (None: size_order)."""
    if sizes is None:
        return size_order
    return lambda labels: [s for s in sizes if s in set(labels)]


def make_figures(summary: pl.DataFrame, phases: dict, fig_dir, *, regression=None, lr_schedule=None,
                 phase_steps=None, sizes=None) -> list[Path]:
    """Draw every figure the summary has data for into fig_dir, in the paper's order; returns the paths.
    regression: regression.parquet frame; lr_schedule: analysis.lr.LRSchedule of the suite (or None);
    phase_steps: the suite's reference phase boundaries (None: no phase marks; module docstring);
    sizes: panel order, smallest first (default: analysis.aggregate.size_order of the labels)."""
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    phases = phases or {}
    ps = tuple(phase_steps) if phase_steps else None
    order = _order(sizes)
    sizes = order(summary.filter(pl.col("metric") == "seeds")["size"].to_list())
    out: list[Path | None] = []
    if sizes:
        out.append(_econv_panels(summary, phases, sizes, fig_dir / "econv_tokens.png", "sd_tokens", ps))
        out.append(_econv_panels(summary, phases, sizes, fig_dir / "econv_pairs.png", "sd_pairs", ps))
        out.append(_econv_sizes(summary, sizes, fig_dir / "econv_sizes.png", ps))
    out.append(_baselines(summary, order(summary["size"].to_list()), fig_dir / "kl_baselines.png"))
    cat = lambda kind, what, name, **kw: _by_category(summary, sizes, phases, kind, what,  # noqa: E731
                                                      fig_dir / name, phase_steps=ps, **kw)
    if sizes:
        for kind, what in CATEGORY_FIGURES:
            out.append(cat(kind, what, f"econv_by_{kind}.png"))
        for panel, tags in PAPER_XPOS_PANELS.items():
            out.append(cat("xpos", f"Penn tag ({panel})", f"econv_by_xpos_{panel}.png", only=tags))
        for kind, what in CE_FIGURES:
            out.append(cat(kind, what, f"ce_by_{kind}.png", metric="surprisal"))
    if regression is not None and regression.height:
        out.append(regression_figure(regression, phases, fig_dir / "regression.png", phase_steps=ps))
    if lr_schedule is not None and sizes:
        steps = summary["step"].unique().to_list()
        out.append(lr_figure(lr_schedule, sizes, steps, phases, fig_dir / "lr.png", phase_steps=ps))
    for kind, what in OUR_CATEGORY_FIGURES if sizes else ():
        out.append(cat(kind, what, f"econv_by_{kind}.png"))
    out.append(agreement.figure(summary, fig_dir / "agreement.png", order(summary["size"].to_list()), ps))
    return [p for p in out if p is not None]
