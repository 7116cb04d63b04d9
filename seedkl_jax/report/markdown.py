"""report.md: the study in one readable page -- findings vs the paper, phases, key numbers, figures.

Everything comes from summary.parquet, phases.json and the figure paths, so the report can be
rewritten from saved outputs. Figures are embedded by paths relative to the report (the output folder
can be moved or zipped). The file is written to a temporary name and moved into place.
"""
from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from seedkl_jax.analysis.aggregate import category_order, size_order
from seedkl_jax.analysis.findings import findings as compute_findings
from seedkl_jax.analysis.phases import PAPER_BOUNDARIES

_FIG_SECTIONS = {
    "econv": "E[conv] over training, per size: ±1 SD band over tokens, 95% bootstrap CI, detected phases shaded.",
    "econv_sizes": "E[conv] of all sizes together.",
    "kl_baselines": "Mean KL of each seed's predictions to the uniform and unigram distributions.",
    "econv_by_freq_bin": "E[conv] by token frequency bin.",
    "econv_by_pos_group": "E[conv] of function words, content words and other tokens.",
    "econv_by_upos": "E[conv] by UPOS tag.",
    "econv_by_final_surprisal_bin": "E[conv] by the token's surprisal at the last step of its size.",
}
_KIND_TITLES = (("freq_bin", "frequency bin"), ("pos_group", "word class"), ("upos", "UPOS"),
                ("final_surprisal_bin", "final surprisal bin"), ("context_upos", "UPOS of the previous token"))
METHODS = """\
- **KL between seeds**: for each predicted position, KL(p_i ‖ p_j) in nats over the real vocabulary for
  every ordered pair of seeds i ≠ j; a token's KL is the mean over pairs.
- **E[conv]** = −(mean KL over the category's tokens and seed pairs); higher means the seeds agree more.
  Baselines ("uniform", "unigram") use each seed's KL to that distribution, averaged over seeds.
- **SD** (the ±1 SD bands) = population SD over tokens of the token's pair-mean KL: spread, not an error bar.
- **95% CI**: percentile bootstrap (1000 resamples unless set otherwise), resampling documents and,
  independently, unordered seed pairs (seeds for the baselines); the statistic is the token-weighted
  mean KL of the resample. Seed pairs share seeds, so the interval somewhat understates seed variance.
- **Phases**: continuous piecewise-linear fit of E[conv] over log2(step) (step 0 one octave before the
  first positive step) with knots at checkpoints, slopes (free, +, −, free); a phase counts when its change
  exceeds max(3 × noise, 5% of the curve's range). See `seedkl_jax/analysis/phases.py`.
- **Findings**: compared at each size's last step; "clearly above/below" means non-overlapping 95% CIs.
"""


def _f(v, digits=4) -> str:
    return "–" if v is None else f"{v:.{digits}g}"


def _cell(r: dict | None) -> str:
    if r is None:
        return "–"
    ci = "" if r["ci_low"] is None else f" [{_f(r['ci_low'], 3)}, {_f(r['ci_high'], 3)}]"
    return f"{_f(r['e_conv'])}{ci}"


