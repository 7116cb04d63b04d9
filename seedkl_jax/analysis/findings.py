"""Which of the paper's findings does this suite reproduce? One table for the demo and the study report.

Each finding gets a verdict "reproduced" / "not reproduced" / "inconclusive" and an evidence string
quoting the numbers it rests on. The rules are fixed in advance (never tuned to the outcome):

* Uncertainty: the bootstrap replicates of analysis.aggregate (seeds and documents resampled, the same
  draws for every group), so a comparison of two categories, steps or sizes uses the 95% CI of their
  *paired* difference: A beats B when that CI lies above 0, B beats A when it lies below, else undecided.
  Without replicates (a summary read back from disk) the fallback is non-overlap of the two 95% CIs.
* Per-size verdicts combine into one: "reproduced" when a majority of sizes reproduce it and none
  contradicts it, "not reproduced" when a majority contradicts it and none reproduces it,
  "inconclusive" otherwise.

1. Four phases: from phases.json (analysis.phases). "reproduced" when every size with enough steps
   shows "four_phases", or a majority does and the rest show convergence and divergence without
   reconvergence; "not reproduced" when no size does; "inconclusive" otherwise (e.g. some sizes show
   all four and others lack a measurable convergence phase, "no_convergence").
2. Size, as the paper states it: "larger models reconverge in the late phase; the smallest ones never
   really do". Per size the recovery after the trough (analysis.claims.recovery: absolute and as a
   fraction of the divergence, with CIs). "reproduced" when the largest size's recovery is clearly > 0
   AND the paired difference of fractions (largest - smallest) is clearly > 0; "not reproduced" when
   that difference is clearly < 0 or the largest size's recovery is clearly < 0; else "inconclusive".
3. Frequent tokens vs the rarest bin with >= `min_tokens` tokens (freq_bin, rarest first), and
4. function vs content words (pos_group), each three ways:
   "more"     E[conv] at each size's last step (paired difference);
   "faster"   the reach step (analysis.claims.reach_index), paired over replicates;
   "more reliably"  sd_pairs lower at >= 2/3 of the steps (analysis.claims.reliability).
"""
from __future__ import annotations

import polars as pl

from seedkl_jax.analysis import claims
from seedkl_jax.analysis.aggregate import category_order, size_order
from seedkl_jax.analysis.bootstrap import paired_ci

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
MIN_TOKENS = 20
FINDING_PHASES = ("Four phases: near-uniform, sharp convergence, sharp divergence, slow reconvergence "
                  "(paper: ~16 / 256 / 2000 steps)")
FINDING_SIZE = "Larger models reconverge in the late phase; the smallest ones never really do"
FINDING_FREQ = "Frequent tokens converge more than rare tokens (last step)"
FINDING_FREQ_FAST = "Frequent tokens converge faster than rare tokens (reach step)"
FINDING_FREQ_REL = "Frequent tokens converge more reliably than rare tokens (SD over seed pairs)"
FINDING_POS = "Function words converge more than content words (last step)"
FINDING_POS_FAST = "Function words converge faster than content words (reach step)"
FINDING_POS_REL = "Function words converge more reliably than content words (SD over seed pairs)"


def _fmt(r: dict) -> str:
    ci = ("" if r["ci_low"] is None or r["ci_high"] is None
          else f" [{r['ci_low']:.4g}, {r['ci_high']:.4g}]")
    return f"{r['e_conv']:.4g}{ci}"


def _ci_str(ci, fmt=".3g") -> str:
    return "" if ci is None or ci[0] is None else f" [{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def _cmp(a: dict, b: dict, replicates=None) -> tuple[int, str]:
    """(+1 a clearly above b, -1 clearly below, 0 undecided; the paired-difference CI text)."""
    key = lambda r: (r["size"], int(r["step"]), "seeds", r["category_kind"], r["category"])
    if replicates and key(a) in replicates and key(b) in replicates:
        lo, hi = paired_ci(replicates[key(a)], replicates[key(b)])
        return (1 if lo > 0 else -1 if hi < 0 else 0), f"difference CI [{lo:.3g}, {hi:.3g}]"
    if None in (a["ci_low"], a["ci_high"], b["ci_low"], b["ci_high"]):
        return 0, "no CI"
    return (1 if a["ci_low"] > b["ci_high"] else (-1 if a["ci_high"] < b["ci_low"] else 0)), "CI overlap rule"


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


