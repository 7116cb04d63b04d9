"""From per-position KL arrays to the study's tables: tokens, pairs and the summary with bootstrap CIs.

Why this file exists: the kernel gives, for one (size, step) group of S seeds, per-position arrays
(P predicted positions):

    kl          [P,S,S]  KL(p_i || p_j) in nats, diagonal exactly 0
    surprisal   [P,S]    -log p_s(x_p)
    entropy     [P,S]
    kl_uniform  [P,S]    KL(p_s || uniform)
    kl_unigram  [P,S]    KL(p_s || unigram)   (only with a reference distribution)
    top1_agree  [P,S,S]  1 where seeds i and j have the same argmax, else 0 (--metrics with top1)
    js          [P,S,S]  Jensen-Shannon divergence of p_i and p_j in nats (--metrics with js)
    topk_ids, topk_prob  [P,S,K]  each seed's K most likely ids (--save_topk; analysis/topk.py)

A researcher wants tables they can open in polars: one row per token (tokens.parquet), one per seed
pair (pairs.parquet), and one per (size, step, metric, category) with uncertainty (summary.parquet).

Definitions (nats throughout):
  * kl_mean of a token = mean of kl[p,i,j] over the S(S-1) ordered pairs i != j;
    kl_std = population SD (ddof=0) over those ordered pairs.
  * E[conv] = e_conv = -mean_kl, mean_kl = mean over the category's tokens and units. Units are the
    ordered seed pairs (metric "seeds", the paper's E[conv]) or the seeds (per-seed metrics
    "uniform", "unigram": KL of each seed's prediction to the uniform / unigram distribution, and
    "surprisal": -log p_s(target), for which mean_kl holds the mean surprisal = cross-entropy).
  * sd_tokens = sample SD (ddof=1) over the category's tokens of the per-token unit mean: the
    paper's "variance across contexts" band of the main curve (spread over tokens, not an error bar).
  * sd_pairs = sample SD (ddof=1) over the units of their mean over the category's tokens: over the
    S(S-1) ordered pairs for "seeds" (the paper's band of every binned / PoS figure and of its second
    main-curve variant), over the S seeds for the per-seed metrics.
  * ci_low / ci_high = 95% bootstrap interval of e_conv resampling seeds and documents
    (analysis.bootstrap: the scheme, and why pairs are not resampled as independent units).
  * The agreement metrics "top1_agree" and "js" are aggregated exactly like "seeds" (units: the
    S(S-1) ordered pairs, the same bootstrap): mean_kl holds the metric's mean (the top-1 agreement
    rate = 1 - churn; the mean JS in nats) and e_conv is oriented like E[conv], higher = more alike:
    e_conv = +agreement for top1_agree, -mean JS for js (CONVERGENCE_SIGN; ci_* are of e_conv).

Categories come from the token meta frame (one row per predicted position; README's token_meta
columns). `final_surprisal_bin` depends on size: when the meta frame has a `size` column, each group
uses the rows of its size. Null categories (e.g. tokens without a PoS tag) are skipped.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Iterable

import numpy as np
import polars as pl

from seedkl_jax.analysis import bootstrap as bs
from seedkl_jax.errors import SeedKLError

METRICS = ("seeds", "uniform", "unigram", "surprisal", "top1_agree", "js")
PER_SEED = {"uniform": "kl_uniform", "unigram": "kl_unigram", "surprisal": "surprisal"}
PAIRWISE = {"seeds": "kl", "top1_agree": "top1_agree", "js": "js"}  # metric -> its [P,S,S] array
AGREEMENT = ("top1_agree", "js")  # the pairwise arrays besides kl (tokens/pairs/pair_positions columns)
CONVERGENCE_SIGN = {"top1_agree": 1.0}  # e_conv = sign * mean (default -1: a divergence, E[conv] = -mean)
CATEGORY_KINDS = ("all", "freq_bin", "upos", "xpos", "pos_group", "paper_pos", "context_upos",
                  "context_xpos", "final_surprisal_bin", "word_position")
SUMMARY_SCHEMA = {
    "size": pl.Utf8, "step": pl.Int64, "metric": pl.Utf8, "category_kind": pl.Utf8,
    "category": pl.Utf8, "n_tokens": pl.Int64, "mean_kl": pl.Float64, "e_conv": pl.Float64,
    "sd_tokens": pl.Float64, "sd_pairs": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
}
_PAPER_POS_ORDER = ("JJ", "IN", "DT", "MD", "PRP", "Nouns", "Verbs")
_XPOS_ORDER = ("NN", "NNS", "NNP", "NNPS", "VB", "VBG", "VBN", "VBD", "VBZ", "VBP", "PRP$", "DT", "CC",
               "JJ", "IN", "TO", "RB", "MD", "PRP")
_UPOS_ORDER = ("NOUN", "PROPN", "VERB", "ADJ", "ADV", "ADP", "AUX", "CCONJ", "DET", "PART", "PRON",
               "SCONJ", "NUM", "INTJ", "PUNCT", "SYM", "X")
_GROUP_ORDER = ("function", "content", "other")
_WORD_ORDER = ("begin", "inside")  # data/annotate.py's word_position


@dataclasses.dataclass
class GroupResult:
    """One (size, step) group: the S seeds' compare() output on the evaluation text."""
    size: str
    step: int
    seeds: list[int]
    arrays: dict[str, np.ndarray]