def _esc(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _figure(fig_by_stem: dict, stem: str, out_dir: Path) -> str:
    p = fig_by_stem.pop(stem, None)
    if p is None:
        return ""
    rel = Path(os.path.relpath(Path(p).resolve(), out_dir.resolve())).as_posix()
    return f"![{stem}]({rel})\n\n*{_FIG_SECTIONS.get(stem, stem)}*\n"


def _phases_section(phases: dict, sizes: list[str]) -> str:
    keys = list(PAPER_BOUNDARIES)
    rows = []
    for s in sizes + [k for k in phases if k not in sizes]:
        p = phases.get(s)
        if p is None:
            continue
        b, off = p.get("boundaries", {}), p.get("boundary_log2_offset", {})
        note = (" / ".join("–" if off.get(k) is None else f"{off[k]:+.1f}" for k in keys)
                if p["status"] == "four_phases" else p.get("message", ""))
        rows.append([s, p["status"].replace("_", " ")] + [_f(b.get(k)) for k in keys] + [note])
    rows.append(["paper (Pythia)", "four phases"] + [str(PAPER_BOUNDARIES[k]) for k in keys] + [""])
    return _table(["size", "status", "convergence starts", "divergence starts", "reconvergence starts",
                   "log2(found / paper) or note"], rows)


def _econv_table(summary: pl.DataFrame, sizes: list[str], metric="seeds") -> str:
    r = summary.filter((pl.col("metric") == metric) & (pl.col("category_kind") == "all"))
    at = {(d["size"], d["step"]): d for d in r.to_dicts()}
    steps = sorted(set(r["step"].to_list()))
    rows = [[str(st)] + [_cell(at.get((s, st))) + ("" if (s, st) not in at else f" ±{_f(at[(s, st)]['sd'], 3)}")
                         for s in sizes] for st in steps]
    return _table(["step"] + [f"{s}: E[conv] [95% CI] ±SD" for s in sizes], rows)


def _baseline_table(summary: pl.DataFrame, sizes: list[str]) -> str:
    r = summary.filter(pl.col("category_kind") == "all")
    rows = []
    for s in sizes:
        rs = r.filter(pl.col("size") == s)
        if not rs.height:
            continue
        last = rs["step"].max()
        first = rs["step"].min()
        cells = [s, f"{first} → {last}"]
        for m in ("seeds", "uniform", "unigram"):
            v = {d["step"]: d["mean_kl"] for d in rs.filter(pl.col("metric") == m).to_dicts()}
            cells.append(f"{_f(v.get(first))} → {_f(v.get(last))}" if v else "–")
        rows.append(cells)
    return _table(["size", "steps", "KL between seeds", "KL to uniform", "KL to unigram"], rows)


def _category_table(summary: pl.DataFrame, sizes: list[str], kind: str) -> str | None:
    r = summary.filter((pl.col("metric") == "seeds") & (pl.col("category_kind") == kind))
    if not r.height:
        return None
    last = {s: r.filter(pl.col("size") == s)["step"].max() for s in sizes}
    at = {(d["size"], d["category"]): d for d in r.to_dicts() if d["step"] == last.get(d["size"])}
    cats = category_order(kind, r["category"].unique().to_list())
    rows = [[c] + [(_cell(at[(s, c)]) + f" (n={at[(s, c)]['n_tokens']})") if (s, c) in at else "–" for s in sizes]
            for c in cats]
    return _table([kind] + [f"{s} @ step {last[s]}" for s in sizes], rows)


def write_report(out_dir, summary: pl.DataFrame, phases: dict, figures, findings=None, extra=None, *,
                 extra_sections=None) -> Path:
    """Write out_dir/report.md and return its path.

    figures: paths from make_figures (embedded relative to out_dir; unknown names go to "Other figures").
    findings: list of {"finding", "verdict", "evidence"}; None computes them with analysis.findings,
    [] leaves the section out. extra: markdown appended at the end -- a str, a {title: body} dict, or a
    list of (title, body) pairs (e.g. the study's settings, or the demo's training notes);
    extra_sections is the same under its older name (both may be given; extra comes first).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    phases = phases or {}
    sizes = size_order(summary["size"].to_list())
    if findings is None:
        findings = compute_findings(summary, phases)
    fig_by_stem = {Path(p).stem: Path(p) for p in figures or []}
    seeds = summary.filter((pl.col("metric") == "seeds") & (pl.col("category_kind") == "all"))
    steps = sorted(set(seeds["step"].to_list()))
    n_tok = seeds["n_tokens"].max() if seeds.height else 0
    parts = ["# How alike are models trained with different seeds?\n",
             f"Sizes: {', '.join(sizes) or '–'}. Steps: {', '.join(map(str, steps)) or '–'}. "
             f"Tokens scored: {n_tok}. E[conv] = −mean KL between seeds (nats; higher = more alike).\n"]
    if findings:
        parts += ["## Findings of the paper, checked on this suite\n",
                  _table(["finding", "verdict", "evidence"],
                         [[f["finding"], f"**{f['verdict']}**", f["evidence"]] for f in findings]) + "\n"]
    parts += ["## Training phases\n", _phases_section(phases, sizes) + "\n", _figure(fig_by_stem, "econv", out_dir),
              "## E[conv] at each step\n", _econv_table(summary, sizes) + "\n",
              _figure(fig_by_stem, "econv_sizes", out_dir),
              "## Baselines: KL to the uniform and unigram distributions (first → last step)\n",
              _baseline_table(summary, sizes) + "\n", _figure(fig_by_stem, "kl_baselines", out_dir)]
    for kind, title in _KIND_TITLES:
        t = _category_table(summary, sizes, kind)
        if t is None:
            continue
        parts += [f"## E[conv] by {title} (last step of each size)\n", t + "\n",
                  _figure(fig_by_stem, f"econv_by_{kind}", out_dir)]
    if fig_by_stem:
        parts.append("## Other figures\n")
        parts += [_figure(fig_by_stem, stem, out_dir) for stem in list(fig_by_stem)]
    parts += ["## Methods\n", METHODS]
    for more in (extra, extra_sections):
        if not more:
            continue
        items = ([(None, more)] if isinstance(more, str)
                 else list(more.items()) if isinstance(more, dict) else list(more))
        for title, body in items:
            parts.append((f"## {title}\n\n" if title else "") + str(body).rstrip() + "\n")
    path = out_dir / "report.md"
    tmp = out_dir / ".report.md.tmp"
    tmp.write_text("\n".join(p for p in parts if p), encoding="utf-8")
    os.replace(tmp, path)
    return path
