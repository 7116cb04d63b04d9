"""What every figure module shares: the atomic PNG write, the symlog step axis, the phase lines and
the summary rows of one curve.

Why a module of its own: report/figures.py and report/appendix_figures.py both draw on the same step
axis with the same lines; with the helpers here neither imports the other's privates (no import cycle).

Phase lines are suite-aware: `phase_lines` draws a suite's own reference boundaries (`phase_steps`,
e.g. PolyPythia's 16/256/2000: the paper's) only where the measured steps reach them, and nothing
for a suite without any (MultiBERTs, Mistral, local suites unless given): the paper draws none there.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from seedkl_jax.analysis.phases import PAPER_BOUNDARIES

DPI = 150


def summary_rows(summary, metric: str, kind: str, size: str | None = None):
    """summary.parquet's rows of one metric and category kind (optionally one size), by step."""
    import polars as pl

    r = summary.filter((pl.col("metric") == metric) & (pl.col("category_kind") == kind))
    if size is not None:
        r = r.filter(pl.col("size") == size)
    return r.sort("step")


def save(fig: Figure, path: Path) -> Path:
    """Write `fig` as a PNG at `path` through a temporary name (a crash never leaves a half-written file)."""
    FigureCanvasAgg(fig)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png")
    os.replace(tmp, path)
    return path


def step_axis(ax, steps) -> None:
    """Symlog x axis (linear below 1, log above) so step 0 sits next to 1, 2, 4, ..."""
    ax.set_xscale("symlog", linthresh=1.0, linscale=0.4)
    hi = max(max(steps), 1)
    ax.set_xlim(0, hi * 1.4)
    ax.set_xlabel("training step (symlog: 0, then log scale)")
    ax.grid(True, which="major", alpha=0.3, lw=0.6)


def reached(phase_steps: Sequence[int] | None, steps) -> list[int]:
    """The reference boundaries the measured steps reach (none without a suite's phase_steps)."""
    steps = list(steps)
    if not phase_steps or not steps:
        return []
    return [int(s) for s in phase_steps if min(steps) < s <= max(steps)]


def phase_lines(ax, steps, phase_steps: Sequence[int] | None, label: bool = True) -> None:
    """The suite's reference boundaries (dashed) that its steps reach."""
    shown = reached(phase_steps, steps)
    whose = "paper" if tuple(phase_steps or ()) == tuple(PAPER_BOUNDARIES.values()) else "reference"
    name = "/".join(str(s) for s in phase_steps or ())
    for i, s in enumerate(shown):
        ax.axvline(s, color="0.35", ls="--", lw=0.8,
                   label=f"{whose} boundaries ({name})" if label and i == 0 else None)


def detected_lines(ax, p: dict | None, label: bool = False) -> None:
    """The boundaries phase detection placed for one size (dotted)."""
    for i, s in enumerate(v for v in ((p or {}).get("boundaries") or {}).values() if v is not None):
        ax.axvline(max(s, 0), color="k", ls=":", lw=1.0, label="detected boundaries" if label and i == 0 else None)


def gap_segment(steps) -> int | None:
    """The first non-zero step when the curve jumps there from step 0 across unmeasured training
    (first non-zero step > 1, e.g. MultiBERTs' 0 -> 20k): that segment is drawn dashed, as the paper
    draws MultiBERTs. None when step 0 is absent or step 1 is measured."""
    st = sorted(int(s) for s in steps)
    if not st or st[0] != 0 or len(st) < 2 or st[1] <= 1:
        return None
    return st[1]
