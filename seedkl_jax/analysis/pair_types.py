"""E[conv] per pair type: which of the runs' random factors (weight init, data order, ...) differ in a pair.

Why: a seed usually sets both the initialisation and the data order, so the KL between two seeds mixes
the two sources. When the runs decouple them (PolyPythias' pythia-160m-data-seed{1,2,3} vary only the
data order, -weight-seed{1,2,3} only the init; `seedkl demo`'s trainer with separate init and data
seeds), a table seed -> {factor: value} (Suite.seed_factors, `--seed_factors=FILE`) sorts every ordered
pair by what differs, and the KL of each kind of pair says how much each source contributes over training.

Definitions (pair_types.parquet, one row per (size, step, pair_type)):
  pair_type   the factors whose values differ between seeds a and b, '+'-joined in a fixed order that
              does not depend on the file's key order: "init", "data" first (the issue's names), any
              other factor after them alphabetically -- "init", "data", "init+data" for {init, data};
              "none" when two seeds agree on every factor (the same run twice).
  n_pairs     ordered pairs (a, b), a != b, of that type; n_tokens: positions (every predicted one).
  mean_kl     mean of KL(p_a || p_b) over the type's ordered pairs and all positions (nats);
  e_conv      = -mean_kl.
  sd_pairs    sample SD (ddof=1) over the type's ordered pairs of their mean over positions (null for one pair).
  ci_low/high 95% percentile bootstrap interval of e_conv with analysis/bootstrap.py's draws for this
              group's documents and seeds (the same draws as summary.parquet): a replicate weights pair
              (a, b) of the type by V_a·V_b (pairs among the drawn seeds) and documents by W_d; a replicate
              that draws no pair of the type is left out of the percentiles.
"""
from __future__ import annotations

import numpy as np
import polars as pl

from seedkl_jax.analysis import bootstrap as bs
from seedkl_jax.analysis.aggregate import GroupResult, _check_group, _meta_for, _num, doc_index
from seedkl_jax.errors import SeedKLError

SCHEMA = {"size": pl.Utf8, "step": pl.Int64, "pair_type": pl.Utf8, "n_pairs": pl.Int64, "n_tokens": pl.Int64,
          "mean_kl": pl.Float64, "e_conv": pl.Float64, "sd_pairs": pl.Float64, "ci_low": pl.Float64,
          "ci_high": pl.Float64}
NONE = "none"
FIRST = ("init", "data")  # the usual factors, in the order their combination is named ("init+data")


def factor_order(names) -> list[str]:
    """Factor names in pair-type order: FIRST, then the rest alphabetically."""
    names = set(names)
    return [n for n in FIRST if n in names] + sorted(names - set(FIRST))


def pair_types(seeds: list, factors: dict) -> list[str]:
    """The type of every ordered pair a != b of `seeds`, in bootstrap.ordered_pairs' order."""
    missing = [s for s in seeds if s not in factors]
    if missing:
        raise SeedKLError(f"seed factors: no entry for seed(s) {missing}; give every compared seed its factors")
    names = factor_order(factors[seeds[0]])
    a, b = np.nonzero(~np.eye(len(seeds), dtype=bool))
    out = []
    for i, j in zip(a, b):
        fa, fb = factors[seeds[i]], factors[seeds[j]]
        diff = [n for n in names if fa.get(n) != fb.get(n)]
        out.append("+".join(diff) or NONE)
    return out


def type_order(types, names=()) -> list[str]:
    """Display order: fewer differing factors first ("none", single factors, then combinations), then by
    the factors' order in `names` (factor_order), then as met."""
    seen = list(dict.fromkeys(types))
    rank = {n: i for i, n in enumerate(names)}
    return sorted(seen, key=lambda t: (0 if t == NONE else t.count("+") + 1,
                                       [rank.get(f, len(rank)) for f in t.split("+")], seen.index(t)))


def pair_type_rows(groups: list[GroupResult], meta: pl.DataFrame, factors: dict, *, n_boot: int = 1000,
                   seed: int = 0) -> pl.DataFrame:
    """pair_types.parquet (module docstring) for every group; meta: the token meta (doc_id, per size)."""
    out = {k: [] for k in SCHEMA}
    docs: dict[str, tuple[np.ndarray, int]] = {}
    for g in groups:
        P, S = _check_group(g)
        if g.size not in docs:
            docs[g.size] = doc_index(_meta_for(meta, g.size, P))  # the summary's document numbering
        doc, D = docs[g.size]
        vals = bs.ordered_pairs(g.arrays["kl"])                                    # [P, U]
        counts, sums = bs.category_sums(vals, doc, D, np.zeros(P, np.int64), 1)    # [D,1], [D,1,U]
        dr = bs.draws(D, S, n_boot, seed)
        Vu = dr.unit_weights(pairs=True)                                           # [B, U]
        types = np.asarray(pair_types(list(g.seeds), factors))
        unit_means = vals.mean(0)
        for t in type_order(types.tolist(), factor_order(factors[g.seeds[0]])):
            mask = types == t
            reps = bs.replicates(counts, sums, dr.W, Vu * mask)[:, 0]
            lo, hi = bs.percentile_ci(reps)
            mean = float(unit_means[mask].mean())
            row = {"size": g.size, "step": int(g.step), "pair_type": t, "n_pairs": int(mask.sum()),
                   "n_tokens": P, "mean_kl": mean, "e_conv": -mean,
                   "sd_pairs": _num(unit_means[mask].std(ddof=1)) if mask.sum() > 1 else None,
                   "ci_low": _num(-hi[0]), "ci_high": _num(-lo[0])}
            for k, v in row.items():
                out[k].append(v)
    return pl.DataFrame(out, schema=SCHEMA)
