"""Find the paper's four training phases in an E[conv]-over-steps curve, deciding from the data.

The paper (PolyPythias, seeds compared by KL) sees, on a log-step axis:
  1. near-uniform   -- models still output ~uniform distributions, E[conv] flat   (steps < ~16)
  2. sharp convergence -- E[conv] rises: seeds learn the same simple statistics   (~16 .. ~256)
  3. sharp divergence  -- E[conv] falls: seeds pick up different, richer features (~256 .. ~2000)
  4. slow reconvergence -- E[conv] climbs back slowly                              (> ~2000)
This module locates the boundaries in any suite's curve and says when a phase is missing.

Axis. x = log2(step) for step > 0; step 0 sits one octave before the smallest positive step
(x0 = log2(min positive step) - 1), so the paper's grid 0, 1, 2, 4, ... is evenly spaced.

Method, as small steps (each a function below), decisions from the *measured* E[conv]:
  1. `prepare`: sort, drop non-finite points; fewer than MIN_STEPS -> "too_short".
  2. `noise_floor`: the step-to-step variability of the measured curve (`curve_noise`: scaled MAD
     of each point minus the interpolation of its neighbours; kinks and single spikes do not
     inflate it). threshold = max(3 * noise, 5% of the curve's range).
  3. `fit_models`: continuous piecewise-linear least squares over x with knots at checkpoints, for
     1..4 segments with slope patterns (free), (free,+), (free,+,-), (free,+,-,+); each gets
     BIC = n log(SSE/n) + (2 + 2k) log n (k knots, each a slope change and a location). The model
     with the lowest BIC is the *shape the data support*; the fit only places boundaries.
  4. `measure`: measured extremes, located with the BIC-preferred fit: peak = highest measured point
     between its first knot and its third (or the end), trough = lowest measured point after the peak, start = lowest measured
     point up to the peak, final = the last step. Rises/falls are measured differences:
     convergence = y[peak] - y[start], divergence = y[trough] - y[peak], reconvergence =
     y[final] - y[trough].
  5. `decide` (descriptive, when the suite has no phase lines or its steps do not cover them): a change
     between the measured extremes counts when |change| >= threshold AND it clears its uncertainty: with
     the bootstrap replicates of the steps (analysis.bootstrap: the same draws at every step), the 95%
     CI of the paired difference y[b] - y[a] excludes 0; else, where CIs are given, the two endpoints'
     intervals do not overlap. The extremes are chosen from the data, so these CIs do not cover that
     choice: this mode describes, it is not the test behind findings.json.
  5'. `line_changes` (the test, when `phase_steps` is given and the steps cover it, see `covers`): the
     changes between the suite's phase lines, fixed in advance, with paired bootstrap p-values
     (sampling uncertainty only; no roughness threshold). A change counts when p < 0.05 in the
     paper's direction (findings.py adjusts these p-values for the whole table with Holm).
  Status, from which changes count -- never from how many segments BIC prefers (`status_from`):
        convergence, divergence and reconvergence count -> "four_phases"
        only divergence and reconvergence count         -> "no_convergence"
        convergence and divergence count                -> "no_reconvergence"
        convergence counts                              -> "no_divergence"
        otherwise                                       -> "no_phases"
Boundaries: convergence starts at the first knot (where the flat part ends, capped at the peak),
divergence at the measured peak, reconvergence at the measured trough (only when they count).
`detect_phases` returns a `PhaseResult`; `to_dict()` is the content of phases.json.
"""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import polars as pl

from seedkl_jax.errors import SeedKLError

PAPER_BOUNDARIES = {"convergence_start": 16, "divergence_start": 256, "reconvergence_start": 2000}
PAPER_PHASE_STEPS = tuple(PAPER_BOUNDARIES.values())     # PolyPythia's phase lines (16, 256, 2000)
PHASES = (("uniform", "near-uniform"), ("convergence", "sharp convergence"),
          ("divergence", "sharp divergence"), ("reconvergence", "slow reconvergence"))
