"""Which of the paper's findings does this suite reproduce? One table for the demo, the study and
`seedkl analyze`, each row tested as the paper states it by a rule written down before any data.

Each finding is {"id", "finding", "verdict", "evidence", "tests"}: verdict "reproduced" / "not
reproduced" / "inconclusive"; evidence quotes the numbers; tests lists the hypothesis tests behind the
verdict (estimate, 95% CI, p, Holm-adjusted p). docs/verdicts.md names every rule and its calibration.

Uncertainty. Every statistic comes with its bootstrap replicates (analysis.bootstrap: seeds and
documents resampled, the same draws for every group, so differences are paired), computed by
analysis.contrasts from the per-pair KLs in three sets of the same draws: joint, documents only, seeds
only. Choices made from the data (a peak, a trough, a minimum) are made again inside each replicate.
A test's p-value is two-sided, delta / SE against Student's t: the document part and the seed part of
the variance are each scaled by n/(n-1) and combined with Satterthwaite's degrees of freedom
(bootstrap.split_p), because a bootstrap over 5 seeds and 10 documents under-covers (with a normal
reference, single simulated null tests came out significant at 95% up to 18% of the time, see
docs/verdicts.md); 5 seeds alone give 4 degrees of freedom.
The 95% CIs quoted are estimate +- t_0.975(df) SE (not adjusted). Without contrasts (a summary read
back from disk) the size and phase tests fall back to summarize's joint replicates and a normal
reference, and the token claims cannot be tested.

Family. All tests of the table form one family, adjusted with Holm (bootstrap.holm): a test is
significant when its Holm-adjusted p < ALPHA = 0.05, so the chance that *any* test of the table is
falsely significant is <= 5%. A test "agrees" when significant in the paper's direction and
"contradicts" when significant against it.

Rules (A = the category the paper says is better; sizes smallest first):
  phases    Only where the suite has phase lines (phase_steps, PolyPythia's 16 / 256 / 2000) and a size's
            steps cover them (a checkpoint at or before the first line, one after the last), per size
            three tests between the lines (analysis.phases.line_changes): convergence E(l1)-E(l0) > 0,
            divergence E(l2)-E(l1) < 0, reconvergence E(last)-E(l2) > 0. Uniform phase, where the size
            has checkpoints before l0: at each of them the 95% upper bound of the KL between seeds, and
            of the KL to uniform when the suite has it, is <= NEAR_ZERO (10%) of its maximum over the
            run (a bound, not a test: it can only withhold "reproduced").
            reproduced: every covered size's convergence and divergence agree, the largest covered
            size's reconvergence agrees (the smallest need not: see `size`), and the uniform phase holds
            wherever it is tested. not reproduced: some covered size's convergence or divergence
            contradicts, or the largest's reconvergence does. Else inconclusive; phase_steps=None or no
            covered size -> inconclusive, saying the suite's steps do not cover the paper's phases.
            Boundaries located by the BIC fits (analysis.phases) are reported beside the lines.
  size      "Larger models reconverge; the smallest ones never really do": two tests on the recovered
            fraction (analysis.claims.recovery; peak and trough chosen inside every replicate):
            trend = slope of the fraction over size rank (> 0), small = the smallest size's fraction
            against SMALL_MAX = 0.5 (below). reproduced: both agree. not reproduced: either
            contradicts (the trend falls, or the smallest size recovers significantly more than half
            of its divergence). Else inconclusive; fewer than two sizes -> inconclusive.
  freq_* / function_*  A vs B from analysis.contrasts (freq: the most frequent vs the rarest bin with
            >= contrasts.MIN_TOKENS (20) tokens; function: the paper's Penn groups function = IN DT MD PRP vs content
            = JJ Nouns Verbs, UPOS groups only when there are no Penn tags, as the evidence says). One
            test per claim on the inverse-variance weighted mean over sizes of the per-size statistic
            (per-size values and weights in the evidence):  more = E_A - E_B at the size's last step;  faster = x*_B - x*_A, the reach
            steps interpolated in log2(step) (claims.reach_logstep);  reliable = mean over steps of
            log(sd_B / sd_A), SDs over seed pairs at a matched token count (claims.reliability).
            reproduced: agrees; not reproduced: contradicts; else inconclusive.
Rows whose tests cannot be run (no replicates, no categories, too few sizes) are inconclusive and say
why.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from seedkl_jax.analysis import claims
from seedkl_jax.analysis import phases as ph
from seedkl_jax.analysis.aggregate import size_order
from seedkl_jax.analysis.bootstrap import holm, robust_se, split_p, wald_p
from seedkl_jax.analysis.contrasts import Contrast
from seedkl_jax.analysis.phases import PAPER_PHASE_STEPS

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
ALPHA = 0.05
SMALL_MAX = 0.5
NEAR_ZERO = 0.1
FINDINGS = {
    "phases": "Four phases: near-uniform, sharp convergence, sharp divergence, slow reconvergence",
    "size": "Larger models reconverge in the late phase; the smallest ones never really do",
    "freq_more": "Frequent tokens converge more than rare tokens (last step)",
    "freq_faster": "Frequent tokens converge faster than rare tokens (reach step)",
    "freq_reliable": "Frequent tokens converge more reliably than rare tokens (SD over seed pairs, matched tokens)",
    "function_more": "Function words converge more than content words (last step)",
    "function_faster": "Function words converge faster than content words (reach step)",
    "function_reliable": "Function words converge more reliably than content words (SD over seed pairs, "
                         "matched tokens)",
}


@dataclasses.dataclass
class Test:
    """One hypothesis test of the family: estimate vs null, expected sign of (estimate - null)."""
    name: str
    estimate: float
    null: float
    expected: int
    p: float
    ci: tuple
    p_holm: float = 1.0

    @property
    def sign(self) -> int:
        """+1 agrees with the paper, -1 contradicts it, 0 not significant (after Holm)."""
        if not self.p_holm < ALPHA or not np.isfinite(self.estimate):
            return 0
        return self.expected * int(np.sign(self.estimate - self.null))

    def text(self, unit: str = "", p: bool = True) -> str:
        ci = "" if self.ci[0] is None else f" [{self.ci[0]:.3g}, {self.ci[1]:.3g}]"
        return f"{self.estimate:.3g}{unit}{ci}" + (f", p={self.p:.2g}, Holm p={self.p_holm:.2g}" if p else "")

    def to_dict(self) -> dict:
        return {"name": self.name, "estimate": _num(self.estimate), "null": self.null,
                "expected_sign": self.expected, "ci": [_num(c) for c in self.ci], "p": self.p,
                "p_holm": self.p_holm, "agrees": self.sign == 1, "contradicts": self.sign == -1}


def _num(v):
    return None if v is None or not np.isfinite(v) else float(v)


def make_test(name: str, estimate: float, reps: dict | None, design: tuple[int, int] | None = None,
              null: float = 0.0, expected: int = 1) -> Test:
    """A test from a point estimate and its replicates {"joint": [B], optionally "docs", "seeds": [B]}:
    p from bootstrap.split_p (Student t, Satterthwaite df) when the split sets and the design (S seeds,
    D documents) are given, else the normal reference (bootstrap.wald_p); the 95% CI is the matching
    estimate +- t_0.975(df) SE (unadjusted). reps None: p = 1, never significant."""
    if reps is None or not np.isfinite(estimate):
        return Test(name, float(estimate), null, expected, 1.0, (None, None))
    if design is not None and "docs" in reps:
        p, df, se = split_p(estimate - null, reps["docs"], reps["seeds"], design[1], design[0])
    else:
        p, df, se = wald_p(estimate, reps["joint"], null), None, robust_se(reps["joint"])
    from scipy import stats
    q = stats.norm.ppf(0.975) if df is None or not np.isfinite(df) else stats.t.ppf(0.975, max(df, 1.0))
    ci = (float(estimate - q * se), float(estimate + q * se)) if np.isfinite(se) else (None, None)
    return Test(name, float(estimate), null, expected, p, ci)


def _curve(contrasts: dict, summary, size, replicates):
    """(steps, y [T], reps {set: [B,T]} or None, design or None) of a size's all-token E[conv]."""
    c = contrasts.get("all", {}).get(size)
    if c is not None:
        return c.steps, c.e_conv[0], {k: v[:, 0] for k, v in c.e_reps.items()}, (c.S, c.D)
    cv = claims.curve(summary, size)
    R = claims.curve_reps(replicates, size, cv["step"].to_list())
    return cv["step"].to_list(), cv["e_conv"].to_numpy(), None if R is None else {"joint": R}, None


