"""The most and least divergent target token types at the last step (the paper's appendix table).

Per size, at its last step, every target token *type* (token id) with at least MIN_OCCURRENCES
occurrences in the text is one category: its E[conv] = -mean KL over its occurrences and the ordered
seed pairs, with the 95% seed/document bootstrap CI of analysis.bootstrap. The TOP most divergent
(lowest E[conv]) and TOP least divergent (highest) are kept. One-off types are left out: their mean
rests on a single context, so they would fill both ends of the list with noise.

divergent_tokens.parquet: size, step, end ("most" / "least"), rank (1 = most extreme), token_id,
token_str, count (corpus), occurrences, e_conv, ci_low, ci_high.
"""
from __future__ import annotations

import numpy as np
import polars as pl

from seedkl_jax.analysis import bootstrap as bs
from seedkl_jax.analysis.aggregate import GroupResult, _meta_for, _size_layout, category_stats

TOP = 20
MIN_OCCURRENCES = 3
SCHEMA = {"size": pl.Utf8, "step": pl.Int64, "end": pl.Utf8, "rank": pl.Int64, "token_id": pl.Int64,
          "token_str": pl.Utf8, "count": pl.Int64, "occurrences": pl.Int64, "e_conv": pl.Float64,
          "ci_low": pl.Float64, "ci_high": pl.Float64}


def divergent_tokens(groups: list[GroupResult], meta: pl.DataFrame, *, top: int = TOP,
                     min_occurrences: int = MIN_OCCURRENCES, n_boot: int = 1000, seed: int = 0) -> pl.DataFrame:
    """Rows of divergent_tokens.parquet from the groups (the last step of each size is used)."""
    last: dict[str, GroupResult] = {}
    for g in groups:
        if g.size not in last or g.step > last[g.size].step:
            last[g.size] = g
    rows = []
    for size, g in last.items():
        P, S = g.arrays["kl"].shape[:2]
        m = _meta_for(meta, size, P)
        lay = _size_layout(m)
        ids = m["token_id"].to_numpy()
        types, code, occ = np.unique(ids, return_inverse=True, return_counts=True)
        code = np.where(occ[code] >= min_occurrences, code, -1)
        st = category_stats(bs.ordered_pairs(g.arrays["kl"]), lay["doc"], lay["D"], code, len(types),
                            bs.draws(lay["D"], S, n_boot, seed), pairs=True)
        lo, hi = bs.percentile_ci(st["reps"])
        ok = np.flatnonzero(st["n"] > 0)
        order = ok[np.argsort(-st["mean"][ok], kind="stable")]         # highest KL first
        first = {int(t): i for i, t in reversed(list(enumerate(ids)))}
        for end, picks in (("most", order[:top]), ("least", order[::-1][:top])):
            for rank, c in enumerate(picks, 1):
                r = m.row(first[int(types[c])], named=True)
                rows.append({"size": size, "step": int(g.step), "end": end, "rank": rank,
                             "token_id": int(types[c]), "token_str": r.get("token_str"), "count": r.get("count"),
                             "occurrences": int(st["n"][c]), "e_conv": -float(st["mean"][c]),
                             "ci_low": None if np.isnan(hi[c]) else -float(hi[c]),
                             "ci_high": None if np.isnan(lo[c]) else -float(lo[c])})
    return pl.DataFrame(rows, schema=SCHEMA)