# ----------------------------------------------------------------------------------------- ordering
_NUM = re.compile(r"(\d+(?:\.\d+)?)(?:\s*\^\s*([+-]?\d+)|[eE]([+-]?\d+))?(?:([kKmMbBgGtT])(?![a-zA-Z]))?")
_SUFFIX = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def number_key(label: str) -> float | None:
    """The first number in a label ("1e3", "10^3", "70m", "[2,4)", "8+"), None when there is none.
    A leading "<" / "≤" sorts just below the number, so "<10" comes before "[10,100)"."""
    m = _NUM.search(label)
    if m is None:
        return None
    v = float(m.group(1))
    if m.group(2):
        v = v ** int(m.group(2))
    elif m.group(3):
        v = v * 10.0 ** int(m.group(3))
    if m.group(4):
        v *= _SUFFIX[m.group(4).lower()]
    if label.lstrip().startswith(("<", "≤")):
        v = np.nextafter(v, -np.inf)
    return v


def category_order(kind: str, labels: Iterable[str]) -> list[str]:
    """Display order of a kind's categories: numeric bins by their first number (rarest / lowest
    first), UPOS in UD's order (content classes first), pos_group as function, content, other,
    paper_pos and xpos in the paper's figure order (other tags after, alphabetically), word_position as
    begin, inside."""
    labels = list(dict.fromkeys(str(x) for x in labels))
    fixed = {"pos_group": _GROUP_ORDER, "upos": _UPOS_ORDER, "context_upos": _UPOS_ORDER,
             "paper_pos": _PAPER_POS_ORDER, "xpos": _XPOS_ORDER, "context_xpos": _XPOS_ORDER, "word_position": _WORD_ORDER}.get(kind)
    if fixed is not None:
        rank = {k: i for i, k in enumerate(fixed)}
        return sorted(labels, key=lambda s: (rank.get(s, len(fixed)), s))
    keys = {s: number_key(s) for s in labels}
    return sorted(labels, key=lambda s: (keys[s] is None, keys[s] or 0.0, s))


def size_order(sizes: Iterable[str]) -> list[str]:
    """Sizes smallest first when every label carries a number ("14m", "1.4b", "w64"); otherwise the
    given (suite) order."""
    sizes = list(dict.fromkeys(sizes))
    keys = [number_key(s) for s in sizes]
    if any(k is None for k in keys):
        return sizes
    return [s for _, s in sorted(zip(keys, sizes), key=lambda t: t[0])]


# ----------------------------------------------------------------------------------------- checks
def _check_group(group: GroupResult) -> tuple[int, int]:
    a = group.arrays
    if "kl" not in a:
        raise SeedKLError(f"group {group.size}@{group.step}: arrays lack 'kl'; pass compare() output")
    kl = np.asarray(a["kl"])
    if kl.ndim != 3 or kl.shape[1] != kl.shape[2]:
        raise SeedKLError(f"group {group.size}@{group.step}: kl has shape {kl.shape}, expected [P,S,S]; "
                          "pass one text (positions P), not a batch")
    P, S = kl.shape[:2]
    if len(group.seeds) != S:
        raise SeedKLError(f"group {group.size}@{group.step}: {len(group.seeds)} seeds but kl has S={S}; "
                          "give one seed per model compared")
    if S < 2:
        raise SeedKLError(f"group {group.size}@{group.step}: needs at least 2 seeds to measure KL between "
                          "seeds; add seeds to the suite")
    want = {**{k: (P, S) for k in ("surprisal", "entropy", "kl_uniform", "kl_unigram")},
            **{k: (P, S, S) for k in AGREEMENT}}
    if "topk_ids" in a:
        want.update(topk_ids=(P, S, np.shape(a["topk_ids"])[-1]), topk_prob=(P, S, np.shape(a["topk_ids"])[-1]))
    for k, shape in want.items():
        if k in a and np.shape(a[k]) != shape:
            raise SeedKLError(f"group {group.size}@{group.step}: {k} has shape {np.shape(a[k])}, expected "
                              f"{shape}; pass compare() output unchanged")
    return P, S


