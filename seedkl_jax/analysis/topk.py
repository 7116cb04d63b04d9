"""topk.parquet's rows: each seed's K most likely next tokens at every position (--save_topk=K).

Why a table of its own: the KL and agreement arrays say *how much* seeds disagree; the top-k ids say
*what* each seed predicts, so a reader can look up the alternatives behind a divergent token without
rerunning the models. The kernel keeps them from the same fused pass (kernels/: topk_ids [P,S,K]
int32, topk_prob [P,S,K] float32, descending, probabilities over the real vocabulary).

One row per (size, step, seed, position, rank): rank is 1-based (rank 1 = the seed's argmax), and
position is numbered as tokens.parquet's (the token meta's `position` of that size), so the two join
on (size, step, position). Rows are ordered by seed, position, rank.
"""
from __future__ import annotations

import numpy as np
import polars as pl

from seedkl_jax.analysis.aggregate import GroupResult, _check_group, _seed_column

TOPK_SCHEMA = {"size": pl.Utf8, "step": pl.Int64, "seed": pl.Int64, "position": pl.Int64, "rank": pl.Int32,
               "token_id": pl.Int32, "prob": pl.Float32}  # seed: Utf8 for a suite of named seeds


def topk_rows(group: GroupResult, positions: np.ndarray | None = None) -> pl.DataFrame | None:
    """Rows of topk.parquet for one group ([S*P*K] rows; positions [P], default 1..P); None when the
    group has no top-k arrays."""
    if "topk_ids" not in group.arrays:
        return None
    P, S = _check_group(group)
    ids = np.asarray(group.arrays["topk_ids"]).transpose(1, 0, 2)             # [S,P,K]
    prob = np.asarray(group.arrays["topk_prob"]).transpose(1, 0, 2)
    K = ids.shape[-1]
    pos = np.arange(1, P + 1, dtype=np.int64) if positions is None else np.asarray(positions, np.int64)
    seeds, dtype = _seed_column(group.seeds)
    n = S * P * K
    return pl.DataFrame({
        "size": pl.Series([group.size] * n, dtype=pl.Utf8),
        "step": pl.Series(np.full(n, group.step, np.int64), dtype=pl.Int64),
        "seed": pl.Series(np.repeat(seeds, P * K), dtype=dtype),
        "position": pl.Series(np.tile(np.repeat(pos, K), S), dtype=pl.Int64),
        "rank": pl.Series(np.tile(np.arange(1, K + 1, dtype=np.int32), S * P), dtype=pl.Int32),
        "token_id": pl.Series(ids.reshape(-1).astype(np.int32), dtype=pl.Int32),
        "prob": pl.Series(prob.reshape(-1).astype(np.float32), dtype=pl.Float32),
    })
