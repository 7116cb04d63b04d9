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
from seedkl_jax.analysis.phases import BOUNDARY_NAMES, PAPER_BOUNDARIES
from seedkl_jax.report import agreement
from seedkl_jax.report.mdtable import table as _table

BANDS = ("Bands: ±1 SD over tokens = sample SD (ddof=1) over the category's tokens of the token's mean KL over "
         "seed pairs (the paper's 'variance across contexts'); ±1 SD over seed pairs = sample SD over the S(S−1) "
         "ordered pairs of their mean over the category's tokens (the paper's band of every binned / PoS figure); "
         "95% CI = seed/document bootstrap.")
PHASE_LINES = " Dashed lines: the {whose} phase boundaries {steps} (where the steps reach them); dotted: detected."
NO_PHASE_LINES = (" This suite carries no reference phase boundaries (a preset's `phase_steps`, `--phase_steps`), so "
                  "the figures draw no phase lines and no phase verdict is given (the paper draws none for MultiBERTs).")
_FIG_SECTIONS = {
    "econv_tokens": "E[conv] per size; band ±1 SD over tokens (paper's main figure, 'variance across contexts'), "
                    "darker band the 95% seed/document bootstrap CI; detected phases shaded, phase fit dotted.",
    "econv_pairs": "E[conv] per size; band ±1 SD over the ordered seed pairs (the paper's second variant), "
                   "darker band the 95% bootstrap CI.",
    "econv_sizes": "E[conv] of all sizes together; bands ±1 SD over seed pairs.",
    "kl_baselines": "Mean KL of each seed's predictions to the uniform and unigram distributions; bands 95% bootstrap CI.",
    "econv_by_freq_bin": "E[conv] by corpus frequency of the target; bands ±1 SD over seed pairs.",
    "econv_by_final_surprisal_bin": "E[conv] by the target's final surprisal; bands ±1 SD over seed pairs.",
    "econv_by_paper_pos": "E[conv] by the paper's PoS groups (Penn tags of the target); bands ±1 SD over seed pairs.",
    "econv_by_xpos_nouns": "E[conv] of noun tags (NN, NNS, NNP); bands ±1 SD over seed pairs.",
    "econv_by_xpos_verbs": "E[conv] of verb tags (VB, VBG, VBN, VBD, VBZ); bands ±1 SD over seed pairs.",
    "econv_by_xpos_other": "E[conv] of other tags (PRP$, DT, CC, JJ, IN, TO, RB, MD, PRP); bands ±1 SD over seed pairs.",
    "ce_by_freq_bin": "Cross-entropy (mean surprisal of the target) by frequency bin; bands ±1 SD over seeds.",
    "ce_by_final_surprisal_bin": "Cross-entropy by final-surprisal bin; bands ±1 SD over seeds.",
    "ce_by_paper_pos": "Cross-entropy by the paper's PoS groups; bands ±1 SD over seeds.",
    "regression": "Regression of the per-pair KL on log frequency, PoS, context PoS and size per step, coefficients "
                  "negated (as convergence); bands 95% seed/document bootstrap CI.",
    "lr": "Learning rate over training with the paper's (dashed) and detected (dotted) phase boundaries.",
    "econv_by_pos_group": "E[conv] of function words, content words and other tokens (UPOS); bands ±1 SD over seed pairs.",
    "econv_by_upos": "E[conv] by UPOS tag; bands ±1 SD over seed pairs.",
    "econv_by_word_position": "E[conv] of targets that start a word (after whitespace or at a document start) and "
                              "of those that continue one; bands ±1 SD over seed pairs.",
    "agreement": agreement.CAPTION,
}
# (title, figure stems, table kind or None) in the paper's order
PAPER_SECTIONS = (
    ("Main curve: E[conv] over training (band: ±1 SD over tokens)", ("econv_tokens",), "econv"),
    ("Main curve, second variant (band: ±1 SD over seed pairs)", ("econv_pairs", "econv_sizes"), None),
    ("Baselines: KL to the uniform and unigram distributions (first → last step)", ("kl_baselines",), "baselines"),
    ("By frequency of the target", ("econv_by_freq_bin",), "freq_bin"),
    ("By final surprisal of the target", ("econv_by_final_surprisal_bin",), "final_surprisal_bin"),
    ("By part of speech: the paper's groups", ("econv_by_paper_pos",), "paper_pos"),
    ("By part of speech: Penn-tag sub-figures", ("econv_by_xpos_nouns", "econv_by_xpos_verbs", "econv_by_xpos_other"), None),
    ("Cross-entropy by category", ("ce_by_freq_bin", "ce_by_final_surprisal_bin", "ce_by_paper_pos"), None),
    ("Regression (appendix)", ("regression",), "regression"),
    ("Learning rate", ("lr",), None),
    ("Our additional views: UPOS word classes and tags", ("econv_by_pos_group", "econv_by_upos"), "pos_group"),
    ("Word boundaries: the target starts or continues a word", ("econv_by_word_position",), "word_position"),
    ("Agreement between seeds: top-1 agreement and Jensen-Shannon divergence", ("agreement",), "agreement"),
)
_KIND_TITLES = (("upos", "UPOS"), ("xpos", "Penn tag"), ("context_upos", "UPOS of the previous token"),
                ("context_xpos", "Penn tag of the previous token"))
