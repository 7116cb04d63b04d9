"""The ICL score's documents and statistics (the probe itself: study/icl.py; figure: report/icl.py).

Definition (the repository's run-stage/alternate_icl.py, sign flipped): a document's ids are its tokens
with the start token (eos) prepended and its closing eos appended, as `tokenizer(snippet)` with
add_bos_token/add_eos_token gives them there. With positions (long_start, short_start, target) in those
ids (the repository's 100, 450, 501), the ICL score of one seed on one document is

    loss_short - loss_long,   loss_* = -log p(ids[target] | ids[*_start:target])

(the model sees only ids[*_start:target], no start token of its own). Positive: the longer context helps.
The repository reports loss_long - loss_short. Documents with fewer than target + 1 ids are left out.

Uncertainty: analysis/bootstrap.py's scheme (documents and seeds resampled independently; the KL
between seeds over the ordered pairs among the drawn seeds), 95% percentile intervals.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from seedkl_jax.analysis import bootstrap as bs
from seedkl_jax.analysis.aggregate import GroupResult, _seed_column, size_order

COLUMNS = {"size": pl.Utf8, "step": pl.Int64, "seed": pl.Int64, "doc_id": pl.Int64,
           "loss_short": pl.Float32, "loss_long": pl.Float32}
KEYS = ("icl_loss_short", "icl_loss_long", "icl_kl_short", "icl_kl_long", "icl_doc_id")


@dataclasses.dataclass(frozen=True)
class Documents:
    """The documents long enough for the positions: rows the models score (N_doc documents)."""

    positions: tuple[int, int, int]   # long_start, short_start, target
    doc_id: np.ndarray                # [N_doc] int64: index among the text's documents (data.annotate's doc_id)
    short: np.ndarray                 # [N_doc, target - short_start + 1] int32: ids[short_start:target+1]
    long: np.ndarray                  # [N_doc, target - long_start + 1] int32: ids[long_start:target+1]
    n_total: int                      # documents in the text
    longest: int                      # most ids any document has (with its start and closing eos)


def split_documents(ids: np.ndarray, eos_id: int) -> list[np.ndarray]:
    """ids of a study text ([eos] d0 [eos] d1 ... [eos]) -> each document's ids with the start token
    prepended and its closing eos (when the text has one) appended. Documents are data.annotate's: the
    maximal runs of non-eos tokens, in order (so list index = token_meta's doc_id on the same text)."""
    ids = np.asarray(ids, np.int64)
    is_eos = ids == eos_id
    run = np.concatenate([[False], ~is_eos, [False]]).astype(np.int8)
    starts = np.flatnonzero(np.diff(run) == 1)
    ends = np.flatnonzero(np.diff(run) == -1)
    return [np.concatenate([[eos_id], ids[a:b], ids[b:b + 1]]).astype(np.int32) for a, b in zip(starts, ends)]


def documents(ids: np.ndarray, eos_id: int, positions) -> Documents:
    """The rows the probe scores (see `Documents`) from a study text's ids."""
    long_start, short_start, target = (int(p) for p in positions)
    docs = split_documents(ids, eos_id)
    keep = [k for k, d in enumerate(docs) if len(d) > target]
    rows = lambda start: np.asarray([docs[k][start:target + 1] for k in keep], np.int32).reshape(  # noqa: E731
        len(keep), target + 1 - start)
    return Documents(positions=(long_start, short_start, target), doc_id=np.asarray(keep, np.int64),
                     short=rows(short_start), long=rows(long_start), n_total=len(docs),
                     longest=max((len(d) for d in docs), default=0))


def frame(groups: list[GroupResult]) -> pl.DataFrame:
    """icl.parquet: one row per (size, step, seed, document) with its two losses (nats)."""
    parts = []
    for g in groups:
        if "icl_loss_short" not in g.arrays:
            continue
        short, long_ = (np.asarray(g.arrays[k], np.float32) for k in ("icl_loss_short", "icl_loss_long"))
        D, S = short.shape
        seeds, dtype = _seed_column(g.seeds)
        parts.append(pl.DataFrame({
            "size": np.full(D * S, str(g.size)), "step": np.full(D * S, int(g.step), np.int64),
            "seed": np.tile(seeds, D), "doc_id": np.repeat(np.asarray(g.arrays["icl_doc_id"], np.int64), S),
            "loss_short": short.ravel(), "loss_long": long_.ravel()},
            schema={**COLUMNS, "seed": dtype}))
    return pl.concat(parts, how="vertical") if parts else pl.DataFrame(schema=COLUMNS)


def summary(groups: list[GroupResult], n_boot: int = 1000, seed: int = 0) -> pl.DataFrame:
    """Per (size, step): n_docs, the ICL score's mean over documents and seeds with its 95% CI, and the
    mean KL between seeds (ordered pairs) at the target with the short and with the long context, each
    with its 95% CI. Sizes smallest first, steps ascending."""
    rows = []
    order = size_order(g.size for g in groups)
    for g in sorted(groups, key=lambda g: (order.index(g.size), int(g.step))):
        if "icl_loss_short" not in g.arrays or not len(g.arrays["icl_doc_id"]):
            continue
        a = g.arrays
        score = np.asarray(a["icl_loss_short"], np.float64) - np.asarray(a["icl_loss_long"], np.float64)  # [D,S]
        D, S = score.shape
        d = bs.draws(D, S, n_boot, seed)
        row = {"size": str(g.size), "step": int(g.step), "n_docs": D, "n_seeds": S}
        row.update(_stat("icl", score, d.W, d.unit_weights(pairs=False)))
        for ctx in ("short", "long"):
            kl = bs.ordered_pairs(np.asarray(a[f"icl_kl_{ctx}"]))  # [D, S(S-1)]
            row.update(_stat(f"kl_{ctx}", kl, d.W, d.unit_weights(pairs=True)))
        rows.append(row)
    return pl.DataFrame(rows)


def _stat(name: str, vals: np.ndarray, W: np.ndarray, Vu: np.ndarray) -> dict[str, float]:
    """{name: mean over documents and units, name_lo/_hi: 95% CI} for vals [D,U] under draws W [B,D],
    unit weights Vu [B,U] (a replicate without a unit is nan, left out)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = np.einsum("bd,du,bu->b", W, vals, Vu) / (W.sum(1) * Vu.sum(1))
    lo, hi = bs.percentile_ci(reps)
    return {name: float(vals.mean()), f"{name}_lo": float(lo[0]), f"{name}_hi": float(hi[0])}