def _meta_for(meta: pl.DataFrame, size: str, P: int) -> pl.DataFrame:
    """The meta rows of this size, sorted by position; their count must equal P."""
    if "size" in meta.columns:
        meta = meta.filter(pl.col("size") == size)
    if "position" not in meta.columns:
        raise SeedKLError("token meta: no 'position' column; build it with data.annotate.annotate_tokens")
    meta = meta.sort("position")
    if meta.height != P:
        raise SeedKLError(f"token meta: {meta.height} rows for size {size!r} but the KL arrays have "
                          f"P={P} positions; annotate the same text that was scored")
    return meta


def _col(meta: pl.DataFrame, name: str, dtype) -> pl.Series:
    if name in meta.columns:
        return meta[name].cast(dtype)
    return pl.Series(name, [None] * meta.height, dtype=dtype)


# ----------------------------------------------------------------------------------------- rows
def token_rows(group: GroupResult, meta: pl.DataFrame) -> pl.DataFrame:
    """Rows of tokens.parquet for one group: per position kl_mean/kl_std over ordered pairs i != j and
    seed means of surprisal, entropy, kl_uniform, kl_unigram (null when the kernel gave none), and
    top1_agree_mean / js_mean over ordered pairs when the group has them (no column otherwise)."""
    P, S = _check_group(group)
    m = _meta_for(meta, group.size, P)
    kl = np.asarray(group.arrays["kl"], dtype=np.float64)
    off = ~np.eye(S, dtype=bool)
    pairs = kl[:, off]                                            # [P, S(S-1)] ordered pairs
    cols = {
        "size": pl.Series([group.size] * P, dtype=pl.Utf8),
        "step": pl.Series([int(group.step)] * P, dtype=pl.Int64),
        "position": m["position"].cast(pl.Int64),
        "token_id": _col(m, "token_id", pl.Int64),
        "kl_mean": pl.Series(pairs.mean(1), dtype=pl.Float32),
        "kl_std": pl.Series(pairs.std(1), dtype=pl.Float32),
    }
    for k in ("surprisal", "entropy", "kl_uniform", "kl_unigram"):
        v = group.arrays.get(k)
        cols[f"{k}_mean"] = (pl.Series(np.asarray(v, np.float64).mean(1), dtype=pl.Float32) if v is not None
                             else pl.Series([None] * P, dtype=pl.Float32))
    for k in (k for k in AGREEMENT if k in group.arrays):
        cols[f"{k}_mean"] = pl.Series(bs.ordered_pairs(group.arrays[k]).mean(1), dtype=pl.Float32)
    return pl.DataFrame(cols)


def _seed_column(seeds) -> tuple[np.ndarray, type]:
    """Seeds as a column: text when any is a name (study/suite.py's named seeds), else Int64."""
    if any(isinstance(s, str) for s in seeds):
        return np.asarray([str(s) for s in seeds]), pl.Utf8
    return np.asarray(seeds, dtype=np.int64), pl.Int64


def pair_rows(group: GroupResult) -> pl.DataFrame:
    """Rows of pairs.parquet: per ordered seed pair (seed_a, seed_b), a != b, the mean KL(a||b) over positions
    (and top1_agree_mean / js_mean when the group has them)."""
    P, S = _check_group(group)
    kl = np.asarray(group.arrays["kl"], dtype=np.float64)
    ia, ib = np.nonzero(~np.eye(S, dtype=bool))
    seeds, dtype = _seed_column(group.seeds)
    return pl.DataFrame({
        "size": pl.Series([group.size] * len(ia), dtype=pl.Utf8),
        "step": pl.Series([int(group.step)] * len(ia), dtype=pl.Int64),
        "seed_a": pl.Series(seeds[ia], dtype=dtype),
        "seed_b": pl.Series(seeds[ib], dtype=dtype),
        "kl_mean": pl.Series(kl.mean(0)[ia, ib], dtype=pl.Float64),
        **{f"{k}_mean": pl.Series(np.asarray(group.arrays[k], np.float64).mean(0)[ia, ib], dtype=pl.Float64)
           for k in AGREEMENT if k in group.arrays},
    })