METHODS = """\
- **KL between seeds**: for each predicted position, KL(p_i ‖ p_j) in nats over the real vocabulary for
  every ordered pair of seeds i ≠ j.
- **E[conv]** = −(mean KL over the category's tokens and ordered seed pairs); higher means the seeds agree more.
  Baselines ("uniform", "unigram") use each seed's KL to that distribution; "surprisal" rows hold the mean
  surprisal (cross-entropy) of the target.
- **Top-1 agreement / JS** (`--metrics`): how often two seeds' most likely next tokens coincide (1 − churn), and
  the Jensen-Shannon divergence between their predictions; averaged and bootstrapped over ordered pairs as E[conv].
- **Bands**: ±1 SD over tokens (`sd_tokens`) or over seed pairs (`sd_pairs`), sample SDs (ddof=1): spread, not error bars.
- **95% CI**: percentile bootstrap resampling seeds (pairs among the drawn seeds) and, independently, documents;
  every group uses the same draws, so comparisons use the CI of the paired difference (`seedkl_jax/analysis/bootstrap.py`).
- **Phases**: decided from the measured E[conv] and its CIs: a change counts when it exceeds max(3 × step-to-step
  noise, 5% of the range) and its endpoints' CIs do not overlap; piecewise-linear fits with 1–4 segments compared by
  BIC give the shape the data support and place the boundaries (`seedkl_jax/analysis/phases.py`).
- **Findings**: rules fixed in advance (`seedkl_jax/analysis/findings.py`, `claims.py`).
"""


def _f(v, digits=4) -> str:
    return "–" if v is None else f"{v:.{digits}g}"


def _cell(r: dict | None) -> str:
    if r is None:
        return "–"
    ci = "" if r["ci_low"] is None else f" [{_f(r['ci_low'], 3)}, {_f(r['ci_high'], 3)}]"
    return f"{_f(r['e_conv'])}{ci}"


def _figure(fig_by_stem: dict, stem: str, out_dir: Path) -> str:
    p = fig_by_stem.pop(stem, None)
    if p is None:
        return ""
    rel = Path(os.path.relpath(Path(p).resolve(), out_dir.resolve())).as_posix()
    return f"![{stem}]({rel})\n\n*{_FIG_SECTIONS.get(stem, stem)}*\n"


def _regression_table(reg: pl.DataFrame | None) -> str | None:
    if reg is None or not reg.height:
        return None
    last = reg.filter(pl.col("step") == reg["step"].max())
    rows = [[d["term"], d["reference"] or "", _f(d["coef"]), f"[{_f(d['ci_low'], 3)}, {_f(d['ci_high'], 3)}]"]
            for d in last.to_dicts() if d["term"] == "log10_count" or d["term"].startswith("size=")]
    return (f"Coefficients at step {last['step'][0]} ({last['n_rows'][0]:,} rows: sizes × ordered pairs × tokens); "
            "every term's full series is in `regression.parquet`.\n\n"
            + _table(["term", "reference level", "coefficient (nats)", "95% CI"], rows))


