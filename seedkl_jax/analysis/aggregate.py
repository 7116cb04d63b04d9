"""From per-position KL arrays to the study's tables: tokens, pairs and the summary with bootstrap CIs.

Why this file exists: the kernel gives, for one (size, step) group of S seeds, per-position arrays
(P predicted positions):

    kl          [P,S,S]  KL(p_i || p_j) in nats, diagonal exactly 0
    surprisal   [P,S]    -log p_s(x_p)
    entropy     [P,S]
    kl_uniform  [P,S]    KL(p_s || uniform)
    kl_unigram  [P,S]    KL(p_s || unigram)   (only with a reference distribution)

A researcher wants tables they can open in polars: one row per token (tokens.parquet), one per seed
pair (pairs.parquet), and one per (size, step, metric, category) with uncertainty (summary.parquet).

Definitions (nats throughout):
  * kl_mean of a token = mean of kl[p,i,j] over the S(S-1) ordered pairs i != j;
    kl_std = population SD (ddof=0) over those ordered pairs.
  * E[conv] = e_conv = -mean_kl, mean_kl = mean over the category's tokens of the per-token unit mean.
    Units are seed pairs (metric "seeds") or seeds (baselines "uniform", "unigram": KL of each seed's
    prediction to the uniform / unigram distribution; their e_conv is likewise -mean KL).
  * sd = population SD (ddof=0) over the category's tokens of the per-token unit mean (for "seeds"
    exactly the token's kl_mean). This is the paper's +-1 SD band: spread over tokens, not an error bar.
  * ci_low / ci_high = 95% percentile bootstrap interval of e_conv, two-way ("crossed") resampling:
    each replicate draws the D documents with replacement AND, independently, the units with
    replacement -- the Q = S(S-1)/2 unordered seed pairs for "seeds" (an unordered pair {i,j} is one
    unit whose per-token value is (KL(i||j)+KL(j||i))/2, since both directions come from the same two
    models), or the S seeds for the baselines. The replicate statistic is the token-weighted mean
    sum_d w_d sum_u v_u K[d,c,u] / (sum_d w_d n[d,c] * sum_u v_u), with K[d,c,u] the KL sum of unit u
    over the tokens of document d in category c, n[d,c] their count, w/v the multiplicities drawn.
    Only the (D x C x U) sums enter, so 1000 replicates cost a few small matrix products.
    One document: only units are resampled (multiplicity 1 always); S = 2: one pair, so only documents
    vary. Seed pairs share seeds, so resampling them as independent units understates the seed
    part of the variance somewhat; the interval is a guide, not a test.
    Draws use numpy's default_rng(seed) fresh per (group, metric), so results do not depend on the
    order of groups and equal-shaped groups share resamples (smoother curves across steps).

Categories come from the token meta frame (one row per predicted position; SPEC's token_meta
columns). `final_surprisal_bin` depends on size: when the meta frame has a `size` column, each group
uses the rows of its size. Null categories (e.g. tokens without a PoS tag) are skipped.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Iterable

import numpy as np
import polars as pl

from seedkl_jax.errors import SeedKLError

METRICS = ("seeds", "uniform", "unigram")
CATEGORY_KINDS = ("all", "freq_bin", "upos", "pos_group", "context_upos", "final_surprisal_bin")
SUMMARY_SCHEMA = {
    "size": pl.Utf8, "step": pl.Int64, "metric": pl.Utf8, "category_kind": pl.Utf8,
    "category": pl.Utf8, "n_tokens": pl.Int64, "mean_kl": pl.Float64, "e_conv": pl.Float64,
    "sd": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
}
_UPOS_ORDER = ("NOUN", "PROPN", "VERB", "ADJ", "ADV", "ADP", "AUX", "CCONJ", "DET", "PART", "PRON",
               "SCONJ", "NUM", "INTJ", "PUNCT", "SYM", "X")
_GROUP_ORDER = ("function", "content", "other")


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
    first), UPOS in UD's order (content classes first), pos_group as function, content, other."""
    labels = list(dict.fromkeys(str(x) for x in labels))
    if kind in ("upos", "context_upos", "pos_group"):
        fixed = _GROUP_ORDER if kind == "pos_group" else _UPOS_ORDER
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
    for k in ("surprisal", "entropy", "kl_uniform", "kl_unigram"):
        if k in a and np.shape(a[k]) != (P, S):
            raise SeedKLError(f"group {group.size}@{group.step}: {k} has shape {np.shape(a[k])}, expected "
                              f"{(P, S)}; pass compare() output unchanged")
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
    seed means of surprisal, entropy, kl_uniform, kl_unigram (null when the kernel gave none)."""
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
    return pl.DataFrame(cols)


def pair_rows(group: GroupResult) -> pl.DataFrame:
    """Rows of pairs.parquet: per ordered seed pair (seed_a, seed_b), a != b, the mean KL(a||b) over positions."""
    P, S = _check_group(group)
    kl = np.asarray(group.arrays["kl"], dtype=np.float64)
    ia, ib = np.nonzero(~np.eye(S, dtype=bool))
    named = any(isinstance(s, str) for s in group.seeds)  # named seeds (study/suite.py): a text column
    seeds = np.asarray([str(s) for s in group.seeds]) if named else np.asarray(group.seeds, dtype=np.int64)
    return pl.DataFrame({
        "size": pl.Series([group.size] * len(ia), dtype=pl.Utf8),
        "step": pl.Series([int(group.step)] * len(ia), dtype=pl.Int64),
        "seed_a": pl.Series(seeds[ia], dtype=pl.Utf8 if named else pl.Int64),
        "seed_b": pl.Series(seeds[ib], dtype=pl.Utf8 if named else pl.Int64),
        "kl_mean": pl.Series(kl.mean(0)[ia, ib], dtype=pl.Float64),
    })


# ----------------------------------------------------------------------------------------- summary
def _units(group: GroupResult, metric: str) -> np.ndarray | None:
    """Per-token values of the resampling units [P, U] (float64), None when the metric is absent."""
    a = group.arrays
    if metric == "seeds":
        kl = np.asarray(a["kl"], dtype=np.float64)
        i, j = np.triu_indices(kl.shape[1], k=1)
        return 0.5 * (kl[:, i, j] + kl[:, j, i])                   # [P, Q] unordered pairs
    key = {"uniform": "kl_uniform", "unigram": "kl_unigram"}[metric]
    return None if a.get(key) is None else np.asarray(a[key], dtype=np.float64)


def _size_layout(meta: pl.DataFrame) -> dict:
    """Per size meta preprocessing shared by all its steps: document index and category codes."""
    doc = meta["doc_id"] if "doc_id" in meta.columns else pl.Series([0] * meta.height)
    doc = doc.fill_null(-1).to_numpy()
    _, doc_idx = np.unique(doc, return_inverse=True)
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
    return {"doc": doc_idx.astype(np.int64), "D": int(doc_idx.max()) + 1 if len(doc_idx) else 1, "kinds": kinds}


def _bootstrap_kind(vals, doc, D, codes, C, W, V):
    """Point estimates and bootstrap replicates of mean KL for one category kind.

    vals [P,U] unit values, doc [P] in 0..D-1, codes [P] in -1..C-1 (-1 skipped),
    W [B,D] document multiplicities, V [B,U] unit multiplicities.
    Returns n [C], mean [C], sd [C], reps [B,C] (nan where a replicate drew no token of c).
    """
    ok = codes >= 0
    v, d, c = vals[ok], doc[ok], codes[ok]
    U = vals.shape[1]
    flat = d * C + c
    counts = np.bincount(flat, minlength=D * C).reshape(D, C).astype(np.float64)
    sums = np.stack([np.bincount(flat, weights=v[:, u], minlength=D * C) for u in range(U)], -1)
    sums = sums.reshape(D, C, U)
    n = counts.sum(0)
    tm = v.mean(1)                                                 # per-token unit mean
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums.sum((0, 2)) / (n * U)
        sd = np.sqrt(np.bincount(c, weights=(tm - mean[c]) ** 2, minlength=C) / n)
        num = ((W @ sums.reshape(D, C * U)).reshape(-1, C, U) * V[:, None, :]).sum(-1)
        den = (W @ counts) * V.sum(1, keepdims=True)
        reps = num / den
    return n, mean, sd, reps


def _percentile_ci(reps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2.5 / 97.5 percentiles per column of reps [B,C], ignoring nan draws (nan when all are)."""
    lo, hi = np.full(reps.shape[1], np.nan), np.full(reps.shape[1], np.nan)
    full = np.isfinite(reps).all(0)
    if full.any():                                   # fast path: np.nanpercentile is slow per column
        lo[full], hi[full] = np.percentile(reps[:, full], [2.5, 97.5], axis=0)
    for c in np.flatnonzero(~full & np.isfinite(reps).any(0)):
        lo[c], hi[c] = np.nanpercentile(reps[:, c], [2.5, 97.5])
    return lo, hi


