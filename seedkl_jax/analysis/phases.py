"""Find the paper's four training phases in an E[conv]-over-steps curve.

The paper (PolyPythias, seeds compared by KL) sees, on a log-step axis:
  1. near-uniform   -- models still output ~uniform distributions, E[conv] flat   (steps < ~16)
  2. sharp convergence -- E[conv] rises: seeds learn the same simple statistics   (~16 .. ~256)
  3. sharp divergence  -- E[conv] falls: seeds pick up different, richer features (~256 .. ~2000)
  4. slow reconvergence -- E[conv] climbs back slowly                              (> ~2000)
This module locates the three boundaries in any suite's curve and says when a phase is missing.

Axis. x = log2(step) for step > 0; step 0 sits one octave before the smallest positive step
(x0 = log2(min positive step) - 1), so the paper's grid 0, 1, 2, 4, ... is evenly spaced
(step 0 at x = -1). Boundaries are reported as checkpoint steps of the sweep.

Method: continuous piecewise-linear least-squares fits in x with knots at checkpoints
(design [1, x, (x-b1)+, (x-b2)+, (x-b3)+]). All knot triples are tried (exhaustively: ~1000 tiny
batched solves for a 20-step sweep) and the best fit is kept among those whose segment slopes follow
(free, +, -, free): convergence must rise, divergence fall; the first and last segments may do
anything. A fitted phase "counts" when its change in E[conv] from start to end exceeds
    threshold = max(3 * noise, 5% of the curve's range),
noise = the median bootstrap standard error of E[conv] (CI width / 3.92) when CIs are given, else a
robust point-to-point noise estimate (`curve_noise`: scaled MAD of each point minus the linear
interpolation of its neighbours, which kinks and single spikes do not inflate). Decisions:
    fewer than MIN_STEPS finite points             -> "too_short" (nothing fitted, no crash)
    constant curve                                 -> "no_phases"
    4-segment fit: convergence and divergence count, then
        the last segment rises by >= threshold     -> "four_phases"
        otherwise (flat, falling, a small wiggle)  -> "no_reconvergence"  (a curve that never recovers)
    else 2-segment fit (free, +): the overall rise counts
        and the first segment does not fall        -> "no_divergence"
    otherwise                                      -> "no_phases" (one straight line is reported)
Phase 1 is reported `present` when its change does *not* count (flat, i.e. near-uniform); a sweep
that starts mid-training shows `present: false` there. In "no_reconvergence" the last segment is
named "late" / "no reconvergence" and `reconvergence_start` is None. Fitting lines over log steps
averages several checkpoints per phase, so token-level noise moves knots by at most a checkpoint or
so (tested at +-1 log2 step); the threshold keeps tail wiggles from passing for reconvergence.
"""
from __future__ import annotations

import itertools

import numpy as np
import polars as pl

from seedkl_jax.errors import SeedKLError

PAPER_BOUNDARIES = {"convergence_start": 16, "divergence_start": 256, "reconvergence_start": 2000}
PHASES = (("uniform", "near-uniform"), ("convergence", "sharp convergence"),
          ("divergence", "sharp divergence"), ("reconvergence", "slow reconvergence"))
BOUNDARY_NAMES = tuple(PAPER_BOUNDARIES)
MIN_STEPS = 6
NOISE_SDS = 3.0
RANGE_FRACTION = 0.05
METHOD = ("continuous piecewise-linear least squares over x=log2(step) (step 0 one octave before the "
          "first positive step), knots at checkpoints, slope pattern (free,+,-,+); a phase counts when "
          "its change exceeds max(3*noise, 5% of range)")


def log_step_axis(steps) -> np.ndarray:
    """x position of each step: log2(step), step 0 one octave before the smallest positive step."""
    steps = np.asarray(steps, dtype=np.float64)
    pos = steps[steps > 0]
    x0 = (np.log2(pos.min()) - 1.0) if pos.size else 0.0
    with np.errstate(divide="ignore"):
        return np.where(steps > 0, np.log2(np.maximum(steps, 1e-300)), x0)