def _divergent_table(div: pl.DataFrame | None) -> str | None:
    if div is None or not div.height:
        return None
    parts = []
    for size in size_order(div["size"].to_list()):
        d = div.filter(pl.col("size") == size)
        for end in ("most", "least"):
            e = d.filter(pl.col("end") == end).sort("rank")
            rows = [[str(r["rank"]), repr(r["token_str"]), _f(r["count"], 6), str(r["occurrences"]), _cell(r)]
                    for r in e.to_dicts()]
            parts.append(f"**{size}, step {e['step'][0] if e.height else '–'}: {end} divergent**\n\n"
                         + _table(["rank", "token", "corpus count", "occurrences", "E[conv] [95% CI]"], rows))
    return "\n\n".join(parts)


def _whose(phase_steps) -> str:
    """Who the reference boundaries are: the paper's on PolyPythia, else the suite's (--phase_steps)."""
    return "paper (Pythia)" if tuple(phase_steps) == tuple(PAPER_BOUNDARIES.values()) else "reference (phase_steps)"


def _phases_section(phases: dict, sizes: list[str], phase_steps) -> str:
    if not phase_steps:
        return NO_PHASE_LINES.strip() + " The detected boundaries of each size are in `phases.json`."
    keys = list(BOUNDARY_NAMES)
    rows = []
    for s in sizes + [k for k in phases if k not in sizes]:
        p = phases.get(s)
        if p is None:
            continue
        b, off = p.get("boundaries", {}), p.get("boundary_log2_offset", {})
        note = (" / ".join("–" if off.get(k) is None else f"{off[k]:+.1f}" for k in keys)
                if p["status"] == "four_phases" else p.get("message", ""))
        rows.append([s, p["status"].replace("_", " ")] + [_f(b.get(k)) for k in keys] + [note])
    rows.append([_whose(phase_steps), "four phases"] + [str(s) for s in phase_steps] + [""])
    return _table(["size", "status", "convergence starts", "divergence starts", "reconvergence starts",
                   "log2(found / paper) or note"], rows)


def _econv_table(summary: pl.DataFrame, sizes: list[str], metric="seeds") -> str:
    r = summary.filter((pl.col("metric") == metric) & (pl.col("category_kind") == "all"))
    at = {(d["size"], d["step"]): d for d in r.to_dicts()}
    steps = sorted(set(r["step"].to_list()))
    rows = [[str(st)] + [_cell(at.get((s, st))) + ("" if (s, st) not in at else
                                                   f" ±{_f(at[(s, st)]['sd_tokens'], 3)} / ±{_f(at[(s, st)]['sd_pairs'], 3)}")
                         for s in sizes] for st in steps]
    return _table(["step"] + [f"{s}: E[conv] [95% CI] ±SD tokens / ±SD pairs" for s in sizes], rows)


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


def _section_table(kind, summary, sizes, regression) -> str | None:
    if kind == "econv":
        return _econv_table(summary, sizes)
    if kind == "baselines":
        return _baseline_table(summary, sizes)
    if kind == "regression":
        return _regression_table(regression)
    if kind == "agreement":
        return agreement.section(summary, sizes)
    return _category_table(summary, sizes, kind)


def _extra_parts(*mores) -> list[str]:
    parts = []
    for more in mores:
        if not more:
            continue
        items = ([(None, more)] if isinstance(more, str)
                 else list(more.items()) if isinstance(more, dict) else list(more))
        for title, body in items:
            parts.append((f"## {title}\n\n" if title else "") + str(body).rstrip() + "\n")
    return parts


