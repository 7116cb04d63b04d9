"""The paper's appendix regression: what predicts the KL between seeds, per training step.

Per step, one ordinary least-squares fit pooling every size, ordered seed pair and target token:

    KL_{size,pair,token} ~ 1 + log10(count of the target) + PoS(target) + PoS(context token)
                           [+ word position(target)] + size

with one-hot PoS (Penn `xpos` when the meta has it, else `upos`; untagged tokens form the level
"untagged"), one-hot word position when the meta has `word_position` (begin / inside, and "none" for
eos and whitespace-only targets; not in the paper's design) and one-hot size. The paper's design has no reference level (rank-deficient); here every
factor drops one *named* reference level (PoS: its most frequent level; size: the smallest), so the
design is full rank and every coefficient is a contrast with that reference. The log-frequency
coefficient does not depend on that choice (any full-rank coding of the same factors spans the same
column space). log10 of a zero count is taken as log10(1) = 0.

All pairs of a token share its design row, so the fit equals the one on per-token pair means with
equal weights; it is computed from per-document sufficient statistics X'X and X'y (per pair), which
also give the CIs: the seed/document bootstrap of analysis.bootstrap (at most REG_BOOT replicates),
each replicate solving the weighted normal equations (a level a replicate never draws gets nan).

A level that coincides with earlier columns on the given text (rank would drop) is "aliased": its
row has reference "aliased" and no coefficient (`independent_columns`).

Output rows (regression.parquet): step, term, reference, coef, ci_low, ci_high, n_rows (= sizes x
ordered pairs x tokens in the fit). The figure plots -coef ("as convergence", like the paper).
"""
from __future__ import annotations

import numpy as np
import polars as pl

from seedkl_jax.analysis import bootstrap as bs
from seedkl_jax.analysis.aggregate import GroupResult, _meta_for, size_order

REG_BOOT = 200
SCHEMA = {"step": pl.Int64, "term": pl.Utf8, "reference": pl.Utf8, "coef": pl.Float64,
          "ci_low": pl.Float64, "ci_high": pl.Float64, "n_rows": pl.Int64}


def _one_hot(values: list, prefix: str, missing: str = "untagged") -> tuple[np.ndarray, list[str], str]:
    """[P, L-1] indicator columns for every level but the reference (most frequent, ties by name)."""
    vals = [missing if v is None else str(v) for v in values]
    levels, counts = np.unique(vals, return_counts=True)
    ref = str(sorted(zip(-counts, levels))[0][1])
    keep = [lv for lv in levels if lv != ref]
    arr = np.asarray(vals)
    return (np.stack([arr == lv for lv in keep], 1).astype(np.float64) if keep else np.zeros((len(vals), 0)),
            [f"{prefix}={lv}" for lv in keep], ref)


def design(meta: pl.DataFrame, sizes: list[str]) -> tuple[np.ndarray, list[str], dict[str, str], np.ndarray]:
    """Token design [len(sizes)*P, k] (size-major), term names, reference level per factor, doc index."""
    pos_col = "xpos" if "xpos" in meta.columns and meta["xpos"].drop_nulls().len() else "upos"
    P = meta.height
    count = meta["count"].to_numpy().astype(np.float64) if "count" in meta.columns else np.ones(P)
    logf = np.log10(np.maximum(count, 1.0))
    tgt, t_names, t_ref = _one_hot(meta[pos_col].to_list() if pos_col in meta.columns else [None] * P, "pos")
    ctx_col = f"context_{pos_col}"
    ctx, c_names, c_ref = _one_hot(meta[ctx_col].to_list() if ctx_col in meta.columns else [None] * P,
                                   "context_pos")
    word, w_names, w_ref = np.zeros((P, 0)), [], None
    if "word_position" in meta.columns and meta["word_position"].drop_nulls().len():
        word, w_names, w_ref = _one_hot(meta["word_position"].to_list(), "word_position", missing="none")
    token_x = np.concatenate([np.ones((P, 1)), logf[:, None], tgt, ctx, word], 1)
    blocks = []
    for i in range(len(sizes)):
        sz = np.zeros((P, len(sizes) - 1))
        if i:
            sz[:, i - 1] = 1.0
        blocks.append(np.concatenate([token_x, sz], 1))
    names = ["intercept", "log10_count"] + t_names + c_names + w_names + [f"size={s}" for s in sizes[1:]]
    refs = {"pos": f"{pos_col}={t_ref}", "context_pos": f"{ctx_col}={c_ref}", "size": f"size={sizes[0]}",
            "word_position": f"word_position={w_ref}"}
    doc = meta["doc_id"].to_numpy() if "doc_id" in meta.columns else np.zeros(P, np.int64)
    _, doc = np.unique(doc, return_inverse=True)
    return np.concatenate(blocks, 0), names, refs, np.tile(doc, len(sizes))