def _fits(x, y, k):
    """All continuous piecewise-linear fits with k interior knots at data points.
    Returns knot index combos [K,k], coefficients [K,2+k], sse [K], segment slopes [K,k+1]."""
    n = len(x)
    combos = (np.array(list(itertools.combinations(range(1, n - 1), k)), dtype=np.int64).reshape(-1, k)
              if k else np.zeros((1, 0), np.int64))
    cols = [np.ones((len(combos), n)), np.broadcast_to(x, (len(combos), n))]
    cols += [np.maximum(x[None, :] - x[combos[:, i]][:, None], 0.0) for i in range(k)]
    X = np.stack(cols, -1)                                         # [K, n, 2+k]
    XtX = X.transpose(0, 2, 1) @ X
    Xty = X.transpose(0, 2, 1) @ y
    beta = np.linalg.solve(XtX + 1e-12 * np.eye(2 + k), Xty[..., None])[..., 0]  # distinct knots: full rank
    resid = y[None, :] - np.einsum("knp,kp->kn", X, beta)
    slopes = np.cumsum(beta[:, 1:], axis=1)
    return combos, beta, (resid ** 2).sum(1), slopes, X


def _best(x, y, signs):
    """Best fit whose segment slopes 2.. have the given signs (+1 / -1; 0 = free); None when none does."""
    k = len(signs)
    if len(x) < k + 2:
        return None
    combos, beta, sse, slopes, X = _fits(x, y, k)
    ok = np.ones(len(combos), bool)
    for i, s in enumerate(signs):
        if s:
            ok &= np.sign(slopes[:, i + 1]) == s
    if not ok.any():
        return None
    i = int(np.flatnonzero(ok)[np.argmin(sse[ok])])
    fit = X[i] @ beta[i]
    ends = np.concatenate([[0], combos[i], [len(x) - 1]])
    return {"knots": combos[i], "fit": fit, "slopes": slopes[i], "ends": ends,
            "deltas": fit[ends[1:]] - fit[ends[:-1]]}


def curve_noise(x, y) -> float:
    """Robust SD of the point-to-point noise: each interior point minus the linear interpolation of its
    two neighbours (variance sigma^2 (1 + w^2 + (1-w)^2)), scaled MAD. Kinks and single spikes are
    outliers to the median, so the curve's shape does not inflate it; exact for a linear curve."""
    if len(x) < 3:
        return 0.0
    w = (x[2:] - x[1:-1]) / (x[2:] - x[:-2])
    r = (y[1:-1] - (w * y[:-2] + (1 - w) * y[2:])) / np.sqrt(1 + w ** 2 + (1 - w) ** 2)
    return float(1.4826 * np.median(np.abs(r)))