BOUNDARY_NAMES = tuple(PAPER_BOUNDARIES)
MIN_STEPS = 6
NOISE_SDS = 3.0
RANGE_FRACTION = 0.05
METHOD = ("measured E[conv] and its CIs decide; continuous piecewise-linear fits over x=log2(step) with "
          "1..4 segments compared by BIC place the boundaries; a change counts when it exceeds max(3*noise, "
          "5% of range) (noise = step-to-step variability) and its endpoints' CIs do not overlap")
METHOD_LINES = ("changes between the suite's phase lines, fixed in advance (convergence E(line1)-E(line0), "
                "divergence E(line2)-E(line1), reconvergence E(last)-E(line2), E interpolated in log2 step), each "
                "counting when its paired bootstrap p < 0.05 in the paper's direction; BIC-compared piecewise-linear "
                "fits over x=log2(step) only place the boundaries reported beside the lines")
SEGMENT_SIGNS = {1: (), 2: (+1,), 3: (+1, -1), 4: (+1, -1, +1)}


@dataclasses.dataclass
class Curve:
    """One size's measured curve, sorted by step, finite points only."""
    steps: np.ndarray
    x: np.ndarray
    y: np.ndarray
    lo: np.ndarray | None
    hi: np.ndarray | None
    all_steps: np.ndarray          # every step given (incl. non-finite E[conv]), sorted
    keep: np.ndarray               # [len(all_steps)] bool: finite
    reps: np.ndarray | None = None  # [B, n] bootstrap replicates of y (paired across steps)


@dataclasses.dataclass
class PhaseResult:
    """What detect_phases found (module docstring); to_dict() -> phases.json entry."""
    status: str
    message: str
    n_steps: int
    steps: list[int]
    boundaries: dict = dataclasses.field(default_factory=lambda: {b: None for b in BOUNDARY_NAMES})
    phases: list[dict] = dataclasses.field(default_factory=list)
    noise_sd: float | None = None
    threshold: float | None = None
    n_segments: int | None = None
    bic: dict = dataclasses.field(default_factory=dict)
    measured: dict = dataclasses.field(default_factory=dict)
    changes: dict = dataclasses.field(default_factory=dict)
    e_conv_fit: list = dataclasses.field(default_factory=list)
    phase_steps: list | None = None     # the suite's phase lines the status was tested at (None: not tested)
    tested: str = "extremes"            # "lines": changes between phase_steps; "extremes": descriptive

    @property
    def reconvergence(self) -> bool:
        return self.status == "four_phases"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        lines = dict(zip(BOUNDARY_NAMES, self.phase_steps or PAPER_PHASE_STEPS))
        d.update(method=METHOD_LINES if self.tested == "lines" else METHOD, reconvergence=self.reconvergence,
                 paper_boundaries=lines,
                 boundary_log2_offset={b: None if s is None else float(np.log2(max(s, 1) / lines[b]))
                                       for b, s in self.boundaries.items()},
                 bic={str(k): v for k, v in self.bic.items()})
        return d


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
    """Best fit whose segment slopes 2.. have the given signs (+1 / -1); None when none does."""
    k = len(signs)
    if len(x) < k + 2:
        return None
    combos, beta, sse, slopes, X = _fits(x, y, k)
    ok = np.ones(len(combos), bool)
    for i, s in enumerate(signs):
        ok &= np.sign(slopes[:, i + 1]) == s
    if not ok.any():
        return None
    i = int(np.flatnonzero(ok)[np.argmin(sse[ok])])
    return {"knots": combos[i], "fit": X[i] @ beta[i], "sse": float(sse[i])}