def write_report(out_dir, summary: pl.DataFrame, phases: dict, figures, findings=None, extra=None, *,
                 extra_sections=None, regression: pl.DataFrame | None = None,
                 divergent: pl.DataFrame | None = None, phase_steps=None, sizes=None) -> Path:
    """Write out_dir/report.md and return its path: one section per paper figure in the paper's order
    (PAPER_SECTIONS), then phases, findings with verdicts, the divergent-token table, methods, extras.

    figures: paths from make_figures (embedded relative to out_dir; unknown names go to "Other figures").
    findings: list of {"finding", "verdict", "evidence"}; None computes them with analysis.findings,
    [] leaves the section out. extra: markdown appended at the end -- a str, a {title: body} dict, or a
    list of (title, body) pairs (e.g. the study's settings, or the demo's training notes);
    extra_sections is the same under its older name (both may be given; extra comes first).
    regression / divergent: regression.parquet and divergent_tokens.parquet frames (tables; None
    leaves them out). phase_steps: the suite's reference phase boundaries (convergence, divergence,
    reconvergence start; PolyPythia's are the paper's 16/256/2000), None for a suite without them: then
    no phase table and no phase lines are described. sizes: column order, smallest first (default:
    analysis.aggregate.size_order of the labels).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    phases = phases or {}
    present = set(summary["size"].to_list())
    sizes = [s for s in sizes if s in present] if sizes is not None else size_order(summary["size"].to_list())
    if findings is None:
        findings = compute_findings(summary, phases, phase_steps=phase_steps)
    fig_by_stem = {Path(p).stem: Path(p) for p in figures or []}
    seeds = summary.filter((pl.col("metric") == "seeds") & (pl.col("category_kind") == "all"))
    steps = sorted(set(seeds["step"].to_list()))
    n_tok = seeds["n_tokens"].max() if seeds.height else 0
    parts = ["# How alike are models trained with different seeds?\n",
             f"Sizes: {', '.join(sizes) or '–'}. Steps: {', '.join(map(str, steps)) or '–'}. "
             f"Tokens scored: {n_tok}. E[conv] = −mean KL between seeds (nats; higher = more alike). "
             "The sections follow the paper's figures in order; the findings with verdicts come after them.\n",
             "Every token of the text, shaded by divergence at each size and step: [explorer.html](explorer.html) "
             "(opens offline in a browser).\n" if (out_dir / "explorer.html").is_file() else "",
             f"*{BANDS}" + (PHASE_LINES.format(whose="paper's" if _whose(phase_steps).startswith("paper")
                                               else "suite's reference", steps="/".join(map(str, phase_steps)))
                            if phase_steps else NO_PHASE_LINES) + "*\n"]
    for title, stems, kind in PAPER_SECTIONS:
        figs = [_figure(fig_by_stem, s, out_dir) for s in stems]
        table = _section_table(kind, summary, sizes, regression) if kind else None
        if any(figs) or table:
            parts += [f"## {title}\n"] + [f for f in figs if f] + ([table + "\n"] if table else [])
    parts += ["## Training phases\n", _phases_section(phases, sizes, phase_steps) + "\n"]
    if findings:
        parts += ["## Findings of the paper, checked on this suite\n",
                  _table(["finding", "verdict", "evidence"],
                         [[f["finding"], f"**{f['verdict']}**", f["evidence"]] for f in findings]) + "\n"]
    t = _divergent_table(divergent)
    if t:
        parts += ["## Most and least divergent target tokens (last step)\n", t + "\n"]
    for kind, title in _KIND_TITLES:
        t = _category_table(summary, sizes, kind)
        if t is not None:
            parts += [f"## E[conv] by {title} (last step of each size)\n", t + "\n"]
    if fig_by_stem:
        parts.append("## Other figures\n")
        parts += [_figure(fig_by_stem, stem, out_dir) for stem in list(fig_by_stem)]
    parts += ["## Methods\n", METHODS] + _extra_parts(extra, extra_sections)
    path = out_dir / "report.md"
    tmp = out_dir / ".report.md.tmp"
    tmp.write_text("\n".join(p for p in parts if p), encoding="utf-8")
    os.replace(tmp, path)
    return path
