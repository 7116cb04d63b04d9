"""The statistics behind the paper's size and token claims, each with its bootstrap replicates.

Why this file exists: the paper's claims are about dynamics ("larger models reconverge; the smallest
ones never really do"; "frequent tokens and function words converge more, *faster* and *more
reliably*"), so each needs a statistic fixed in advance whose uncertainty covers every choice made
from the data. Every function here returns a point estimate and the same statistic on each bootstrap
replicate (analysis.bootstrap: seeds and documents resampled, the same draws for every group, so
statistics of two sizes or two categories are paired). findings.py turns them into tests.

  * recovered fraction of a size (`recovery`): on its E[conv] curve y[0..T-1] (steps ascending),
        trough = argmin y[t] over t < T-1          (the deepest divergence; never the last step, so
                                                    recovery can be negative)
        peak   = argmax y[t] over t <= trough      (the convergence before that divergence)
        fraction = (y[T-1] - y[trough]) / (y[peak] - y[trough])   (nan when y[peak] == y[trough])
    A size that reconverges beyond its early peak recovers more than 100% (the peak is never taken
    after the trough: that would make such a size "no divergence"). The peak and trough are chosen
    again inside every replicate, so the replicates' spread covers that choice.
  * size trend (`trend`): least-squares slope of the recovered fraction over the size rank
    (0 = smallest, sizes ordered by analysis.aggregate.size_order), per replicate.
  * reach step of a category ("faster", `reach_logstep`): from its lowest E[conv] on, where it has
    come SHARE (0.5) of the way back to its final level, interpolated linearly in log2(step) between
    the two checkpoints around the crossing, so two categories crossing between the same checkpoints
    are not tied by the grid:
        i = first t >= argmin y with y[t] >= target,  target = min y + SHARE (y[T-1] - min y)
        x* = x[i-1] + (target - y[i-1]) / (y[i] - y[i-1]) (x[i] - x[i-1])   (x* = x[i] when i = argmin)
    A claim compares x*_B - x*_A (log2 steps; > 0: A reaches its level first), per replicate.
  * reliability ("more reliably", `reliability`): the mean over steps of log(sd_B / sd_A), with sd the
    SD over seed pairs at a matched token count (analysis.contrasts), so the category with more tokens
    gets no credit for them; > 0: A varies less over seed pairs.
"""
from __future__ import annotations

import numpy as np
import polars as pl

from seedkl_jax.analysis.phases import log_step_axis

SHARE = 0.5


def curve(summary: pl.DataFrame, size: str, kind: str = "all", category: str = "all") -> pl.DataFrame:
    """Rows (step, e_conv, sd_pairs, ci_low, ci_high) of metric "seeds" for one size / category, by step."""
    return (summary.filter((pl.col("metric") == "seeds") & (pl.col("size") == size)
                           & (pl.col("category_kind") == kind) & (pl.col("category") == category))
            .select("step", "e_conv", "sd_pairs", "ci_low", "ci_high").sort("step"))


def curve_reps(replicates, size, steps, kind="all", category="all") -> np.ndarray | None:
    """[B,T] replicates of the given steps, None when any is missing."""
    if not replicates:
        return None
    got = [replicates.get((size, int(s), "seeds", kind, category)) for s in steps]
    return None if any(g is None for g in got) else np.stack(got, 1).astype(np.float64)


def recovered_fraction(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y [...,T] -> (fraction [...], peak index [...], trough index [...]) (module docstring)."""
    y = np.asarray(y, np.float64)
    T = y.shape[-1]
    head = y[..., :T - 1]
    trough = np.argmin(np.where(np.isfinite(head), head, np.inf), -1)
    before = np.where(np.arange(T - 1) <= trough[..., None], head, -np.inf)
    peak = np.argmax(np.where(np.isfinite(before), before, -np.inf), -1)
    yp = np.take_along_axis(y, peak[..., None], -1)[..., 0]
    yt = np.take_along_axis(y, trough[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where((yp > yt) & np.isfinite(y).all(-1), (y[..., -1] - yt) / (yp - yt), np.nan)
    return frac, peak, trough


def recovery(summary: pl.DataFrame, size: str, replicates=None) -> dict | None:
    """Recovered fraction of one size with its replicates; None without a curve of >= 3 steps."""
    c = curve(summary, size)
    if c.height < 3:
        return None
    steps, y = c["step"].to_list(), c["e_conv"].to_numpy()
    f, ip, it = recovered_fraction(y)
    out = {"size": size, "peak_step": steps[int(ip)], "trough_step": steps[int(it)], "final_step": steps[-1],
           "recovered": float(y[-1] - y[int(it)]), "fraction": None if np.isnan(f) else float(f),
           "fraction_reps": None}
    R = curve_reps(replicates, size, steps)
    if R is not None:
        out["fraction_reps"] = recovered_fraction(R)[0]
    return out


def trend(values: np.ndarray) -> np.ndarray:
    """Least-squares slope over rank 0..k-1 of values [..., k] (nan where any value is nan)."""
    v = np.asarray(values, np.float64)
    r = np.arange(v.shape[-1], dtype=np.float64)
    r = r - r.mean()
    return (v * r).sum(-1) / (r ** 2).sum()


def reach_logstep(steps, y: np.ndarray, share: float = SHARE) -> np.ndarray:
    """y [...,T] over ascending steps -> [...] interpolated log2 reach step (module docstring); nan where
    y has a non-finite value."""
    y = np.asarray(y, np.float64)
    x = log_step_axis(steps)
    ok = np.isfinite(y).all(-1)
    z = np.where(ok[..., None], y, 0.0)
    lo = np.argmin(z, -1)
    ymin = np.take_along_axis(z, lo[..., None], -1)[..., 0]
    target = ymin + share * (z[..., -1] - ymin)
    hit = (np.arange(z.shape[-1]) >= lo[..., None]) & (z >= target[..., None])
    i = np.argmax(hit, -1)
    j = np.maximum(i - 1, 0)
    yi, yj = np.take_along_axis(z, i[..., None], -1)[..., 0], np.take_along_axis(z, j[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where((i > lo) & (yi > yj), (target - yj) / (yi - yj), 1.0)
    xr = x[j] + np.clip(w, 0.0, 1.0) * (x[i] - x[j])
    return np.where(ok, xr, np.nan)


def reliability(sd_a: np.ndarray, sd_b: np.ndarray) -> np.ndarray:
    """Mean over steps of log(sd_b / sd_a) for sd [..., T] (steps where either is not > 0 left out)."""
    a, b = np.asarray(sd_a, np.float64), np.asarray(sd_b, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.where((a > 0) & (b > 0), np.log(b) - np.log(a), np.nan)
    fin = np.isfinite(d)
    with np.errstate(invalid="ignore", divide="ignore"):     # a replicate with one distinct seed: nan
        return np.where(fin.any(-1), np.where(fin, d, 0.0).sum(-1) / fin.sum(-1), np.nan)
