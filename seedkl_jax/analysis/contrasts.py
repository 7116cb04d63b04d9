"""The curves and category contrasts the verdicts test, measured from the per-pair KLs with split replicates.

Why this file exists: "frequent tokens / function words converge more, faster and *more reliably*"
compares two categories of tokens, and the reliability half cannot be read off summary.parquet: the SD
over seed pairs of a category's mean E[conv] shrinks with the category's token count (the per-token
noise averages out), so the category with more tokens looks more reliable even when both come from one
distribution. This module measures, per (size, step), for the two categories A (claimed better) and B:

  * e_conv of A and B with the study's bootstrap replicates (analysis.bootstrap: the same draws as
    summarize for the same D documents and S seeds, so A and B are paired);
  * sd_matched: the SD over ordered seed pairs of the category's mean KL *at a matched token count*
    n_m = min(n_A, n_B). For a category with token-by-pair values X [n, U]:
        sd_matched^2 = Var_u(mean_p X[p,u]) + s_e^2 (1/n_m - 1/n)
    with s_e^2 the token-by-pair interaction variance (two-way residual mean square of X): the expected
    variance over pairs of the mean of n_m of its tokens drawn at random, i.e. repeated subsampling to
    n_m tokens done in closed form (no subsampling noise). The category with n_m tokens keeps its own
    SD; the larger one gets the token noise it would have with n_m tokens. Replicates use the same
    draws (documents reweighted, pairs among the drawn seeds weighted by their multiplicities), with
    the matching applied as the point estimate's factor (raw + extra) / raw, so that a draw with few
    distinct seeds, which shrinks every category's spread over pairs alike, leaves their ratio alone.

Every statistic comes with three replicate sets of the same draws (bootstrap.split_draws): "joint"
(seeds and documents), "docs" (documents only) and "seeds" (seeds only); findings.py combines the
spreads of the last two into a Student-t test (bootstrap.split_p). The contrast "all" (every token,
one category) carries each size's E[conv] curve for the size and phase tests.

The contrasts (fixed in advance):
  * "freq": A = the most frequent `freq_bin`, B = the rarest bin, among the bins with >= min_tokens
    tokens of that size;
  * "function": the paper's Penn groups when the meta has Penn tags (a `paper_pos` column, or `xpos`
    mapped with data.annotate.paper_pos, the one definition of the paper's PoS figure):
        function = FUNCTION_PAPER_POS = IN, DT, MD, PRP
        content  = CONTENT_PAPER_POS  = JJ, Nouns (NN NNS NNP NNPS), Verbs (VB VBG VBN VBD VBZ)
    (the paper's figure's seven groups, split as its text does; VBP and every other tag are in
    neither). Fallback, stated in the evidence, when there are no Penn tags: the UPOS groups of
    data.annotate.pos_group (function = ADP AUX CCONJ DET PART PRON SCONJ; content = NOUN PROPN VERB
    ADJ ADV).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from seedkl_jax.analysis import bootstrap as bs
from seedkl_jax.analysis.aggregate import GroupResult, category_order, doc_index  # the summary's document numbering
from seedkl_jax.data.annotate import CONTENT_UPOS, FUNCTION_UPOS, paper_pos

FUNCTION_PAPER_POS = ("IN", "DT", "MD", "PRP")
CONTENT_PAPER_POS = ("JJ", "Nouns", "Verbs")
MIN_TOKENS = 20


@dataclasses.dataclass
class Contrast:
    """One size's categories over its steps (K categories, T steps, B replicates; for the two-category
    contrasts index 0 = A, 1 = B). Replicates come in three sets of the same draws (bootstrap.split_draws):
    "joint" (seeds and documents, the CIs), "docs" (documents only) and "seeds" (seeds only), whose
    spreads give the two parts of the variance the tests combine (bootstrap.split_p)."""
    size: str
    labels: tuple
    grouping: str                  # how the categories were formed (e.g. "Penn groups (paper_pos)")
    n: tuple                       # tokens per category
    steps: list
    S: int
    D: int
    e_conv: np.ndarray             # [K,T]
    e_reps: dict                   # set -> [B,K,T]
    sd: np.ndarray | None = None   # [K,T] sd_matched (two-category contrasts)
    sd_reps: dict | None = None    # set -> [B,K,T]

    @property
    def a(self) -> str:
        return self.labels[0]

    @property
    def b(self) -> str:
        return self.labels[1]


def _freq_codes(meta: pl.DataFrame, min_tokens: int):
    if "freq_bin" not in meta.columns:
        return None
    s = meta["freq_bin"].cast(pl.Utf8)
    vc = {k: v for k, v in zip(*s.drop_nulls().value_counts().to_dict(as_series=False).values())}
    ok = category_order("freq_bin", [k for k, v in vc.items() if v >= min_tokens])
    if len(ok) < 2:
        return None
    a, b = ok[-1], ok[0]
    code = np.array([0 if v == a else 1 if v == b else -1 for v in s.to_list()], np.int64)
    return code, a, b, "freq_bin (most frequent vs rarest bin)"


def _function_codes(meta: pl.DataFrame, min_tokens: int):
    """Codes 0 function / 1 content / -1 neither: Penn groups when tags exist, else the UPOS fallback."""
    tags = None
    if "paper_pos" in meta.columns and meta["paper_pos"].drop_nulls().len():
        tags, how = meta["paper_pos"].cast(pl.Utf8).to_list(), "Penn groups (paper_pos)"
    elif "xpos" in meta.columns and meta["xpos"].drop_nulls().len():
        tags, how = [paper_pos(x) for x in meta["xpos"].cast(pl.Utf8).to_list()], "Penn groups (xpos)"
    if tags is not None:
        code = np.array([0 if t in FUNCTION_PAPER_POS else 1 if t in CONTENT_PAPER_POS else -1 for t in tags])
    elif "upos" in meta.columns and meta["upos"].drop_nulls().len():
        u = meta["upos"].cast(pl.Utf8).to_list()
        code = np.array([0 if t in FUNCTION_UPOS else 1 if t in CONTENT_UPOS else -1 for t in u])
        how = "UPOS groups (fallback: no Penn tags)"
    elif "pos_group" in meta.columns:
        g = meta["pos_group"].cast(pl.Utf8).to_list()
        code = np.array([0 if t == "function" else 1 if t == "content" else -1 for t in g])
        how = "UPOS groups (pos_group; fallback: no Penn tags)"
    else:
        return None
    if min((code == 0).sum(), (code == 1).sum()) < min_tokens:
        return None
    return code.astype(np.int64), "function", "content", how


def residual_variance(X: np.ndarray) -> float:
    """Token-by-unit interaction variance of X [n,U]: the two-way residual mean square."""
    n, U = X.shape
    if n < 2 or U < 2:
        return 0.0
    r = X - X.mean(1, keepdims=True) - X.mean(0, keepdims=True) + X.mean()
    return float((r ** 2).sum() / ((n - 1) * (U - 1)))


def _weighted_var(m: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Frequency-weighted variance (ddof 1) of m [B,U] with weights v [B,U] -> [B] (nan below 2 units)."""
    tot = v.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = (v * m).sum(1) / tot
        return np.where(tot > 1, (v * (m - mu[:, None]) ** 2).sum(1) / (tot - 1), np.nan)


