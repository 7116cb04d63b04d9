"""The uncertainty scheme: a bootstrap that resamples **seeds** and documents, with paired draws.

Why this file exists: the S seeds are the independent units of a seed study (each is one training
run); the S(S-1) ordered pairs are not (pairs (1,3) and (1,5) share seed 1). Resampling pairs as if
independent understates the seed part of the variance, so every interval of the study comes from
one scheme, kept here:

  * each replicate b draws the D documents with replacement (multiplicities W[b,d]) and,
    independently, the S seeds with replacement (multiplicities V[b,s]);
  * a per-seed metric (KL to uniform / unigram, surprisal) weights seed s by V[b,s]; the KL
    between seeds weights the ordered pair (a,b), a != b, by V[b,a]·V[b,b'] -- the pairs among the
    drawn seeds, never a seed with itself (its KL is 0 by definition, not a measurement);
  * the replicate statistic is the token-weighted mean
        sum_d W_d sum_u w_u K[d,c,u] / (sum_d W_d n[d,c] · sum_u w_u)
    with K[d,c,u] the sum of unit u's values over the tokens of document d in category c and n[d,c]
    their count, so 1000 replicates cost a few small matrix products;
  * a replicate that draws a single distinct seed has no pair: it is nan for the KL between seeds
    and left out of that percentile (S=3: 1 in 9 replicates; S=5: 1 in 125). With S = 2 the seeds
    cannot be resampled (one pair), so only documents vary; with one document only seeds vary.

Draws depend only on (D, S, n_boot, seed): every group, metric and category of a study sees the
*same* replicates, so the replicate-wise difference of two estimates (two categories, two steps,
two sizes sharing seed labels and text) is a paired bootstrap of their difference
(`paired_ci`). Percentile intervals, 95%.
"""
from __future__ import annotations

import dataclasses

import numpy as np

SCHEME = ("95% percentile bootstrap resampling seeds (pairs among the drawn seeds, never a seed with "
          "itself) and, independently, documents; comparisons use the paired difference of replicates")


@dataclasses.dataclass(frozen=True)
class Draws:
    """W [B,D] document multiplicities, V [B,S] seed multiplicities."""
    W: np.ndarray
    V: np.ndarray

    def unit_weights(self, pairs: bool) -> np.ndarray:
        """[B,U] weights of the units: ordered pairs a != b (pairs=True, U=S(S-1)) or seeds (U=S)."""
        if not pairs:
            return self.V
        S = self.V.shape[1]
        a, b = np.nonzero(~np.eye(S, dtype=bool))
        return self.V[:, a] * self.V[:, b]


def draws(D: int, S: int, n_boot: int, seed: int = 0) -> Draws:
    """The study's replicates for D documents and S seeds (see module docstring)."""
    rng = np.random.default_rng(seed)
    W = rng.multinomial(D, np.full(D, 1.0 / D), size=n_boot).astype(np.float64)
    V = rng.multinomial(S, np.full(S, 1.0 / S), size=n_boot).astype(np.float64)
    if S == 2:
        V = np.ones_like(V)
    return Draws(W, V)


def ordered_pairs(kl: np.ndarray) -> np.ndarray:
    """kl [P,S,S] -> [P, S(S-1)] the ordered pairs a != b in `Draws.unit_weights` order (float64)."""
    S = kl.shape[1]
    a, b = np.nonzero(~np.eye(S, dtype=bool))
    return np.asarray(kl, np.float64)[:, a, b]


def category_sums(vals: np.ndarray, doc: np.ndarray, D: int, codes: np.ndarray, C: int):
    """vals [P,U], doc [P] in 0..D-1, codes [P] in -1..C-1 (-1 skipped) -> counts [D,C], sums [D,C,U]."""
    ok = codes >= 0
    v, flat = vals[ok], doc[ok] * C + codes[ok]
    counts = np.bincount(flat, minlength=D * C).reshape(D, C).astype(np.float64)
    sums = np.stack([np.bincount(flat, weights=v[:, u], minlength=D * C) for u in range(vals.shape[1])], -1)
    return counts, sums.reshape(D, C, vals.shape[1])


def replicates(counts: np.ndarray, sums: np.ndarray, W: np.ndarray, Vu: np.ndarray) -> np.ndarray:
    """[B,C] replicate means (nan where a replicate drew no token of c, or no unit)."""
    D, C, U = sums.shape
    with np.errstate(invalid="ignore", divide="ignore"):
        num = ((W @ sums.reshape(D, C * U)).reshape(-1, C, U) * Vu[:, None, :]).sum(-1)
        den = (W @ counts) * Vu.sum(1, keepdims=True)
        return num / den