def _size_finding(summary: pl.DataFrame, phases: dict, sizes: list[str], replicates) -> dict:
    rec = [r for r in (claims.recovery(summary, s, phases.get(s), replicates) for s in sizes) if r is not None]
    parts = [f"{r['size']}: recovered {r['recovered']:.4g}{_ci_str(r['recovered_ci'])} nats from step "
             f"{r['trough_step']} to {r['final_step']}"
             + ("" if r["fraction"] is None else f" = {r['fraction']:.0%}{_ci_str(r['fraction_ci'], '.0%')} of the "
                f"divergence from step {r['peak_step']}") for r in rec]
    ev = "; ".join(parts)
    if len(rec) < 2:
        return {"finding": FINDING_SIZE, "verdict": INCONCLUSIVE,
                "evidence": (ev + "; " if ev else "") + "needs at least two sizes"}
    small, large = rec[0], rec[-1]
    if small.get("fraction_reps") is None or large.get("fraction_reps") is None:
        return {"finding": FINDING_SIZE, "verdict": INCONCLUSIVE,
                "evidence": ev + "; no bootstrap replicates, so no paired difference"}
    lo, hi = paired_ci(large["fraction_reps"], small["fraction_reps"])
    r_lo, r_hi = large["recovered_ci"]
    if r_lo is not None and r_lo > 0 and lo > 0:
        verdict = REPRODUCED
    elif hi < 0 or (r_hi is not None and r_hi < 0):
        verdict = NOT_REPRODUCED
    else:
        verdict = INCONCLUSIVE
    ev += (f"; fraction {large['size']} - {small['size']}: "
           f"{(large['fraction'] or 0) - (small['fraction'] or 0):+.0%} [{lo:.0%}, {hi:.0%}] (paired)")
    return {"finding": FINDING_SIZE, "verdict": verdict, "evidence": ev}


def _pairs(summary, sizes, kind, pick, min_tokens):
    """size -> (step, row a, row b) at the last step, or a reason string."""
    fin, out = _final_rows(summary, kind), {}
    for size in sizes:
        if size not in fin:
            continue
        step, rows = fin[size]
        ab = pick([r for r in rows if r["n_tokens"] >= min_tokens])
        out[size] = (step, *ab) if ab else f"{size}: too few categories with >= {min_tokens} tokens"
    return out


def _category_findings(summary, sizes, kind, pick, names, min_tokens, replicates) -> list[dict]:
    pairs = _pairs(summary, sizes, kind, pick, min_tokens)
    if not pairs:
        return [{"finding": n, "verdict": INCONCLUSIVE, "evidence": f"no {kind} categories in the summary"}
                for n in names]
    more, fast, rel = ([], []), ([], []), ([], [])
    for size, v in pairs.items():
        if isinstance(v, str):
            for lst in (more, fast, rel):
                lst[0].append(0); lst[1].append(v)
            continue
        step, a, b = v
        c, how = _cmp(a, b, replicates)
        word = {1: "clearly above", -1: "clearly below", 0: "not clearly different from"}[c]
        more[0].append(c)
        more[1].append(f"{size} (step {step}): {a['category']} {_fmt(a)} (n={a['n_tokens']}) {word} "
                       f"{b['category']} {_fmt(b)} (n={b['n_tokens']}; {how})")
        f = claims.faster(summary, size, kind, a["category"], b["category"], replicates)
        fast[0].append(0 if f is None else f["sign"])
        fast[1].append(f"{size}: too few steps" if f is None else
                       f"{size}: {a['category']} reaches half its recovery at step {f['a_step']}, {b['category']} at step "
                       f"{f['b_step']}" + ("" if f["ci"][0] is None else
                                           f" (checkpoints later for {b['category']}: CI [{f['ci'][0]:.3g}, {f['ci'][1]:.3g}])"))
        r = claims.reliability(summary, size, kind, a["category"], b["category"])
        rel[0].append(0 if r is None else r["sign"])
        rel[1].append(f"{size}: no sd_pairs" if r is None else
                      f"{size}: sd_pairs of {a['category']} below {b['category']}'s at {r['share']:.0%} of "
                      f"{r['n_steps']} steps (medians {r['a_median']:.3g} vs {r['b_median']:.3g})")
    return [{"finding": n, "verdict": _combine(x[0]), "evidence": "; ".join(x[1])}
            for n, x in zip(names, (more, fast, rel))]


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
             min_tokens: int = MIN_TOKENS, replicates: dict | None = None,
             phase_steps: tuple[int, ...] | None = (16, 256, 2000)) -> list[dict]:
    """The paper's findings, each {"finding", "verdict", "evidence"} (see module docstring).

    summary: summary.parquet frame (analysis.aggregate.summarize); phases: {size: detect_phases dict}
    (phases.json); sizes: smallest first (default: by the number in each label, else summary order);
    replicates: the bootstrap replicates summarize filled (paired comparisons), None = CI-overlap rule.
    """
    sizes = list(sizes) if sizes is not None else size_order(summary["size"].to_list())
    no_phases = {"finding": FINDING_PHASES, "verdict": INCONCLUSIVE,
                 "evidence": "the suite carries no reference phase boundaries: no phase verdict"}
    return [
        _phases_finding(phases, sizes) if phase_steps else no_phases,
        _size_finding(summary, phases, sizes, replicates),
        *_category_findings(summary, sizes, "freq_bin", _freq_pick, (FINDING_FREQ, FINDING_FREQ_FAST, FINDING_FREQ_REL),
                            min_tokens, replicates),
        *_category_findings(summary, sizes, "pos_group", _pos_pick, (FINDING_POS, FINDING_POS_FAST, FINDING_POS_REL),
                            min_tokens, replicates),
    ]
