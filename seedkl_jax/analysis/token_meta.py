"""token_meta: the per-position categories every analysis conditions on, from a few base columns.

Why one module: `seedkl run` (meta from data/annotate.py) and `seedkl analyze` (META from anywhere)
must derive the categories and the final-surprisal bins by the same rules, or the same KLs would give
different findings. The base columns (docs/analyze.md):

    position, token_id, doc_id           required
    size                                 optional: rows per size (else shared by every size)
    count                                corpus count of the target -> freq_bin (decades; the paper's
                                         one bin >= 1e5 with compat="paper")
    xpos (Penn), upos                    -> paper_pos (from xpos), pos_group (from upos; UPOS is mapped
                                         from xpos by data/pos.PENN_TO_UPOS when only xpos is given)
    context_xpos, context_upos           optional: else the tag of position p-1 of the same document
    token_str                            optional (the divergent-token table)
    final_surprisal                      optional: else from the surprisal (see `final_surprisals`)
    word_position                        optional: "begin" / "inside" (data/annotate.py), passed through

Final-surprisal bins (`final_surprisals`), first that applies: a held-out seed's surprisal at each
size's last step (`--surprisal_seed`: a seed not among the compared ones, so the bins do not come
from the seeds whose KL is measured); META's `final_surprisal`; the compared seeds' surprisal at the
last step (mean over seeds, or the first seed with compat="paper", analysis/compat.py); else none
(no final-surprisal bins). `FinalSurprisal.source` says which, for the report.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from seedkl_jax.analysis.compat import final_surprisal, freq_top
from seedkl_jax.data.annotate import freq_bin, paper_pos, pos_group, surprisal_bin
from seedkl_jax.data.pos import PENN_TO_UPOS

BASE = ("position", "token_id", "doc_id")
OPTIONAL = ("size", "count", "xpos", "upos", "context_xpos", "context_upos", "token_str", "final_surprisal",
            "word_position")
ORDER = ("size", "position", "token_id", "token_str", "doc_id", "count", "freq_bin", "upos", "xpos", "pos_group",
         "context_upos", "context_xpos", "paper_pos", "final_surprisal", "final_surprisal_bin", "word_position")  # README's


@dataclasses.dataclass(frozen=True)
class FinalSurprisal:
    """[P] surprisal per size that defines the final-surprisal bins, and where it came from."""
    values: dict[str, np.ndarray]
    source: str
    held_out: bool = False  # from a seed not among the compared ones (wins over META's column)


def held_out_key(seed) -> str:
    """The array a last-step group keeps the held-out seed's [P] surprisal under (study/run.py)."""
    return f"surprisal_seed_{seed}"


def present(meta: pl.DataFrame, col: str) -> bool:
    """A column counts as given when it exists and holds at least one value."""
    return col in meta.columns and meta[col].null_count() < meta.height


def _previous_tag(meta: pl.DataFrame, col: str) -> pl.Series:
    """Tag of position p-1 in the same document (and size), None at a document's first position."""
    by = ["size"] if "size" in meta.columns else []
    prev = meta.select(by + [pl.col("position") + 1, pl.col("doc_id"), pl.col(col).alias("_prev")])
    joined = meta.select(by + ["position", "doc_id"]).join(prev, on=by + ["position", "doc_id"], how="left",
                                                           maintain_order="left")
    return joined["_prev"].rename(f"context_{col}")


def derive(meta: pl.DataFrame, compat: str = "none") -> pl.DataFrame:
    """The base columns (module docstring) plus every category column they imply."""
    meta = meta.select([c for c in BASE + OPTIONAL if c in meta.columns])
    cols = []
    if present(meta, "count"):
        cnt = np.rint(meta["count"].cast(pl.Float64).to_numpy()).astype(np.int64)
        cols.append(pl.Series("freq_bin", freq_bin(cnt, top=freq_top(compat)), dtype=pl.Utf8))
    if not present(meta, "upos") and present(meta, "xpos"):
        meta = meta.with_columns(pl.col("xpos").replace_strict(PENN_TO_UPOS, default=None, return_dtype=pl.Utf8).alias("upos"))
    for tag in ("upos", "xpos"):
        if present(meta, tag) and not present(meta, f"context_{tag}"):
            meta = meta.with_columns(_previous_tag(meta, tag))
    if present(meta, "upos"):
        cols.append(pl.Series("pos_group", [pos_group(u) for u in meta["upos"].to_list()], dtype=pl.Utf8))
    if present(meta, "xpos"):
        cols.append(pl.Series("paper_pos", [paper_pos(x) for x in meta["xpos"].to_list()], dtype=pl.Utf8))
    return meta.with_columns(cols) if cols else meta


def final_surprisals(groups, compat: str = "none", held_out: dict[str, np.ndarray] | None = None,
                     held_out_seed=None) -> FinalSurprisal:
    """The surprisal defining each size's final-surprisal bins (module docstring's order, minus META's
    column, which `token_meta` applies). groups: analysis.aggregate.GroupResult; held_out: [P] per size
    of the held-out seed at that size's last step."""
    last: dict = {}
    for g in groups:
        if g.size not in last or g.step > last[g.size].step:
            last[g.size] = g
    if held_out:
        return FinalSurprisal({s: np.asarray(v, np.float64) for s, v in held_out.items()},
                              f"held-out seed {held_out_seed}'s surprisal at each size's last step "
                              "(a seed not among the compared ones)", held_out=True)
    if last and all(g.arrays.get("surprisal") is not None for g in last.values()):
        how = ("the first compared seed's surprisal at each size's last step (--compat=paper, the paper's choice)"
               if compat == "paper" else "the mean over the compared seeds of their surprisal at each size's last step")
        return FinalSurprisal({s: final_surprisal(g.arrays["surprisal"], compat) for s, g in last.items()}, how)
    return FinalSurprisal({}, "")


def token_meta(meta: pl.DataFrame, sizes: list[str], final: FinalSurprisal | None = None,
               compat: str = "none") -> tuple[pl.DataFrame, str]:
    """token_meta.parquet (one row block per size, sorted by position) and the final-surprisal source
    ("" when there are no final-surprisal bins)."""
    meta = derive(meta, compat)
    has_column = present(meta, "final_surprisal")
    parts, source = [], ""
    for size in sizes:
        m = (meta.filter(pl.col("size") == size) if "size" in meta.columns else meta).drop("size", strict=False)
        m = m.sort("position")
        if final is not None and size in final.values and (final.held_out or not has_column):
            m = m.with_columns(pl.Series("final_surprisal", final.values[size], dtype=pl.Float64))
            source = final.source
        elif has_column:
            source = source or "META's final_surprisal column"
        if "final_surprisal" in m.columns:
            fs = m["final_surprisal"].cast(pl.Float64).to_numpy()
            m = m.with_columns(pl.Series("final_surprisal_bin", surprisal_bin(fs), dtype=pl.Utf8))
        parts.append(m.with_columns(pl.lit(size, dtype=pl.Utf8).alias("size")))
    df = pl.concat(parts, how="diagonal_relaxed") if parts else meta
    return df.select([c for c in ORDER if c in df.columns] + [c for c in df.columns if c not in ORDER]), source