def summarize(groups: list[GroupResult], meta: pl.DataFrame, n_boot: int = 1000, seed: int = 0) -> pl.DataFrame:
    """summary.parquet: one row per (size, step, metric, category_kind, category); see module docstring
    for mean_kl, e_conv, sd and the bootstrap behind ci_low / ci_high (of e_conv)."""
    if n_boot < 1:
        raise SeedKLError(f"n_boot={n_boot}: must be >= 1; use ~1000 for a 95% interval")
    seen = set()
    for g in groups:
        if (g.size, int(g.step)) in seen:
            raise SeedKLError(f"groups: ({g.size!r}, step {g.step}) given twice; pass each group once")
        seen.add((g.size, int(g.step)))
    sizes = list(dict.fromkeys(g.size for g in groups))
    ordered = sorted(groups, key=lambda g: (sizes.index(g.size), int(g.step)))
    layouts: dict[str, dict] = {}
    out = {k: [] for k in SUMMARY_SCHEMA}
    for g in ordered:
        P, _ = _check_group(g)
        if g.size not in layouts:
            layouts[g.size] = _size_layout(_meta_for(meta, g.size, P))
        lay = layouts[g.size]
        if len(lay["doc"]) != P:
            raise SeedKLError(f"group {g.size}@{g.step}: P={P} positions, other steps of this size have "
                              f"{len(lay['doc'])}; score every step on the same text")
        for metric in METRICS:
            vals = _units(g, metric)
            if vals is None:
                continue
            rng = np.random.default_rng(seed)
            D, U = lay["D"], vals.shape[1]
            W = rng.multinomial(D, np.full(D, 1.0 / D), size=n_boot).astype(np.float64)
            V = rng.multinomial(U, np.full(U, 1.0 / U), size=n_boot).astype(np.float64)
            for kind, (codes, labels) in lay["kinds"].items():
                n, mean, sd, reps = _bootstrap_kind(vals, lay["doc"], D, codes, len(labels), W, V)
                lo, hi = _percentile_ci(reps)
                for ci, lab in enumerate(labels):
                    if n[ci] == 0:
                        continue
                    out["size"].append(g.size); out["step"].append(int(g.step)); out["metric"].append(metric)
                    out["category_kind"].append(kind); out["category"].append(lab)
                    out["n_tokens"].append(int(n[ci])); out["mean_kl"].append(float(mean[ci]))
                    out["e_conv"].append(-float(mean[ci])); out["sd"].append(float(sd[ci]))
                    out["ci_low"].append(None if np.isnan(hi[ci]) else -float(hi[ci]))
                    out["ci_high"].append(None if np.isnan(lo[ci]) else -float(lo[ci]))
    return pl.DataFrame(out, schema=SUMMARY_SCHEMA)
