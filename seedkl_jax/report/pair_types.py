"""The init-vs-data-order view of a study: figure econv_by_pair_type.png and its report section, from
pair_types.parquet (analysis/pair_types.py) alone.

One panel per size, one line per pair type (which seed factors differ) with its 95% bootstrap band, the
suite's reference phase lines when it has them; the section explains the types, embeds the figure and
tabulates each size's last step.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from seedkl_jax.analysis.pair_types import factor_order
from seedkl_jax.report.mdtable import table
from seedkl_jax.report.plotting import phase_lines, save, step_axis

TITLE = "Init vs data order: E[conv] by pair type"
STEM = "econv_by_pair_type"


def pair_type_figure(df: pl.DataFrame, sizes: list[str], path: Path, phase_steps=None) -> Path | None:
    """econv_by_pair_type.png: panel per size, line per pair type, band = 95% CI; None without rows."""
    if not df.height:
        return None
    sizes = [s for s in sizes if s in set(df["size"].to_list())]
    types = list(dict.fromkeys(df["pair_type"].to_list()))  # pair_type_rows' order
    ncol = min(len(sizes), 3)
    fig = Figure(figsize=(4.6 * ncol, 3.4 * -(-len(sizes) // ncol)), layout="constrained")
    axes = fig.subplots(-(-len(sizes) // ncol), ncol, squeeze=False, sharey=True).ravel()
    for ax in axes[len(sizes):]:
        ax.set_visible(False)
    for i, (ax, size) in enumerate(zip(axes, sizes)):
        r = df.filter(pl.col("size") == size)
        for k, t in enumerate(types):
            rt = r.filter(pl.col("pair_type") == t).sort("step")
            if not rt.height:
                continue
            st, y = rt["step"].to_numpy(), rt["e_conv"].to_numpy().astype(float)
            lo, hi = (rt[c].to_numpy().astype(float) for c in ("ci_low", "ci_high"))
            ax.fill_between(st, np.nan_to_num(lo, nan=y), np.nan_to_num(hi, nan=y), color=f"C{k}", alpha=0.2, lw=0)
            n = int(rt["n_pairs"][0])
            ax.plot(st, y, "o-", color=f"C{k}", ms=3, lw=1.4, label=f"{t} ({n} ordered pairs)")
        if phase_steps:
            phase_lines(ax, r["step"].to_list(), phase_steps, label=i == 0)
        step_axis(ax, r["step"].to_list() or [1])
        ax.set_ylabel("E[conv] (nats)" if i % 3 == 0 else "")
        ax.set_title(size, fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8, frameon=False,
               title="pair type: the seed factors that differ")
    fig.suptitle("E[conv] by pair type (bands: 95% seed/document bootstrap CI)", fontsize=11)
    return save(fig, path)


def pair_type_section(df: pl.DataFrame, factors: dict, sizes: list[str], figure: Path | None, dest: Path
                      ) -> tuple[str, str]:
    """(title, markdown) of the report section."""
    names = factor_order(next(iter(factors.values())))
    lines = [f"Each ordered seed pair is typed by the seed factors that differ between its two runs "
             f"(factors: {', '.join(names)}; table: {len(factors)} seeds); E[conv] = −mean KL over that type's "
             "ordered pairs and every position, 95% CI from the seed/document bootstrap (`pair_types.parquet`).", ""]
    lines += ["| seed | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {s} | " + " | ".join(str(f[n]) for n in names) + " |" for s, f in factors.items()]
    lines.append("")
    if figure is not None:
        rel = Path(os.path.relpath(Path(figure).resolve(), Path(dest).resolve())).as_posix()
        lines += [f"![{STEM}]({rel})", "", "*E[conv] per pair type over training; bands 95% bootstrap CI.*", ""]
    rows = []
    for size in [s for s in sizes if s in set(df["size"].to_list())]:
        r = df.filter(pl.col("size") == size)
        last = r.filter(pl.col("step") == r["step"].max())
        for d in last.to_dicts():  # in pair_type_rows' order
            ci = "" if d["ci_low"] is None else f" [{d['ci_low']:.3g}, {d['ci_high']:.3g}]"
            rows.append([size, str(d["step"]), d["pair_type"], str(d["n_pairs"]), f"{d['e_conv']:.4g}{ci}"])
    lines.append(table(["size", "step", "pair type", "ordered pairs", "E[conv] [95% CI]"], rows))
    return TITLE, "\n".join(lines)
