"""The paper's appendix figures: regression coefficients over training and the learning-rate overlay.

Both draw on the symlog step axis of report/plotting.py with the suite's reference phase boundaries
(`phase_steps`, dashed, where the steps reach them) and the detected ones (dotted, per size); a suite
without phase_steps gets neither.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from seedkl_jax.analysis.aggregate import size_order
from seedkl_jax.report.plotting import detected_lines, phase_lines, save, step_axis


def regression_figure(reg: pl.DataFrame, phases: dict, path: Path, *, phase_steps=None) -> Path | None:
    """Negated (as convergence) log-frequency and size coefficients over steps, with their 95% CIs."""
    size_terms = [t for t in dict.fromkeys(reg["term"].to_list()) if t.startswith("size=")]
    panels = [("log10_count", "log10 corpus count of the target")] + [(t, t) for t in size_terms]
    fig = Figure(figsize=(5.2 * (2 if len(panels) > 1 else 1), 3.6), layout="constrained")
    axes = fig.subplots(1, 2 if len(panels) > 1 else 1, squeeze=False).ravel()
    for ax, group in zip(axes, (panels[:1], panels[1:])):
        steps = []
        for i, (term, label) in enumerate(group):
            r = reg.filter(pl.col("term") == term).sort("step")
            st = r["step"].to_numpy()
            steps += list(st)
            ax.fill_between(st, -r["ci_high"].to_numpy().astype(float), -r["ci_low"].to_numpy().astype(float),
                            color=f"C{i}", alpha=0.2, lw=0)
            ref = r["reference"][0]
            ax.plot(st, -r["coef"].to_numpy(), "o-", ms=3, color=f"C{i}",
                    label=label + (f" (vs {ref})" if ref else ""))
        if not steps:
            continue
        phase_lines(ax, steps, phase_steps, label=False)
        step_axis(ax, steps)
        ax.axhline(0, color="0.5", lw=0.6)
        ax.set_ylabel("−coefficient (nats; as convergence)")
        ax.legend(fontsize=7)
    fig.suptitle("Regression of the per-pair KL per step (band: 95% seed/document bootstrap CI)")
    return save(fig, path)


def lr_figure(schedule, sizes, steps, phases: dict, path: Path, *, phase_steps=None) -> Path | None:
    """Learning rate of every size over the study's steps, with reference and detected phase lines."""
    steps = sorted(int(s) for s in steps)
    grid = np.unique(np.round(np.concatenate([np.asarray(steps, float),      # integer update indices
                                              np.geomspace(1, max(max(steps), 2), 400), [0.0]])))
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    drawn = False
    for i, size in enumerate(size_order(sizes)):
        lr = schedule.at(size, grid)
        if lr is None:
            continue
        drawn = True
        ax.plot(grid, lr, color=f"C{i}", lw=1.5, label=size)
        if phase_steps:
            detected_lines(ax, (phases or {}).get(size), label=i == 0)
    if not drawn:
        return None
    phase_lines(ax, steps, phase_steps)
    step_axis(ax, steps)
    ax.set_ylabel("learning rate")
    ax.set_title(schedule.source, fontsize=9)
    ax.legend(fontsize=8)
    return save(fig, path)
