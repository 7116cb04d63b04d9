"""The ICL score's figure and report section (numbers: analysis/icl.py; the probe: study/icl.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import polars as pl
from matplotlib.figure import Figure

from seedkl_jax.report import plotting
from seedkl_jax.report.mdtable import table

TITLE = "In-context learning score"
FIGURE = "icl.png"


def figure(summary: pl.DataFrame, path: Path, phase_steps: Sequence[int] | None = None) -> Path:
    """Left: ICL score (loss_short - loss_long) per size over steps, mean with its 95% CI band; right:
    mean KL between seeds at the targets, long context solid, short context dashed."""
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_icl, ax_kl = fig.subplots(1, 2)
    steps = summary["step"].to_list()
    for i, size in enumerate(dict.fromkeys(summary["size"].to_list())):
        r = summary.filter(pl.col("size") == size).sort("step")
        st = r["step"].to_numpy()
        ax_icl.fill_between(st, r["icl_lo"].to_numpy(), r["icl_hi"].to_numpy(), color=f"C{i}", alpha=0.25, lw=0)
        ax_icl.plot(st, r["icl"].to_numpy(), "o-", color=f"C{i}", ms=3, lw=1.5, label=size)
        for ctx, ls in (("long", "-"), ("short", "--")):
            ax_kl.fill_between(st, r[f"kl_{ctx}_lo"].to_numpy(), r[f"kl_{ctx}_hi"].to_numpy(), color=f"C{i}",
                               alpha=0.1, lw=0)
            ax_kl.plot(st, r[f"kl_{ctx}"].to_numpy(), ls, marker="o", color=f"C{i}", ms=3, lw=1.3,
                       label=f"{size}, {ctx} context")
    ax_icl.axhline(0.0, color="k", lw=0.6)
    ax_icl.set_ylabel("ICL score = loss_short − loss_long (nats)")
    ax_icl.set_title("ICL score (> 0: the longer context helps); 95% CI", fontsize=10)
    ax_kl.set_ylabel("mean KL between seeds at the target (nats)")
    ax_kl.set_title("seeds' disagreement at the ICL targets", fontsize=10)
    for ax in (ax_icl, ax_kl):
        plotting.step_axis(ax, steps)
        plotting.phase_lines(ax, steps, phase_steps)
        ax.legend(fontsize=7)
    return plotting.save(fig, path)


def section(summary: pl.DataFrame | None, positions, source: str, n_total: int, n_docs: int, longest: int,
            figure_rel: str | None, note: str | None = None) -> tuple[str, str]:
    """(title, markdown): the definition, a table at each size's first and last step, the figure link.
    note: why there are no numbers (a masked LM, no document long enough) instead of them."""
    long_start, short_start, target = positions
    head = (f"ICL score of token {target} of a document's ids (start token prepended): its loss given ids "
            f"[{short_start}, {target}) minus its loss given [{long_start}, {target}), in nats, per seed and "
            f"document, then averaged; positive = the longer context helps (the repository's alternate_icl.py "
            f"reports the negative). Documents: `{source}`, {n_docs} of {n_total} have ≥ {target + 1} ids "
            f"(longest: {longest}). Per-seed, per-document losses: `icl.parquet`.")
    if note is not None or summary is None or summary.is_empty():
        return TITLE, f"{head}\n\n{note or 'No ICL score: no document is long enough.'}\n"
    rows = []
    for size in dict.fromkeys(summary["size"].to_list()):
        r = summary.filter(pl.col("size") == size).sort("step")
        for k in sorted({0, r.height - 1}):
            x = r.row(k, named=True)
            rows.append([size, str(x["step"]), f"{x['n_docs']} × {x['n_seeds']}", _ci(x, "icl"),
                         _ci(x, "kl_short"), _ci(x, "kl_long")])
    tab = table(["size", "step", "docs × seeds", "ICL score [95% CI]", "KL between seeds, short context",
                 "KL between seeds, long context"], rows)
    fig = f"\n\n![icl]({figure_rel})\n" if figure_rel else ""
    scheme = ("CIs: 95% percentile bootstrap resampling documents and, independently, seeds (KL: the ordered "
              "pairs among the drawn seeds).")
    return TITLE, f"{head}\n\n{tab}\n\n{scheme}{fig}"


def _ci(row: dict, name: str) -> str:
    return f"{row[name]:.3f} [{row[name + '_lo']:.3f}, {row[name + '_hi']:.3f}]"
