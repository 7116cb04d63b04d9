"""Which of the paper's findings does this suite reproduce? One table for the demo and the study report.

Each finding gets a verdict "reproduced" / "not reproduced" / "inconclusive" and an evidence string
quoting the numbers it rests on. The rules are fixed in advance (never tuned to the outcome):

* Comparisons use E[conv] (= -mean KL between seeds, metric "seeds") at each size's LAST step and
  the 95% bootstrap CIs of the summary: A is "clearly above" B when A's ci_low > B's ci_high,
  "clearly below" when A's ci_high < B's ci_low; overlapping intervals decide nothing. (Non-overlap
  of two 95% intervals is a conservative test: small real differences come out "inconclusive".)
* Per-size verdicts combine into one: "reproduced" when a majority of sizes reproduce it and none
  contradicts it, "not reproduced" when a majority contradicts it and none reproduces it,
  "inconclusive" otherwise.

1. Four phases: from phases.json (analysis.phases). "reproduced" when every size with enough steps
   shows "four_phases", or a majority does and the rest show convergence and divergence without
   reconvergence (the paper's smallest models also never fully reconverge); "not reproduced" when no
   size does; "inconclusive" when sweeps are too short or the sizes disagree otherwise.
2. Larger models reconverge more: final E[conv] must increase strictly with size (sizes ordered by the
   number in their label, e.g. 14m < 70m, else suite order) AND the largest be clearly above the
   smallest -> "reproduced"; largest clearly below smallest -> "not reproduced"; else "inconclusive".
   The evidence also gives each size's recovered fraction (final - trough) / (peak - trough) when
   its phases were found.
3. Frequent tokens converge more than rare: per size, the most frequent vs the rarest freq_bin with
   at least `min_tokens` tokens (bins ordered by the first number in their label, i.e. count-based
   decade bins, rarest first).
4. Function words converge more than content words: per size, pos_group "function" vs "content".
"""
from __future__ import annotations

import polars as pl

from seedkl_jax.analysis.aggregate import category_order, size_order

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
MIN_TOKENS = 20
FINDING_PHASES = ("Four phases: near-uniform, sharp convergence, sharp divergence, slow reconvergence "
                  "(paper: ~16 / 256 / 2000 steps)")
FINDING_SIZE = "Larger models reconverge more than smaller ones (higher final E[conv])"
FINDING_FREQ = "Frequent tokens converge more than rare tokens"
FINDING_POS = "Function words converge more than content words"


def _fmt(r: dict) -> str:
    ci = ("" if r["ci_low"] is None or r["ci_high"] is None
          else f" [{r['ci_low']:.4g}, {r['ci_high']:.4g}]")
    return f"{r['e_conv']:.4g}{ci}"


def _cmp(a: dict, b: dict) -> int:
    """+1 a clearly above b, -1 clearly below, 0 intervals overlap or are missing."""
    if None in (a["ci_low"], a["ci_high"], b["ci_low"], b["ci_high"]):
        return 0
    return 1 if a["ci_low"] > b["ci_high"] else (-1 if a["ci_high"] < b["ci_low"] else 0)


def _combine(per_size: list[int]) -> str:
    """+1 reproduced, -1 contradicted, 0 undecided per size -> overall verdict."""
    n = len(per_size)
    pos, neg = per_size.count(1), per_size.count(-1)
    if n and pos * 2 > n and neg == 0:
        return REPRODUCED
    if n and neg * 2 > n and pos == 0:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def _final_rows(summary: pl.DataFrame, kind: str) -> dict[str, tuple[int, list[dict]]]:
    """size -> (last step, rows of metric "seeds" / category_kind `kind` at that step)."""
    s = summary.filter((pl.col("metric") == "seeds") & (pl.col("category_kind") == kind))
    out = {}
    for size in dict.fromkeys(s["size"].to_list()):
        r = s.filter(pl.col("size") == size)
        last = int(r["step"].max())
        out[size] = (last, r.filter(pl.col("step") == last).to_dicts())
    return out


def _phases_finding(phases: dict, sizes: list[str]) -> dict:
    parts, statuses = [], []
    for size in sizes:
        p = phases.get(size)
        if p is None:
            continue
        b = p.get("boundaries", {})
        bs = "/".join("–" if b.get(k) is None else str(b[k])
                      for k in ("convergence_start", "divergence_start", "reconvergence_start"))
        parts.append(f"{size}: {p['status'].replace('_', ' ')}"
                     + ("" if p["status"] in ("too_short", "no_phases") else f" at {bs}"))
        statuses.append(p["status"])
    valid = [s for s in statuses if s != "too_short"]
    n4 = valid.count("four_phases")
    if not valid:
        verdict = INCONCLUSIVE
    elif n4 == len(valid) or (n4 * 2 > len(valid) and all(s in ("four_phases", "no_reconvergence") for s in valid)):
        verdict = REPRODUCED
    elif n4 == 0:
        verdict = NOT_REPRODUCED
    else:
        verdict = INCONCLUSIVE
    ev = "; ".join(parts) + " (boundaries: convergence/divergence/reconvergence start; paper 16/256/2000)"
    return {"finding": FINDING_PHASES, "verdict": verdict, "evidence": ev if parts else "no phases computed"}