# ----------------------------------------------------------------------------------------- phases
def _uniform_ok(summary: pl.DataFrame, size: str, first_line: int) -> tuple[bool | None, str]:
    """Uniform-phase bound at the checkpoints before the first line (None: no such checkpoint)."""
    notes, ok = [], None
    for metric, what in (("seeds", "KL between seeds"), ("uniform", "KL to uniform")):
        r = summary.filter((pl.col("size") == size) & (pl.col("metric") == metric)
                           & (pl.col("category_kind") == "all")).sort("step")
        early = r.filter(pl.col("step") < first_line)
        if not early.height or r["mean_kl"].max() is None:
            continue
        top = float(r["mean_kl"].max())
        hi = (-early["ci_low"]).fill_null(early["mean_kl"]).max()     # 95% upper bound of the KL
        good = bool(hi <= NEAR_ZERO * top)
        ok = good if ok is None else (ok and good)
        notes.append(f"{what} <= {hi:.3g} before step {first_line} ({hi / top:.0%} of its max {top:.3g})"
                     if top > 0 else f"{what} is 0")
    return ok, "; ".join(notes)


def _phases(summary, phases: dict, sizes: list[str], phase_steps, contrasts, replicates):
    if phase_steps is None:
        return [], "the suite has no phase lines (phase_steps=None): its steps do not cover the paper's phases", None
    curves = {s: _curve(contrasts, summary, s, replicates) for s in sizes}
    covered = [s for s in sizes if ph.covers(curves[s][0], phase_steps)]
    lines = "/".join(str(v) for v in phase_steps)
    if not covered:
        return [], (f"the suite's steps do not cover the paper's phases (lines {lines}: needs a checkpoint at "
                    f"or before {phase_steps[0]} and one after {phase_steps[-1]})"), None
    tests, uniform = {}, {}
    for s in covered:
        steps, y, reps, design = curves[s]
        py = ph.line_points(steps, y, phase_steps)
        pr = None if reps is None else {k: ph.line_points(steps, v, phase_steps) for k, v in reps.items()}
        for name, a, b, exp in ph.LINE_CHANGES:
            r = None if pr is None else {k: v[:, b] - v[:, a] for k, v in pr.items()}
            tests[(s, name)] = make_test(f"{s} {name}", float(py[b] - py[a]), r, design, expected=exp)
        uniform[s] = _uniform_ok(summary, s, phase_steps[0])

    def decide() -> tuple[str, str]:
        parts = []
        for s in covered:
            b = (phases.get(s) or {}).get("boundaries", {})
            bs = "/".join("–" if b.get(k) is None else str(b[k])
                          for k in ("convergence_start", "divergence_start", "reconvergence_start"))
            ch = ", ".join(f"{n} {tests[(s, n)].text()}" for n in ("convergence", "divergence", "reconvergence"))
            u = uniform[s][1] or f"no checkpoint before step {phase_steps[0]}: uniform phase not tested"
            parts.append(f"{s}: {ch}; {u}; BIC boundaries {bs} vs lines {lines}")
        sg = {k: t.sign for k, t in tests.items()}
        large = covered[-1]
        agree = (all(sg[(s, "convergence")] == 1 and sg[(s, "divergence")] == 1 for s in covered)
                 and sg[(large, "reconvergence")] == 1 and all(u[0] is not False for u in uniform.values()))
        contra = (any(sg[(s, n)] == -1 for s in covered for n in ("convergence", "divergence"))
                  or sg[(large, "reconvergence")] == -1)
        v = NOT_REPRODUCED if contra else REPRODUCED if agree else INCONCLUSIVE
        return v, "; ".join(parts)
    return list(tests.values()), None, decide