def curve_noise(x, y) -> float:
    """Robust SD of the point-to-point noise: each interior point minus the linear interpolation of its
    two neighbours (variance sigma^2 (1 + w^2 + (1-w)^2)), scaled MAD. Kinks and single spikes are
    outliers to the median, so the curve's shape does not inflate it; exact for a linear curve."""
    if len(x) < 3:
        return 0.0
    w = (x[2:] - x[1:-1]) / (x[2:] - x[:-2])
    r = (y[1:-1] - (w * y[:-2] + (1 - w) * y[2:])) / np.sqrt(1 + w ** 2 + (1 - w) ** 2)
    return float(1.4826 * np.median(np.abs(r)))


def prepare(steps, e_conv, ci_low=None, ci_high=None, replicates=None) -> Curve:
    """Validate and sort one curve; keep the finite points. replicates: [B, n] per step, optional."""
    steps = np.asarray(steps, dtype=np.int64).reshape(-1)
    y = np.asarray(e_conv, dtype=np.float64).reshape(-1)
    if steps.shape != y.shape:
        raise SeedKLError(f"phases: {len(steps)} steps but {len(y)} E[conv] values; give one per step")
    if len(np.unique(steps)) != len(steps):
        raise SeedKLError("phases: steps repeat; give each checkpoint step once")
    if (steps < 0).any():
        raise SeedKLError("phases: negative step; steps are training steps >= 0")
    order = np.argsort(steps)
    steps, y = steps[order], y[order]
    lo = hi = None
    if ci_low is not None and ci_high is not None:
        lo = np.asarray(ci_low, np.float64).reshape(-1)[order]
        hi = np.asarray(ci_high, np.float64).reshape(-1)[order]
    keep = np.isfinite(y)
    reps = None if replicates is None else np.asarray(replicates, np.float64)[:, order][:, keep]
    return Curve(steps[keep], log_step_axis(steps[keep]) if keep.any() else np.zeros(0), y[keep],
                 None if lo is None else lo[keep], None if hi is None else hi[keep], steps, keep, reps)


def noise_floor(c: Curve) -> tuple[float, float]:
    """(noise SD from step-to-step variability, threshold = max(3 noise, 5% of range))."""
    noise = curve_noise(c.x, c.y)
    return noise, max(NOISE_SDS * noise, RANGE_FRACTION * float(np.ptp(c.y)))


def fit_models(c: Curve) -> dict[int, dict]:
    """Best constrained fit and its BIC for 1..4 segments (those that exist for this curve)."""
    n = len(c.y)
    floor = (1e-6 * max(float(np.ptp(c.y)), 1e-300)) ** 2           # a perfect fit is not -inf
    out = {}
    for segs, signs in SEGMENT_SIGNS.items():
        f = _best(c.x, c.y, signs)
        if f is not None:
            f["bic"] = float(n * np.log(max(f["sse"] / n, floor)) + (2 + 2 * len(signs)) * np.log(n))
            out[segs] = f
    return out


def measure(c: Curve, fit: dict | None) -> dict:
    """Indices of the measured start, peak, trough and final points (module docstring, step 4)."""
    n = len(c.y)
    knots = list(fit["knots"]) if fit is not None else []
    k1 = knots[0] if knots else 0
    end = knots[2] if len(knots) >= 3 else n - 1
    peak = k1 + int(np.argmax(c.y[k1:end + 1]))
    start = int(np.argmin(c.y[:peak + 1]))
    trough = peak + int(np.argmin(c.y[peak:]))
    return {"conv_knot": min(k1, peak), "start": start, "peak": peak, "trough": trough, "final": n - 1}


def _counts(c: Curve, a: int, b: int, thr: float, sign: int) -> tuple[float, bool]:
    """Measured change y[b] - y[a]; counts when sign*change >= thr and it clears its uncertainty (paired
    replicates when given, else non-overlapping CIs of a and b)."""
    d = float(c.y[b] - c.y[a])
    ok = sign * d >= thr and d != 0.0
    if ok and c.reps is not None:
        from seedkl_jax.analysis.bootstrap import paired_ci
        lo, hi = paired_ci(c.reps[:, b], c.reps[:, a])
        ok = lo > 0 if sign > 0 else hi < 0
    elif ok and c.lo is not None and np.isfinite([c.lo[a], c.hi[a], c.lo[b], c.hi[b]]).all():
        ok = c.lo[b] > c.hi[a] if sign > 0 else c.hi[b] < c.lo[a]
    return d, bool(ok)