def pair_position_rows(group: GroupResult, positions: np.ndarray | None = None) -> pl.DataFrame:
    """Rows of pair_positions.parquet, `seedkl analyze`'s PAIRS schema (analysis/tables.py): size, step,
    seed_a, seed_b, position, kl = KL(p_a || p_b) for every ordered pair a != b at every position
    ([P*S*(S-1)] rows; positions [P], default 1..P); beside kl, top1_agree (Int8 0/1) and js (Float32)
    when the group has them."""
    P, S = _check_group(group)
    kl = np.asarray(group.arrays["kl"])                                           # [P,S,S]
    a, b = np.nonzero(~np.eye(S, dtype=bool))
    pos = np.arange(1, P + 1, dtype=np.int64) if positions is None else np.asarray(positions, np.int64)
    seeds, dtype = _seed_column(group.seeds)
    n = P * len(a)
    return pl.DataFrame({
        "size": pl.Series([group.size] * n, dtype=pl.Utf8),
        "step": pl.Series(np.full(n, group.step, np.int64), dtype=pl.Int64),
        "seed_a": pl.Series(np.tile(seeds[a], P), dtype=dtype), "seed_b": pl.Series(np.tile(seeds[b], P), dtype=dtype),
        "position": pl.Series(np.repeat(pos, len(a)), dtype=pl.Int64),
        "kl": kl[:, a, b].reshape(-1),
        **{k: pl.Series(np.asarray(group.arrays[k])[:, a, b].reshape(-1), dtype=pl.Int8 if k == "top1_agree"
                        else pl.Float32) for k in AGREEMENT if k in group.arrays},
    })


# ----------------------------------------------------------------------------------------- summary
def _units(group: GroupResult, metric: str) -> np.ndarray | None:
    """Per-token values of the units [P, U] (float64): ordered pairs for the PAIRWISE metrics, seeds
    otherwise; None when the metric is absent."""
    if metric in PAIRWISE:
        v = group.arrays.get(PAIRWISE[metric])
        return None if v is None else bs.ordered_pairs(v)
    v = group.arrays.get(PER_SEED[metric])
    return None if v is None else np.asarray(v, dtype=np.float64)


def doc_index(meta: pl.DataFrame) -> tuple[np.ndarray, int]:
    """Each row's document as an index 0..D-1 (null doc ids: one document of their own; no doc_id
    column: one document), and D: the numbering every bootstrap over documents uses."""
    doc = meta["doc_id"] if "doc_id" in meta.columns else pl.Series([0] * meta.height)
    _, idx = np.unique(doc.fill_null(-1).to_numpy(), return_inverse=True)
    return idx.astype(np.int64), int(idx.max()) + 1 if len(idx) else 1


def _size_layout(meta: pl.DataFrame) -> dict:
    """Per size meta preprocessing shared by all its steps: document index and category codes."""
    doc_idx, D = doc_index(meta)
    kinds = {"all": (np.zeros(meta.height, np.int64), ["all"])}
    for kind in CATEGORY_KINDS[1:]:
        if kind not in meta.columns:
            continue
        s = meta[kind].cast(pl.Utf8)
        labels = category_order(kind, s.drop_nulls().unique().to_list())
        if not labels:
            continue
        code = {lab: i for i, lab in enumerate(labels)}
        kinds[kind] = (np.array([-1 if v is None else code[v] for v in s.to_list()], np.int64), labels)
    return {"doc": doc_idx, "D": D, "kinds": kinds}