def percentile_ci(reps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2.5 / 97.5 percentiles per column of reps [B,C], ignoring nan draws (nan when all are)."""
    reps = np.asarray(reps, np.float64)
    if reps.ndim == 1:
        reps = reps[:, None]
    lo, hi = np.full(reps.shape[1], np.nan), np.full(reps.shape[1], np.nan)
    full = np.isfinite(reps).all(0)
    if full.any():                                   # fast path: np.nanpercentile is slow per column
        lo[full], hi[full] = np.percentile(reps[:, full], [2.5, 97.5], axis=0)
    for c in np.flatnonzero(~full & np.isfinite(reps).any(0)):
        lo[c], hi[c] = np.nanpercentile(reps[:, c], [2.5, 97.5])
    return lo, hi


def paired_ci(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """95% CI of a - b from replicates drawn together (same Draws); nan when none is finite."""
    lo, hi = percentile_ci(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    return float(lo[0]), float(hi[0])


def robust_se(reps: np.ndarray) -> float:
    """Bootstrap standard error of a statistic from its replicates [B]: half the 15.9-84.1 percentile
    range (the SD for a normal spread, and not blown up by the odd replicate whose ratio explodes);
    nan replicates (a draw with one seed) are left out; nan when fewer than 10 are finite."""
    r = np.asarray(reps, np.float64).ravel()
    r = r[np.isfinite(r)]
    if r.size < 10:
        return float("nan")
    lo, hi = np.percentile(r, [15.865, 84.135])
    return float((hi - lo) / 2.0)


def wald_p(estimate: float, reps: np.ndarray, null: float = 0.0) -> float:
    """Two-sided p-value of `estimate` against `null` with the bootstrap standard error (robust_se):
    2 Phi(-|estimate - null| / se). Continuous, so it stays usable below 1/n_boot, which a family
    adjusted by Holm needs; 1.0 when the standard error is unknown, 0.0 for a nonzero estimate with
    se == 0 (every replicate equal)."""
    return t_p(estimate - null, robust_se(reps) ** 2, None)


def t_p(delta: float, var: float, df: float | None) -> float:
    """Two-sided p of delta / sqrt(var) against Student's t with df degrees of freedom (normal when
    df is None); 1.0 when var is unknown, 0.0 for a nonzero delta with var == 0."""
    from scipy import stats
    if not (np.isfinite(var) and np.isfinite(delta)):
        return 1.0
    if var <= 0.0:
        return 0.0 if delta != 0.0 else 1.0
    z = abs(float(delta)) / float(np.sqrt(var))
    return float(2.0 * (stats.norm.sf(z) if df is None else stats.t.sf(z, max(float(df), 1.0))))


def split_p(delta: float, reps_docs: np.ndarray, reps_seeds: np.ndarray, D: int, S: int
            ) -> tuple[float, float, float]:
    """(p, df, se) for a statistic whose uncertainty has a document part and a seed part, from replicates
    that resample only documents and only seeds (`split_draws`). With S seeds (or D documents) a
    bootstrap variance is (n-1)/n of the unbiased one and is itself estimated from n units, so each part
    is scaled by n/(n-1) and the two are combined by Satterthwaite:
        v = v_D D/(D-1) + v_S S/(S-1),  df = v^2 / ((v_D D/(D-1))^2/(D-1) + (v_S S/(S-1))^2/(S-1))
    and delta / sqrt(v) is referred to Student's t with df (5 seeds alone: 4 degrees of freedom).
    A part that cannot vary (one document, or S = 2 where seeds are not resampled) contributes 0."""
    parts = []
    for reps, n in ((reps_docs, D), (reps_seeds, S)):
        se = robust_se(reps) if n > 1 else 0.0
        if not np.isfinite(se):
            return 1.0, float("nan"), float("nan")
        parts.append((se ** 2 * n / (n - 1) if n > 1 else 0.0, max(n - 1, 1)))
    v = sum(a for a, _ in parts)
    den = sum(a ** 2 / k for a, k in parts)
    df = v ** 2 / den if den > 0 else float("inf")
    return t_p(delta, v, df), float(df), float(np.sqrt(v))


def split_draws(d: Draws) -> tuple[Draws, Draws]:
    """(documents only, seeds only): the same replicates with the other factor held at one each."""
    return Draws(d.W, np.ones_like(d.V)), Draws(np.ones_like(d.W), d.V)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): the family-wise error of calling every
    adjusted p < alpha significant is <= alpha for any dependence between the tests."""
    p = np.asarray(pvalues, np.float64)
    m = len(p)
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    adj = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out.tolist()