def status_from(conv: bool, div: bool, rec: bool) -> str:
    """Status from which changes count (never from the number of segments BIC prefers)."""
    if conv and div and rec:
        return "four_phases"
    if div and rec:
        return "no_convergence"
    if conv and div:
        return "no_reconvergence"
    if conv:
        return "no_divergence"
    return "no_phases"


def decide(c: Curve, models: dict[int, dict], thr: float) -> tuple[str, int, dict, dict]:
    """(status, segments preferred by BIC, measured point indices, changes) -- module docstring, step 5.
    BIC only locates the extremes; the status follows from the measured changes alone."""
    best = min(models, key=lambda k: (models[k]["bic"], k))
    m = measure(c, models[best])
    conv = _counts(c, m["start"], m["peak"], thr, +1)
    div = _counts(c, m["peak"], m["trough"], thr, -1)
    rec = _counts(c, m["trough"], m["final"], thr, +1)
    changes = {"convergence": conv, "divergence": div, "reconvergence": rec}
    return status_from(conv[1], div[1], rec[1]), best, m, changes


def at_step(x: np.ndarray, y: np.ndarray, x_at: float) -> np.ndarray:
    """y [...,n] linearly interpolated in x (log2 step, ascending) at x_at (clamped to the ends)."""
    i = int(np.clip(np.searchsorted(x, x_at, side="right") - 1, 0, len(x) - 2))
    w = float(np.clip((x_at - x[i]) / (x[i + 1] - x[i]), 0.0, 1.0))
    return (1.0 - w) * y[..., i] + w * y[..., i + 1]


def covers(steps, phase_steps) -> bool:
    """Whether a suite's steps reach its phase lines: a positive checkpoint at or before the first line
    (step 0 sits on the log axis only by convention, so it cannot place a line) and one after the last.
    MultiBERTs (0, 20k, 40k, ...) does not cover 16 / 256 / 2000; PolyPythia (0, 1, 2, 4, ...) does."""
    steps = np.asarray(steps)
    pos = steps[steps > 0]
    return (bool(phase_steps) and len(steps) >= 3 and pos.size > 0 and pos.min() <= phase_steps[0]
            and steps.max() > phase_steps[-1])


LINE_CHANGES = (("convergence", 0, 1, +1), ("divergence", 1, 2, -1), ("reconvergence", 2, 3, +1))


def line_points(steps, y: np.ndarray, phase_steps: tuple[int, ...]) -> np.ndarray:
    """y [...,T] over ascending steps -> [..., 4]: E at the three phase lines (interpolated in log2 step)
    and at the last step; LINE_CHANGES names the differences between them the phase tests use."""
    x = log_step_axis(steps)
    y = np.asarray(y, np.float64)
    return np.stack([at_step(x, y, float(np.log2(s))) for s in phase_steps[:3]] + [y[..., -1]], -1)


