"""Every output file of a study from its groups and token meta: the one writer `seedkl run` and
`seedkl analyze` share.

Why one function: a run (groups read back from `--out/groups`) and an analysis of per-pair KLs
computed anywhere (groups built by analysis/tables.py) must give the same tables, verdicts, figures
and report for the same KLs. The caller decides where `dest` is (a run's staging folder, moved in
file by file by study/store.py) and adds its own report sections (`extra`).

Files in dest: tokens.parquet, pairs.parquet, token_meta.parquet, [pair_positions.parquet],
[topk.parquet], summary.parquet, summary.csv, regression.parquet, divergent_tokens.parquet,
[pair_types.parquet], phases.json, findings.json, figures/*.png, explorer.html, report.md
(docs/outputs.md; [...]: only when asked for and the groups hold what it needs).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import polars as pl

from seedkl_jax.analysis.aggregate import GroupResult, pair_position_rows, pair_rows, token_rows
from seedkl_jax.analysis.divergent import divergent_tokens
from seedkl_jax.analysis.pipeline import analyze_groups
from seedkl_jax.analysis.regression import regression
from seedkl_jax.analysis.topk import topk_rows
from seedkl_jax.report.explorer import write_explorer
from seedkl_jax.report.figures import make_figures
from seedkl_jax.report.markdown import write_report

INPUTS_TITLE = "Inputs and skipped analyses"


def write_outputs(dest, groups: list[GroupResult], token_meta: pl.DataFrame, *, n_boot: int = 1000,
                  phase_steps: Sequence[int] | None = None, sizes: Sequence[str] | None = None,
                  lr_schedule=None, final_source: str = "", pair_positions: bool = False,
                  extra: Sequence[tuple[str, str]] = (), seed_factors: dict | None = None,
                  vocab: Mapping[int, str] | None = None) -> Path:
    """Write every output file into `dest` (module docstring); returns report.md's path.

    token_meta: analysis/token_meta.token_meta's frame (a `size` column, sorted by position per size);
    phase_steps: the suite's reference phase boundaries (None: no phase lines, no phase verdict);
    sizes: order, smallest first (default: by the parameter count in the labels); final_source: where
    the final-surprisal bins came from ("" = none); pair_positions: also pair_positions.parquet;
    extra: (title, markdown) sections appended to the report (e.g. the study's settings); seed_factors:
    the suite's seed -> {factor: value} table (None: no pair types), then pair_types.parquet, its figure
    and section (analysis/pair_types.py); vocab: id -> string
    of the top-k ids for explorer.html (None: ids not in the text show as #id)."""
    dest = Path(dest)
    (dest / "figures").mkdir(parents=True, exist_ok=True)
    a = analyze_groups(groups, token_meta, n_boot=n_boot, phase_steps=phase_steps, sizes=sizes)
    groups = sorted(groups, key=lambda g: (a.sizes.index(g.size), int(g.step)))
    reg = regression(groups, token_meta, n_boot=n_boot, seed=0, sizes=a.sizes)
    div = divergent_tokens(groups, token_meta, n_boot=n_boot, seed=0)
    tables = {
        "tokens.parquet": pl.concat([token_rows(g, token_meta) for g in groups], how="diagonal"),
        "pairs.parquet": pl.concat([pair_rows(g) for g in groups], how="diagonal"),
        "token_meta.parquet": token_meta,
        "summary.parquet": a.summary, "regression.parquet": reg, "divergent_tokens.parquet": div,
    }
    pos = {s: token_meta.filter(pl.col("size") == s)["position"].sort().to_numpy() for s in a.sizes}
    if pair_positions:
        tables["pair_positions.parquet"] = pl.concat([pair_position_rows(g, pos[g.size]) for g in groups],
                                                     how="diagonal")  # agreement columns: where measured
    topk = [t for t in (topk_rows(g, pos[g.size]) for g in groups) if t is not None]
    if topk:  # --save_topk: numbered like tokens.parquet's positions (analysis/topk.py)
        tables["topk.parquet"] = pl.concat(topk, how="vertical")
    for name, df in tables.items():
        df.write_parquet(dest / name)
    a.summary.write_csv(dest / "summary.csv")
    (dest / "phases.json").write_text(json.dumps(a.phases, indent=2) + "\n", encoding="utf-8")
    (dest / "findings.json").write_text(json.dumps(a.findings, indent=2) + "\n", encoding="utf-8")
    figures = make_figures(a.summary, a.phases, dest / "figures", regression=reg, lr_schedule=lr_schedule,
                           phase_steps=phase_steps, sizes=a.sizes)
    left_out = write_explorer(dest / "explorer.html", groups, token_meta, sizes=a.sizes, phase_steps=phase_steps,
                              vocab=vocab)
    inputs = [f"- final-surprisal bins: {final_source}" if final_source else None] + [f"- {n}" for n in a.notes + left_out]
    sections = [(INPUTS_TITLE, "\n".join(x for x in inputs if x) or "- every analysis had its inputs")]
    if seed_factors:
        sections.append(_pair_types(dest, groups, token_meta, seed_factors, n_boot, a.sizes, phase_steps))
    return write_report(dest, a.summary, a.phases, figures, findings=a.findings, extra=sections + list(extra),
                        regression=reg, divergent=div, phase_steps=phase_steps, sizes=a.sizes)


def _pair_types(dest: Path, groups, token_meta, seed_factors: dict, n_boot: int, sizes, phase_steps):
    """pair_types.parquet, its figure, and its report section (title, markdown)."""
    from seedkl_jax.analysis.pair_types import pair_type_rows
    from seedkl_jax.report.pair_types import STEM, pair_type_figure, pair_type_section

    df = pair_type_rows(groups, token_meta, seed_factors, n_boot=n_boot)
    df.write_parquet(dest / "pair_types.parquet")
    fig = pair_type_figure(df, list(sizes), dest / "figures" / f"{STEM}.png", phase_steps)
    return pair_type_section(df, seed_factors, list(sizes), fig, dest)
