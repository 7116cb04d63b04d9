"""The paper's claims over training steps, with the paired seed/document bootstrap (analysis.bootstrap).

Why this file exists: the paper's size claim is about the late phase ("larger models reconverge; the
smallest ones never really do"), and its frequency / PoS claims are about dynamics ("frequent tokens
and function words converge *faster and more reliably*"): a comparison at the last step alone does not
test them. The quantities (fixed in advance, never tuned to an outcome):

  * recovery of a size: from its measured peak (divergence start) and trough (reconvergence start),
    taken from phases.json's `measured` points when present, else peak = highest E[conv], trough = lowest
    E[conv] after it; final = the last step.
        recovered = E_final - E_trough (nats),  fraction = recovered / (E_peak - E_trough)
    CIs from the replicates of those three steps (the same draws, so the ratio is a paired statistic).
  * reach step of a category ("faster"): the first checkpoint, from its lowest E[conv] on, at which it
    has come SHARE (0.5) of the way from that low point back to its final level,
        first t >= argmin E with E(t) >= E_min + SHARE (E_final - E_min)
    (a category that only rises reaches half its overall gain; one at its lowest at the end reaches it
    there). Per replicate too, so two categories compare by the paired difference of their reach
    steps (in checkpoint indices).
  * reliability of a category ("more reliably"): its sd_pairs (the SD over seed pairs the paper draws
    as the band); A is more reliable than B at a step when A's sd_pairs is lower. Summarised as the
    share of steps where it is lower: >= 2/3 for A -> A more reliable, <= 1/3 -> B, else undecided.

Replicates: {(size, step, "seeds", category_kind, category): e_conv replicates [B]} as filled by
`analysis.aggregate.summarize(..., replicates=...)`.
"""
from __future__ import annotations

import numpy as np
import polars as pl

from seedkl_jax.analysis.bootstrap import paired_ci, percentile_ci

SHARE = 0.5
RELIABLE_SHARE = 2 / 3


def curve(summary: pl.DataFrame, size: str, kind: str = "all", category: str = "all") -> pl.DataFrame:
    """Rows (step, e_conv, sd_pairs, ci_low, ci_high) of metric "seeds" for one size / category, by step."""
    return (summary.filter((pl.col("metric") == "seeds") & (pl.col("size") == size)
                           & (pl.col("category_kind") == kind) & (pl.col("category") == category))
            .select("step", "e_conv", "sd_pairs", "ci_low", "ci_high").sort("step"))


def _reps(replicates, size, steps, kind="all", category="all") -> np.ndarray | None:
    """[B,T] replicates of the given steps, None when any is missing."""
    if not replicates:
        return None
    got = [replicates.get((size, int(s), "seeds", kind, category)) for s in steps]
    return None if any(g is None for g in got) else np.stack(got, 1)


def _ci(x: np.ndarray) -> tuple[float | None, float | None]:
    lo, hi = percentile_ci(np.asarray(x, np.float64))
    return (None if np.isnan(lo[0]) else float(lo[0])), (None if np.isnan(hi[0]) else float(hi[0]))


def recovery(summary: pl.DataFrame, size: str, phase: dict | None, replicates=None) -> dict | None:
    """Recovery of one size after its trough (module docstring); None without a curve of >= 3 steps."""
    c = curve(summary, size)
    if c.height < 3:
        return None
    steps, y = c["step"].to_list(), c["e_conv"].to_numpy()
    m = (phase or {}).get("measured") or {}
    if "peak" in m and "trough" in m and m["peak"]["step"] in steps and m["trough"]["step"] in steps:
        ip, it = steps.index(m["peak"]["step"]), steps.index(m["trough"]["step"])
    else:
        ip = int(np.argmax(y))
        it = ip + int(np.argmin(y[ip:]))
    i_f = len(steps) - 1
    out = {"size": size, "peak_step": steps[ip], "trough_step": steps[it], "final_step": steps[i_f],
           "recovered": float(y[i_f] - y[it]),
           "fraction": float((y[i_f] - y[it]) / (y[ip] - y[it])) if y[ip] != y[it] else None,
           "recovered_ci": (None, None), "fraction_ci": (None, None), "fraction_reps": None}
    R = _reps(replicates, size, steps)
    if R is not None:
        rec = R[:, i_f] - R[:, it]
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = rec / (R[:, ip] - R[:, it]) if ip != it else np.full(len(rec), np.nan)
        out.update(recovered_ci=_ci(rec), fraction_ci=_ci(frac), fraction_reps=frac, recovered_reps=rec)
    return out


def reach_index(y: np.ndarray, share: float = SHARE) -> np.ndarray:
    """y [...,T] -> [...] first index t >= argmin(y) with y[t] >= min + share (y[-1] - min) (float; nan
    where y has a non-finite value, e.g. a replicate that drew a single seed)."""
    y = np.asarray(y, np.float64)
    ok = np.isfinite(y).all(-1)
    z = np.where(ok[..., None], y, 0.0)
    lo = np.argmin(z, -1)
    ymin = np.take_along_axis(z, lo[..., None], -1)
    hit = (np.arange(z.shape[-1]) >= lo[..., None]) & (z >= ymin + share * (z[..., -1:] - ymin))
    return np.where(ok, np.argmax(hit, -1), np.nan)


def faster(summary: pl.DataFrame, size: str, kind: str, a: str, b: str, replicates=None) -> dict | None:
    """Reach steps of categories a and b, and the paired CI of (index_b - index_a) (> 0: a is faster)."""
    ca, cb = curve(summary, size, kind, a), curve(summary, size, kind, b)
    steps = sorted(set(ca["step"].to_list()) & set(cb["step"].to_list()))
    if len(steps) < 3:
        return None
    ya = ca.filter(pl.col("step").is_in(steps))["e_conv"].to_numpy()
    yb = cb.filter(pl.col("step").is_in(steps))["e_conv"].to_numpy()
    ia, ib = int(reach_index(ya)), int(reach_index(yb))
    out = {"a_step": steps[ia], "b_step": steps[ib], "ci": (None, None), "sign": int(np.sign(ib - ia))}
    Ra, Rb = _reps(replicates, size, steps, kind, a), _reps(replicates, size, steps, kind, b)
    if Ra is not None and Rb is not None:
        lo, hi = paired_ci(reach_index(Rb), reach_index(Ra))
        out["ci"] = (lo, hi)
        out["sign"] = 1 if lo > 0 else (-1 if hi < 0 else 0)
    return out


def reliability(summary: pl.DataFrame, size: str, kind: str, a: str, b: str) -> dict | None:
    """Share of steps where a's sd_pairs is below b's; sign +1 (a more reliable), -1, or 0."""
    ca, cb = curve(summary, size, kind, a), curve(summary, size, kind, b)
    j = ca.join(cb, on="step", suffix="_b").drop_nulls(["sd_pairs", "sd_pairs_b"])
    if not j.height:
        return None
    share = float((j["sd_pairs"] < j["sd_pairs_b"]).mean())
    return {"share": share, "n_steps": j.height, "a_median": float(j["sd_pairs"].median()),
            "b_median": float(j["sd_pairs_b"].median()),
            "sign": 1 if share >= RELIABLE_SHARE else (-1 if share <= 1 - RELIABLE_SHARE else 0)}