def line_changes(c: Curve, phase_steps: tuple[int, ...]) -> dict:
    """The three changes between the suite's phase lines (u, c, d), fixed before looking at the data:
        convergence = E(c) - E(u),  divergence = E(d) - E(c),  reconvergence = E(last step) - E(d)
    with E at a line interpolated in log2(step) between its neighbouring checkpoints. Each gets its
    paired bootstrap CI and two-sided p-value (analysis.bootstrap.wald_p) from the replicates; without
    replicates, a conservative unpaired p from the points' CIs (SE = CI width / 3.92)."""
    from seedkl_jax.analysis.bootstrap import paired_ci, t_p, wald_p
    pts = line_points(c.steps, c.y, phase_steps)
    reps = None if c.reps is None else line_points(c.steps, c.reps, phase_steps)
    se = None
    if c.lo is not None and np.isfinite(c.lo).all() and np.isfinite(c.hi).all():
        se = line_points(c.steps, (c.hi - c.lo) / 3.92, phase_steps)
    out = {}
    for name, a, b, sign in LINE_CHANGES:
        delta = float(pts[b] - pts[a])
        ci, p = (None, None), 1.0
        if reps is not None:
            ci, p = paired_ci(reps[:, b], reps[:, a]), wald_p(delta, reps[:, b] - reps[:, a])
        elif se is not None:
            p = t_p(delta, float(se[a] ** 2 + se[b] ** 2), None)
        out[name] = {"delta_e_conv": delta, "ci": list(ci), "p": p, "expected_sign": sign,
                     "counts": bool(p < 0.05 and np.sign(delta) == sign)}
    return out


def _phase_list(c: Curve, status: str, m: dict) -> list[dict]:
    st = [int(s) for s in c.steps]
    cuts = {"four_phases": [0, m["conv_knot"], m["peak"], m["trough"], m["final"]],
            "no_convergence": [0, m["peak"], m["trough"], m["final"]],
            "no_reconvergence": [0, m["conv_knot"], m["peak"], m["trough"], m["final"]],
            "no_divergence": [0, m["conv_knot"], m["final"]]}.get(status, [0, m["final"]])
    names = list(PHASES)
    if status == "no_reconvergence":
        names[3] = ("late", "no reconvergence")
    if status == "no_convergence":
        names = [PHASES[0], PHASES[2], PHASES[3]]
    out = []
    for i in range(len(cuts) - 1):
        name, label = names[i] if status != "no_phases" else ("none", "no phases")
        out.append({"name": name, "label": label, "start_step": st[cuts[i]], "end_step": st[cuts[i + 1]],
                    "delta_e_conv": float(c.y[cuts[i + 1]] - c.y[cuts[i]]),
                    "present": name not in ("late", "none")})
    return out


def detect_phases(steps, e_conv, *, ci_low=None, ci_high=None, replicates=None,
                  min_steps: int = MIN_STEPS, phase_steps: tuple[int, ...] | None = None) -> PhaseResult:
    """Phases of one size's E[conv] curve (module docstring): steps [n] checkpoint steps (any order,
    distinct), e_conv [n] (nan dropped), ci_low/ci_high [n] optional 95% bootstrap interval,
    replicates [B,n] optional bootstrap replicates drawn together for every step (paired changes).
    phase_steps: the suite's phase lines (e.g. PAPER_PHASE_STEPS); when the steps cover them the status
    comes from the changes between the lines (`line_changes`), else from the measured extremes."""
    c = prepare(steps, e_conv, ci_low, ci_high, replicates)
    r = PhaseResult(status="", message="", n_steps=int(len(c.y)), steps=[int(s) for s in c.all_steps],
                    e_conv_fit=[None] * len(c.all_steps))
    if len(c.y) < min_steps:
        r.status = "too_short"
        r.message = (f"only {len(c.y)} step(s) with a finite E[conv]; phase detection needs at least "
                     f"{max(min_steps, 5)} log-spaced checkpoints (e.g. 0,1,2,4,...)")
        return r
    r.noise_sd, r.threshold = noise_floor(c)
    if np.ptp(c.y) == 0.0:
        r.status, r.message = "no_phases", "no phases: E[conv] is constant over the sweep"
        return r
    models = fit_models(c)
    r.status, r.n_segments, m, changes = decide(c, models, r.threshold)
    r.bic = {k: f["bic"] for k, f in models.items()}
    r.changes = {k: {"delta_e_conv": d, "counts": ok} for k, (d, ok) in changes.items()}
    if phase_steps is not None and covers(c.steps, phase_steps):
        r.tested, r.phase_steps = "lines", [int(s) for s in phase_steps]
        r.changes = line_changes(c, phase_steps)
        r.status = status_from(*(r.changes[k]["counts"] for k in ("convergence", "divergence", "reconvergence")))
    fit = np.full(len(c.all_steps), np.nan)
    fit[np.flatnonzero(c.keep)] = models[r.n_segments]["fit"]
    r.e_conv_fit = [None if not np.isfinite(v) else float(v) for v in fit]
    r.measured = {k: {"step": int(c.steps[i]), "e_conv": float(c.y[i]),
                      "ci_low": None if c.lo is None else float(c.lo[i]),
                      "ci_high": None if c.hi is None else float(c.hi[i])} for k, i in m.items()}
    r.phases = _phase_list(c, r.status, m)
    if r.status in ("four_phases", "no_reconvergence", "no_divergence"):
        r.boundaries["convergence_start"] = int(c.steps[m["conv_knot"]])
    if r.status in ("four_phases", "no_reconvergence", "no_convergence"):
        r.boundaries["divergence_start"] = int(c.steps[m["peak"]])
    if r.status in ("four_phases", "no_convergence"):
        r.boundaries["reconvergence_start"] = int(c.steps[m["trough"]])
    r.message = _message(r)
    return r