def category_stats(vals: np.ndarray, doc: np.ndarray, D: int, codes: np.ndarray, C: int, draws: bs.Draws,
                   pairs: bool) -> dict[str, np.ndarray]:
    """Point estimates and replicates of one category kind.

    vals [P,U] unit values, doc [P], codes [P] in -1..C-1 (-1 skipped). Returns n [C], mean [C],
    sd_tokens [C], sd_pairs [C] (ddof=1 over units of their category means), unit_means [C,U], reps [B,C].
    """
    counts, sums = bs.category_sums(vals, doc, D, codes, C)
    n = counts.sum(0)
    ok = codes >= 0
    tm, c = vals[ok].mean(1), codes[ok]                              # per-token unit mean
    with np.errstate(invalid="ignore", divide="ignore"):
        unit_means = sums.sum(0) / n[:, None]                        # [C,U]
        mean = unit_means.mean(1)
        ss = np.bincount(c, weights=(tm - mean[c]) ** 2, minlength=C)
        sd_tokens = np.sqrt(np.where(n > 1, ss / (n - 1), np.nan))
        sd_pairs = unit_means.std(1, ddof=1) if vals.shape[1] > 1 else np.full(C, np.nan)
    reps = bs.replicates(counts, sums, draws.W, draws.unit_weights(pairs))
    return {"n": n, "mean": mean, "sd_tokens": sd_tokens, "sd_pairs": sd_pairs, "unit_means": unit_means,
            "reps": reps}


def _ordered_groups(groups: list[GroupResult]) -> list[GroupResult]:
    seen = set()
    for g in groups:
        if (g.size, int(g.step)) in seen:
            raise SeedKLError(f"groups: ({g.size!r}, step {g.step}) given twice; pass each group once")
        seen.add((g.size, int(g.step)))
    sizes = list(dict.fromkeys(g.size for g in groups))
    return sorted(groups, key=lambda g: (sizes.index(g.size), int(g.step)))


def summarize(groups: list[GroupResult], meta: pl.DataFrame, n_boot: int = 1000, seed: int = 0, *,
              replicates: dict | None = None, keep: tuple[str, ...] = ("seeds",)) -> pl.DataFrame:
    """summary.parquet: one row per (size, step, metric, category_kind, category); see module docstring
    for mean_kl, e_conv, sd_tokens, sd_pairs and analysis.bootstrap for ci_low / ci_high (of e_conv).

    replicates: a dict to fill with the bootstrap replicates of e_conv, float32 [n_boot] per
    (size, step, metric, category_kind, category) of the metrics in `keep` -- the same draws for every
    group, so differences of two entries are paired (bootstrap.paired_ci).
    """
    if n_boot < 1:
        raise SeedKLError(f"n_boot={n_boot}: must be >= 1; use ~1000 for a 95% interval")
    layouts: dict[str, dict] = {}
    out = {k: [] for k in SUMMARY_SCHEMA}
    for g in _ordered_groups(groups):
        P, S = _check_group(g)
        if g.size not in layouts:
            layouts[g.size] = _size_layout(_meta_for(meta, g.size, P))
        lay = layouts[g.size]
        if len(lay["doc"]) != P:
            raise SeedKLError(f"group {g.size}@{g.step}: P={P} positions, other steps of this size have "
                              f"{len(lay['doc'])}; score every step on the same text")
        dr = bs.draws(lay["D"], S, n_boot, seed)
        for metric in METRICS:
            vals = _units(g, metric)
            if vals is None:
                continue
            sign = CONVERGENCE_SIGN.get(metric, -1.0)
            for kind, (codes, labels) in lay["kinds"].items():
                st = category_stats(vals, lay["doc"], lay["D"], codes, len(labels), dr, metric in PAIRWISE)
                lo, hi = bs.percentile_ci(st["reps"])
                lo, hi = (lo, hi) if sign > 0 else (-hi, -lo)            # the interval of e_conv
                for ci, lab in enumerate(labels):
                    if st["n"][ci] == 0:
                        continue
                    row = {"size": g.size, "step": int(g.step), "metric": metric, "category_kind": kind,
                           "category": lab, "n_tokens": int(st["n"][ci]), "mean_kl": float(st["mean"][ci]),
                           "e_conv": sign * float(st["mean"][ci]), "sd_tokens": _num(st["sd_tokens"][ci]),
                           "sd_pairs": _num(st["sd_pairs"][ci]), "ci_low": _num(lo[ci]), "ci_high": _num(hi[ci])}
                    for k, v in row.items():
                        out[k].append(v)
                    if replicates is not None and metric in keep:
                        rep = (sign * st["reps"][:, ci]).astype(np.float32)
                        replicates[(g.size, int(g.step), metric, kind, lab)] = rep
    return pl.DataFrame(out, schema=SUMMARY_SCHEMA)


def _num(v) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)