def _solve(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched normal equations; a column with no weight (level not drawn) gets nan."""
    empty = np.abs(np.diagonal(A, axis1=-2, axis2=-1)) == 0
    beta = np.einsum("...ij,...j->...i", np.linalg.pinv(A), b)
    return np.where(empty, np.nan, beta)


def regression(groups: list[GroupResult], meta: pl.DataFrame, *, n_boot: int = REG_BOOT, seed: int = 0,
               sizes: list[str] | None = None) -> pl.DataFrame:
    """regression.parquet rows for every step that all sizes share (module docstring). sizes: smallest
    first, the first is the size factor's reference (default: analysis.aggregate.size_order)."""
    present = list(dict.fromkeys(g.size for g in groups))
    sizes = [s for s in sizes if s in present] if sizes is not None else size_order(present)
    by = {(g.size, int(g.step)): g for g in groups}
    steps = sorted({s for (_, s) in by if all((z, s) in by for z in sizes)})
    out = {k: [] for k in SCHEMA}
    if not steps:
        return pl.DataFrame(out, schema=SCHEMA)
    P = by[(sizes[0], steps[0])].arrays["kl"].shape[0]
    metas = [_meta_for(meta, s, P) for s in sizes]
    X_all, names_all, refs, doc = design(metas[0], sizes)
    keep = independent_columns(X_all)
    aliased = [n for j, n in enumerate(names_all) if j not in keep]
    X, names = X_all[:, keep], [names_all[j] for j in keep]
    D, k = int(doc.max()) + 1, X.shape[1]
    XtX_d = np.stack([X[doc == d].T @ X[doc == d] for d in range(D)])             # [D,k,k]
    S = by[(sizes[0], steps[0])].arrays["kl"].shape[1]
    dr = bs.draws(D, S, min(n_boot, REG_BOOT), seed)
    Vu = dr.unit_weights(pairs=True)                                                # [B,U]
    A_rep = np.einsum("bd,dij->bij", dr.W, XtX_d) * Vu.sum(1)[:, None, None]
    for step in steps:
        Y = np.concatenate([bs.ordered_pairs(by[(s, step)].arrays["kl"]) for s in sizes], 0)   # [rows,U]
        Xty_d = np.stack([X[doc == d].T @ Y[doc == d] for d in range(D)])          # [D,k,U]
        beta = np.linalg.solve(X.T @ X, X.T @ Y.mean(1))
        b_rep = np.einsum("bd,dku,bu->bk", dr.W, Xty_d, Vu)
        lo, hi = bs.percentile_ci(_solve(A_rep, b_rep))
        for i, name in enumerate(names):
            factor = name.split("=")[0] if "=" in name else None
            out["step"].append(int(step)); out["term"].append(name); out["reference"].append(refs.get(factor))
            out["coef"].append(float(beta[i])); out["ci_low"].append(_f(lo[i])); out["ci_high"].append(_f(hi[i]))
            out["n_rows"].append(int(Y.size))
        for name in aliased:
            out["step"].append(int(step)); out["term"].append(name); out["reference"].append("aliased")
            for c in ("coef", "ci_low", "ci_high"):
                out[c].append(None)
            out["n_rows"].append(int(Y.size))
    return pl.DataFrame(out, schema=SCHEMA)


def independent_columns(X: np.ndarray) -> list[int]:
    """Indices of the columns kept, in order, each linearly independent of those before it; a level that
    coincides with earlier columns on this text (e.g. "target untagged" = "context '.'" when every '.'
    ends a document) is aliased: it gets no coefficient, so the design stays full rank."""
    G = X.T @ X
    keep: list[int] = []
    for j in range(X.shape[1]):
        idx = keep + [j]
        if np.linalg.matrix_rank(G[np.ix_(idx, idx)], tol=1e-9 * max(G.trace(), 1.0)) == len(idx):
            keep.append(j)
    return keep


def _f(v) -> float | None:
    return None if not np.isfinite(v) else float(v)