def _message(r: PhaseResult) -> str:
    found = ", ".join(f"{b.replace('_', ' ')} at step {s}" for b, s in r.boundaries.items() if s is not None)
    ch = {k: f"{v['delta_e_conv']:+.3g}" for k, v in r.changes.items()}
    if r.status == "four_phases":
        lines = " / ".join(str(v) for v in (r.phase_steps or PAPER_PHASE_STEPS))
        whose = "the suite's phase lines" if r.phase_steps else "for comparison, the paper's PolyPythia lines"
        return f"four phases: {found} ({whose}: {lines})"
    if r.status == "no_convergence":
        return (f"no convergence: measured rise before the divergence {ch['convergence']} does not count "
                f"(threshold {r.threshold:.3g}, or within its CI); {found}")
    if r.status == "no_reconvergence":
        return (f"no reconvergence: {found}; measured rise after the trough {ch['reconvergence']} "
                + (f"does not clear its bootstrap test (p = {r.changes['reconvergence']['p']:.2g})" if r.tested == "lines"
                   else f"(threshold {r.threshold:.3g}, or CIs overlap)"))
    if r.status == "no_divergence":
        return f"no divergence: {found}; measured fall {ch['divergence']} does not count"
    return (f"no phases: measured convergence {ch['convergence']} (threshold {r.threshold:.3g}); "
            "no convergence followed by divergence beyond the noise")


def phases_from_summary(summary: pl.DataFrame, metric: str = "seeds", replicates: dict | None = None, *,
                        phase_steps: tuple[int, ...] | None = PAPER_PHASE_STEPS) -> dict[str, dict]:
    """detect_phases for every size, from the summary's (metric, category_kind == "all") rows: the
    content of phases.json, keyed by size. replicates: summarize's dict (paired step changes);
    phase_steps: the suite's phase lines (PolyPythia's by default; None: the suite has none)."""
    rows = summary.filter((pl.col("metric") == metric) & (pl.col("category_kind") == "all")).sort("step")
    out = {}
    for size in dict.fromkeys(rows["size"].to_list()):
        r = rows.filter(pl.col("size") == size)
        got = [(replicates or {}).get((size, int(s), metric, "all", "all")) for s in r["step"].to_list()]
        reps = np.stack(got, 1) if got and all(g is not None for g in got) else None
        out[size] = detect_phases(r["step"].to_numpy(), r["e_conv"].to_numpy(), ci_low=r["ci_low"].to_numpy(),
                                  ci_high=r["ci_high"].to_numpy(), replicates=reps,
                                  phase_steps=phase_steps).to_dict()
    return out