# ----------------------------------------------------------------------------------------- size
def _size(summary, sizes: list[str], contrasts, replicates):
    every = [(s, _curve(contrasts, summary, s, replicates)) for s in sizes]
    curves = [(s, c) for s, c in every if len(c[0]) >= 3]
    if len(curves) < 2:  # a recovered fraction needs a peak and a later trough: >= 3 steps per size
        have = ", ".join(f"{s}: {len(c[0])}" for s, c in every) or "none"
        return [], (f"needs at least two sizes with >= 3 steps each (a peak and a later trough per size); "
                    f"steps per size here: {have}"), None
    if any(c[2] is None for _, c in curves):
        return [], "no bootstrap replicates, so no test", None
    if len({len(c[1]) for _, c in curves}) != 1:
        return [], "sizes have different numbers of steps", None
    design = curves[0][1][3]
    f, peak, trough = claims.recovered_fraction(np.stack([c[1] for _, c in curves]))      # [k]
    F = {k: claims.recovered_fraction(np.stack([c[2][k] for _, c in curves], -2))[0] for k in curves[0][1][2]}
    trend = make_test("size trend", float(claims.trend(f)), {k: claims.trend(v) for k, v in F.items()}, design)
    small = make_test(f"{curves[0][0]} fraction", float(f[0]), {k: v[:, 0] for k, v in F.items()}, design,
                      null=SMALL_MAX, expected=-1)

    def decide():
        parts = []
        for i, (s, c) in enumerate(curves):
            ci = make_test(s, float(f[i]), {k: v[:, i] for k, v in F.items()}, design).ci
            frac = ("n/a (no divergence)" if np.isnan(f[i]) else f"{f[i]:.0%}" if ci[0] is None
                    else f"{f[i]:.0%} [{ci[0]:.0%}, {ci[1]:.0%}]")
            parts.append(f"{s}: recovered {frac} of its divergence (peak step {c[0][peak[i]]}, "
                         f"trough {c[0][trough[i]]}, final {c[0][-1]})")
        parts.append(f"slope over size rank {trend.text()}")
        parts.append(f"smallest ({curves[0][0]}) vs {SMALL_MAX:.0%}: {small.text()}")
        contra = trend.sign == -1 or small.sign == -1
        v = NOT_REPRODUCED if contra else REPRODUCED if (trend.sign == 1 and small.sign == 1) else INCONCLUSIVE
        return v, "; ".join(parts)
    return [trend, small], None, decide