def detect_phases(steps, e_conv, *, ci_low=None, ci_high=None, min_steps: int = MIN_STEPS) -> dict:
    """Phases of one size's E[conv] curve; a JSON-ready dict (see module docstring).

    steps [n] checkpoint steps (any order, distinct), e_conv [n] E[conv] at those steps (nan dropped),
    ci_low/ci_high [n] optional bootstrap interval (sets a noise floor).
    Keys: status, message, method, n_steps, boundaries {convergence_start, divergence_start,
    reconvergence_start: step | None}, paper_boundaries, boundary_log2_offset (log2(found/paper)),
    phases [{name, label, start_step, end_step, delta_e_conv, slope_per_log2_step, present}],
    reconvergence (bool), noise_sd, threshold, steps, e_conv_fit (fitted curve, None where unfitted).
    """
    steps = np.asarray(steps, dtype=np.int64).reshape(-1)
    y_all = np.asarray(e_conv, dtype=np.float64).reshape(-1)
    if steps.shape != y_all.shape:
        raise SeedKLError(f"phases: {len(steps)} steps but {len(y_all)} E[conv] values; give one per step")
    if len(np.unique(steps)) != len(steps):
        raise SeedKLError("phases: steps repeat; give each checkpoint step once")
    if (steps < 0).any():
        raise SeedKLError("phases: negative step; steps are training steps >= 0")
    order = np.argsort(steps)
    steps, y_all = steps[order], y_all[order]
    ci_sd = None
    if ci_low is not None and ci_high is not None:
        w = np.asarray(ci_high, np.float64)[order] - np.asarray(ci_low, np.float64)[order]
        w = w[np.isfinite(w)]
        ci_sd = float(np.median(w) / 3.92) if w.size else None
    keep = np.isfinite(y_all)
    st, y = steps[keep], y_all[keep]
    out = {
        "status": None, "message": "", "method": METHOD, "n_steps": int(len(st)),
        "boundaries": {b: None for b in BOUNDARY_NAMES}, "paper_boundaries": dict(PAPER_BOUNDARIES),
        "boundary_log2_offset": {b: None for b in BOUNDARY_NAMES}, "phases": [], "reconvergence": False,
        "noise_sd": None, "threshold": None, "steps": [int(s) for s in steps],
        "e_conv_fit": [None] * len(steps),
    }
    if len(st) < min_steps:
        out["status"] = "too_short"
        out["message"] = (f"only {len(st)} step(s) with a finite E[conv]; phase detection needs at least "
                          f"{max(min_steps, 5)} log-spaced checkpoints (e.g. 0,1,2,4,...)")
        return out
    x = log_step_axis(st)
    rng = float(np.ptp(y))
    noise = ci_sd if ci_sd is not None else curve_noise(x, y)
    thr = max(NOISE_SDS * noise, RANGE_FRACTION * rng)
    out["noise_sd"], out["threshold"] = noise, thr
    if rng == 0.0:
        out["status"], out["message"] = "no_phases", "no phases: E[conv] is constant over the sweep"
        return out

    fit = _best(x, y, (+1, -1, 0))                                 # (free, +, -, free)
    d = fit["deltas"] if fit is not None else None
    if d is not None and d[1] >= thr and d[2] <= -thr:
        status = "four_phases" if d[3] >= thr else "no_reconvergence"
    else:
        fit = _best(x, y, (+1,))                                   # (free, +)
        d = fit["deltas"] if fit is not None else None
        if d is not None and d[0] + d[1] >= thr and d[0] > -thr:
            status = "no_divergence"
        else:
            status, fit = "no_phases", _best(x, y, ())             # one straight line
    full_fit = np.full(len(steps), np.nan)
    full_fit[np.flatnonzero(keep)] = fit["fit"]
    out["status"] = status
    out["e_conv_fit"] = [None if not np.isfinite(v) else float(v) for v in full_fit]
    ends = fit["ends"]
    for i in range(len(ends) - 1):
        name, label = PHASES[i]
        present = abs(fit["deltas"][i]) < thr if i == 0 else fit["deltas"][i] * (-1 if i == 2 else 1) >= thr
        if i == 3 and not present:
            name, label = "late", "no reconvergence"
        out["phases"].append({
            "name": name, "label": label, "start_step": int(st[ends[i]]), "end_step": int(st[ends[i + 1]]),
            "delta_e_conv": float(fit["deltas"][i]), "slope_per_log2_step": float(fit["slopes"][i]),
            "present": bool(present)})
    for b, p in zip(BOUNDARY_NAMES, out["phases"][1:]):
        if p["present"]:
            out["boundaries"][b] = p["start_step"]
            out["boundary_log2_offset"][b] = float(np.log2(max(p["start_step"], 1) / PAPER_BOUNDARIES[b]))
    out["reconvergence"] = status == "four_phases"
    found = ", ".join(f"{b.replace('_', ' ')} at step {s}" for b, s in out["boundaries"].items() if s is not None)
    if status == "four_phases":
        out["message"] = f"four phases: {found} (paper: 16 / 256 / 2000)"
    elif status == "no_reconvergence":
        out["message"] = (f"no reconvergence: {found}; after the divergence ends at step "
                          f"{out['phases'][2]['end_step']} E[conv] does not recover")
    elif status == "no_divergence":
        out["message"] = f"no divergence: {found}; E[conv] rises and does not fall back"
    else:
        out["message"] = "no phases: E[conv] shows no convergence followed by divergence beyond the noise"
    return out


def phases_from_summary(summary: pl.DataFrame, metric: str = "seeds") -> dict[str, dict]:
    """detect_phases for every size, from the summary's (metric, category_kind == "all") rows: the
    content of phases.json, keyed by size."""
    rows = summary.filter((pl.col("metric") == metric) & (pl.col("category_kind") == "all")).sort("step")
    out = {}
    for size in dict.fromkeys(rows["size"].to_list()):
        r = rows.filter(pl.col("size") == size)
        out[size] = detect_phases(r["step"].to_numpy(), r["e_conv"].to_numpy(),
                                  ci_low=r["ci_low"].to_numpy(), ci_high=r["ci_high"].to_numpy())
    return out