def _group_stats(vals, doc, D, code, K: int, sets: dict, n_m: int | None):
    """One (size, step): e_conv [K], its replicates {set: [B,K]}, and with n_m the matched SD [K] and its
    replicates {set: [B,K]} (module docstring)."""
    counts, sums = bs.category_sums(vals, doc, D, code, K)
    n = counts.sum(0)
    e = -(sums.sum(0) / n[:, None]).mean(1)
    e_reps = {k: -bs.replicates(counts, sums, d.W, d.unit_weights(True)) for k, d in sets.items()}
    if n_m is None:
        return e, e_reps, None, None
    sd = np.zeros(K)
    sd_reps = {k: np.zeros((d.W.shape[0], K)) for k, d in sets.items()}
    for c in range(K):
        X = vals[code == c]
        raw = X.mean(0).var(ddof=1)
        extra = residual_variance(X) * (1.0 / n_m - 1.0 / len(X))
        sd[c] = np.sqrt(max(raw + extra, 0.0))
        # replicates: the same matching as a factor (raw + extra) / raw, so a draw with few distinct
        # seeds, which shrinks every category's spread over pairs alike, leaves the ratio of two alone
        kappa = (raw + extra) / raw if raw > 0 else 1.0
        for k, d in sets.items():
            with np.errstate(invalid="ignore", divide="ignore"):
                m = (d.W @ sums[:, c, :]) / (d.W @ counts[:, c])[:, None]          # [B,U]
            sd_reps[k][:, c] = np.sqrt(np.maximum(kappa * _weighted_var(m, d.unit_weights(True)), 0.0))
    return e, e_reps, sd, sd_reps


def _stack(per_step: list, i: int):
    first = per_step[0][i]
    if first is None:
        return None
    if isinstance(first, dict):
        return {k: np.stack([p[i][k] for p in per_step], -1) for k in first}
    return np.stack([p[i] for p in per_step], -1)


def contrasts(groups: list[GroupResult], meta: pl.DataFrame, n_boot: int = 1000, seed: int = 0, *,
              min_tokens: int = MIN_TOKENS) -> dict[str, dict[str, Contrast]]:
    """{"all" | "freq" | "function": {size: Contrast}} (module docstring; "all" is every token, one
    category, for the size and phase tests); a size lacking the categories (no freq_bin / PoS column,
    or fewer than min_tokens tokens in A or B) is left out of that contrast."""
    out: dict[str, dict[str, Contrast]] = {"all": {}, "freq": {}, "function": {}}
    for size in dict.fromkeys(g.size for g in groups):
        gs = sorted((g for g in groups if g.size == size), key=lambda g: int(g.step))
        P, S = np.asarray(gs[0].arrays["kl"]).shape[:2]
        m = (meta.filter(pl.col("size") == size) if "size" in meta.columns else meta).sort("position")
        if m.height != P:
            continue                                   # summarize raises the precise error for this
        doc, D = doc_index(m)
        joint = bs.draws(D, S, n_boot, seed)
        docs, seeds = bs.split_draws(joint)
        sets = {"joint": joint, "docs": docs, "seeds": seeds}
        vals = [bs.ordered_pairs(g.arrays["kl"]) for g in gs]
        everything = (np.zeros(P, np.int64), "all", None, "every token")
        for name, pick in (("all", lambda *_: everything), ("freq", _freq_codes), ("function", _function_codes)):
            got = pick(m, min_tokens)
            if got is None:
                continue
            code, a, b, how = got
            labels = (a,) if b is None else (a, b)
            n = tuple(int((code == k).sum()) for k in range(len(labels)))
            n_m = None if b is None else min(n)
            per = [_group_stats(v, doc, D, code, len(labels), sets, n_m) for v in vals]
            out[name][size] = Contrast(size, labels, how, n, [int(g.step) for g in gs], int(S), int(D),
                                       _stack(per, 0), _stack(per, 1), _stack(per, 2), _stack(per, 3))
    return out