# ----------------------------------------------------------------------------------------- categories
def _per_size(c: Contrast, what: str) -> tuple[float, dict, str]:
    """(estimate, replicates {set: [B]}, unit) of one size's statistic `what` (module docstring)."""
    if what == "more":
        return (float(c.e_conv[0, -1] - c.e_conv[1, -1]), {k: r[:, 0, -1] - r[:, 1, -1] for k, r in c.e_reps.items()},
                " nats")
    if what == "faster":
        x = claims.reach_logstep(c.steps, c.e_conv)
        xr = {k: claims.reach_logstep(c.steps, r) for k, r in c.e_reps.items()}
        return float(x[1] - x[0]), {k: r[:, 1] - r[:, 0] for k, r in xr.items()}, " log2 steps"
    return (float(claims.reliability(c.sd[0], c.sd[1])),
            {k: claims.reliability(r[:, 0], r[:, 1]) for k, r in c.sd_reps.items()}, "")


def _weights(per: list[Test]) -> list[float]:
    """Inverse-variance weights of the per-size estimates (SE from their CIs); equal when any is unknown."""
    se = [(t.ci[1] - t.ci[0]) if t.ci[0] is not None else np.nan for t in per]
    if not all(np.isfinite(x) and x > 0 for x in se):
        return [1.0 / len(per)] * len(per)
    inv = [1.0 / x ** 2 for x in se]
    return [v / sum(inv) for v in inv]