def _recovered(summary: pl.DataFrame, size: str, p: dict | None) -> str:
    """(final - trough) / (peak - trough) from the fitted phase boundaries, '' when unavailable."""
    if not p or len(p.get("phases", [])) < 3:
        return ""
    s = summary.filter((pl.col("metric") == "seeds") & (pl.col("category_kind") == "all")
                       & (pl.col("size") == size))
    at = dict(zip(s["step"].to_list(), s["e_conv"].to_list()))
    peak, trough = at.get(p["phases"][2]["start_step"]), at.get(p["phases"][2]["end_step"])
    final = at[max(at)]
    if peak is None or trough is None or peak == trough:
        return ""
    return f", recovered {(final - trough) / (peak - trough):.0%} of the divergence"


def _size_finding(summary: pl.DataFrame, phases: dict, sizes: list[str]) -> dict:
    fin = _final_rows(summary, "all")
    sizes = [s for s in sizes if s in fin and fin[s][1]]
    rows = [fin[s][1][0] for s in sizes]
    ev = "; ".join(f"{s} (step {fin[s][0]}): E[conv] {_fmt(r)}{_recovered(summary, s, phases.get(s))}"
                   for s, r in zip(sizes, rows))
    if len(sizes) < 2:
        return {"finding": FINDING_SIZE, "verdict": INCONCLUSIVE,
                "evidence": (ev + "; " if ev else "") + "needs at least two sizes"}
    vals = [r["e_conv"] for r in rows]
    monotone = all(b > a for a, b in zip(vals, vals[1:]))
    c = _cmp(rows[-1], rows[0])
    verdict = REPRODUCED if (monotone and c == 1) else NOT_REPRODUCED if c == -1 else INCONCLUSIVE
    steps = {fin[s][0] for s in sizes}
    note = "" if len(steps) == 1 else " (sizes end at different steps)"
    order = "increases" if monotone else "does not increase"
    return {"finding": FINDING_SIZE, "verdict": verdict,
            "evidence": f"{ev}; final E[conv] {order} strictly with size{note}"}


def _category_finding(summary, sizes, kind, pick, finding, min_tokens) -> dict:
    fin = _final_rows(summary, kind)
    per, parts = [], []
    for size in sizes:
        if size not in fin:
            continue
        step, rows = fin[size]
        rows = [r for r in rows if r["n_tokens"] >= min_tokens]
        ab = pick(rows)
        if ab is None:
            parts.append(f"{size}: too few categories with >= {min_tokens} tokens")
            per.append(0)
            continue
        a, b = ab
        c = _cmp(a, b)
        per.append(c)
        word = {1: "clearly above", -1: "clearly below", 0: "overlapping CIs with"}[c]
        parts.append(f"{size} (step {step}): {a['category']} {_fmt(a)} (n={a['n_tokens']}) {word} "
                     f"{b['category']} {_fmt(b)} (n={b['n_tokens']})")
    if not parts:
        return {"finding": finding, "verdict": INCONCLUSIVE, "evidence": f"no {kind} categories in the summary"}
    return {"finding": finding, "verdict": _combine(per), "evidence": "; ".join(parts)}


def _freq_pick(rows):
    if len(rows) < 2:
        return None
    order = category_order("freq_bin", [r["category"] for r in rows])
    by = {r["category"]: r for r in rows}
    return by[order[-1]], by[order[0]]                              # most frequent, rarest


def _pos_pick(rows):
    by = {r["category"]: r for r in rows}
    return (by["function"], by["content"]) if "function" in by and "content" in by else None


def findings(summary: pl.DataFrame, phases: dict, *, sizes: list[str] | None = None,
             min_tokens: int = MIN_TOKENS) -> list[dict]:
    """The paper's four findings, each {"finding", "verdict", "evidence"} (see module docstring).

    summary: summary.parquet frame (analysis.aggregate.summarize); phases: {size: detect_phases dict}
    (phases.json); sizes: smallest first (default: by the number in each label, else summary order).
    """
    sizes = list(sizes) if sizes is not None else size_order(summary["size"].to_list())
    return [
        _phases_finding(phases, sizes),
        _size_finding(summary, phases, sizes),
        _category_finding(summary, sizes, "freq_bin", _freq_pick, FINDING_FREQ, min_tokens),
        _category_finding(summary, sizes, "pos_group", _pos_pick, FINDING_POS, min_tokens),
    ]
