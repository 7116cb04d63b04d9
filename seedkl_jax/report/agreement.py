"""The agreement metrics in the report: top-1 agreement and Jensen-Shannon divergence between seeds.

Why a module of its own: these rows (summary.parquet's metric "top1_agree" and "js", --metrics) are
read the other way round from E[conv]'s: agreement is a rate in [0, 1] (1 − churn: how often two seeds'
most likely next tokens coincide), JS a bounded divergence in nats (≤ ln 2). Both are shown as measured,
not negated; their intervals are the same seed/document bootstrap as E[conv]'s (summary's ci_* are of
e_conv = +agreement / −JS, analysis/aggregate.py, so JS's interval is their negation).

  agreement.png   one panel per metric, all sizes on one axis, band the 95% CI, the suite's reference
                  phase lines (dashed) where the steps reach them, as on the E[conv] figures
  `section`       report.md's table: per step and size, each metric with its CI
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from seedkl_jax.report.mdtable import table
from seedkl_jax.report.plotting import phase_lines, save, step_axis, summary_rows

LABELS = {"top1_agree": "top-1 agreement (fraction of seed pairs)", "js": "Jensen-Shannon divergence (nats)"}
CAPTION = ("Agreement between seeds over training: top-1 agreement = how often two seeds' most likely next "
           "tokens coincide (1 − churn); Jensen-Shannon divergence when measured (--metrics=...,js). "
           "Mean over tokens and ordered seed pairs; bands 95% seed/document bootstrap CI.")


def measured(summary: pl.DataFrame) -> list[str]:
    """The agreement metrics the summary has rows for, in LABELS' order."""
    return [m for m in LABELS if summary_rows(summary, m, "all").height]


def _mean_ci(r: pl.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The metric as measured (mean_kl) and its 95% CI (summary's ci_* are of e_conv: JS's negated)."""
    lo, hi = (r["ci_low"].to_numpy().astype(float), r["ci_high"].to_numpy().astype(float))
    if metric != "top1_agree":
        lo, hi = -hi, -lo
    return r["mean_kl"].to_numpy().astype(float), lo, hi


def figure(summary: pl.DataFrame, path, sizes: list[str], phase_steps=None) -> Path | None:
    """agreement.png (module docstring); None when the summary has no agreement rows."""
    metrics = measured(summary)
    if not metrics:
        return None
    fig = Figure(figsize=(6.0 * len(metrics), 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    for j, (ax, metric) in enumerate(zip(axes, metrics)):
        allst = []
        for i, size in enumerate(sizes):
            r = summary_rows(summary, metric, "all", size)
            if not r.height:
                continue
            st = r["step"].to_numpy()
            y, lo, hi = _mean_ci(r, metric)
            allst += st.tolist()
            ax.fill_between(st, lo, hi, color=f"C{i}", alpha=0.25, lw=0)
            ax.plot(st, y, "o-", color=f"C{i}", ms=3, label=size)
        if phase_steps:
            phase_lines(ax, allst, phase_steps, label=j == 0)
        step_axis(ax, allst or [1])
        ax.set_ylabel(LABELS[metric])
        if metric == "top1_agree":
            ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8, title="size")
    fig.suptitle("Agreement between seeds over training (bands: 95% bootstrap CI)")
    return save(fig, Path(path))


def section(summary: pl.DataFrame, sizes: list[str]) -> str | None:
    """report.md's table: one row per step, per size each measured metric with its 95% CI."""
    metrics = measured(summary)
    if not metrics:
        return None
    cells: dict[tuple, str] = {}
    for metric in metrics:
        r = summary_rows(summary, metric, "all")
        for size in sizes:
            rs = r.filter(pl.col("size") == size)
            y, lo, hi = _mean_ci(rs, metric)
            for st, v, a, b in zip(rs["step"].to_list(), y, lo, hi):
                ci = "" if np.isnan(a) else f" [{a:.3g}, {b:.3g}]"
                cells[(metric, size, st)] = f"{v:.4g}{ci}"
    steps = sorted({k[2] for k in cells})
    short = {"top1_agree": "top-1 agreement", "js": "JS (nats)"}
    header = ["step"] + [f"{s}: {short[m]} [95% CI]" for s in sizes for m in metrics]
    rows = [[str(st)] + [cells.get((m, s, st), "–") for s in sizes for m in metrics] for st in steps]
    return ("Mean over the text's tokens and the ordered seed pairs (`summary.parquet`, metric `top1_agree` / "
            "`js`, every category kind as for E[conv]); higher agreement and lower JS = seeds more alike.\n\n"
            + table(header, rows))