def _category(cid: str, per: dict[str, Contrast], sizes: list[str], what: str):
    got = [per[s] for s in sizes if s in per]
    if not got:
        return [], "no sizes with both categories (>= min_tokens tokens each), or no per-pair KLs", None
    vals = [_per_size(c, what) for c in got]
    unit = vals[0][2]
    per = [make_test(c.size, e, r, (c.S, c.D)) for c, (e, r, _) in zip(got, vals)]
    w = _weights(per)
    est = float(sum(wi * v[0] for wi, v in zip(w, vals)))
    reps = {k: sum(wi * v[1][k] for wi, v in zip(w, vals)) for k in vals[0][1]}
    t = make_test(f"{cid} (weighted mean over sizes)", est, reps, (got[0].S, got[0].D))

    def decide():
        c0 = got[0]
        parts = [f"{c0.a} vs {c0.b}, {c0.grouping}"]
        for c, pt, wi in zip(got, per, w):
            parts.append(f"{c.size} (n={c.n[0]} vs {c.n[1]}, weight {wi:.2f}): {pt.text(unit, p=False)}")
        parts.append(f"weighted mean over sizes {t.text(unit)}")
        v = {1: REPRODUCED, -1: NOT_REPRODUCED, 0: INCONCLUSIVE}[t.sign]
        return v, "; ".join(parts)
    return [t], None, decide


def findings(summary: pl.DataFrame, phases: dict, *, sizes: list[str] | None = None,
             replicates: dict | None = None, contrasts: dict | None = None,
             phase_steps: tuple[int, ...] | None = PAPER_PHASE_STEPS) -> list[dict]:
    """The paper's findings (module docstring), in the order of FINDINGS.

    summary: analysis.aggregate.summarize's frame; phases: {size: detect_phases dict} (phases.json,
    from phases_from_summary with the same phase_steps); sizes: smallest first (default
    aggregate.size_order); replicates: summarize's bootstrap replicates; contrasts: analysis.contrasts
    .contrasts(groups, meta, n_boot) with the same n_boot; phase_steps: the suite's phase lines (None:
    the suite has none). The categories' minimum token count is applied when the contrasts are built.
    """
    sizes = list(sizes) if sizes is not None else size_order(summary["size"].to_list())
    contrasts = contrasts or {}
    built = {"phases": _phases(summary, phases, sizes, phase_steps, contrasts, replicates),
             "size": _size(summary, sizes, contrasts, replicates)}
    for cid in FINDINGS:
        if cid.startswith(("freq_", "function_")):
            kind, what = cid.split("_")
            built[cid] = _category(cid, contrasts.get(kind, {}), sizes, what)
    family = [t for tests, _, _ in built.values() for t in tests]
    for t, p in zip(family, holm([t.p for t in family])):
        t.p_holm = float(p)
    out = []
    for cid, (tests, why, decide) in built.items():
        verdict, ev = (INCONCLUSIVE, why) if decide is None else decide()
        if decide is not None:
            ev += f" (Holm over the table's {len(family)} tests)"
        out.append({"id": cid, "finding": FINDINGS[cid], "verdict": verdict, "evidence": ev,
                    "tests": [t.to_dict() for t in tests]})
    return out
