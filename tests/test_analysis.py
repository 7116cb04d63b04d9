"""analysis.aggregate: token/pair rows and the bootstrap summary, checked against plain numpy."""
import numpy as np
import polars as pl
import pytest

from seedkl_jax.analysis import aggregate as agg
from seedkl_jax.analysis.aggregate import GroupResult, pair_rows, summarize, token_rows
from seedkl_jax.errors import SeedKLError


def _kl(rng, P, S, scale=None):
    kl = rng.lognormal(-3, 0.7, (P, S, S)) * (1 if scale is None else scale[:, None, None])
    kl[:, np.arange(S), np.arange(S)] = 0
    return kl.astype(np.float32)


def _meta(P, docs, size=None, rng=None, null_every=5):
    rng = rng or np.random.default_rng(0)
    upos = [None if p % null_every == 0 else ("DET" if p % 2 else "NOUN") for p in range(P)]
    cols = {"position": np.arange(1, P + 1), "token_id": rng.integers(0, 50, P), "doc_id": docs,
            "freq_bin": [["<10", "[10,100)", "100+"][p % 3] for p in range(P)], "upos": upos,
            "pos_group": [None if u is None else ("function" if u == "DET" else "content") for u in upos],
            "context_upos": [None] + upos[:-1], "final_surprisal_bin": [["[0,1)", "8+"][p % 2] for p in range(P)]}
    if size is not None:
        cols["size"] = [size] * P
    return pl.DataFrame(cols)


def _group(rng, P, S, size="s", step=0, scale=None, unigram=True):
    arrays = {"kl": _kl(rng, P, S, scale), "surprisal": rng.random((P, S), np.float32),
              "entropy": rng.random((P, S), np.float32), "kl_uniform": rng.random((P, S), np.float32)}
    if unigram:
        arrays["kl_unigram"] = rng.random((P, S), np.float32)
    return GroupResult(size=size, step=step, seeds=list(range(10, 10 + S)), arrays=arrays)


def test_token_rows_match_numpy():
    rng = np.random.default_rng(1)
    P, S = 23, 4
    g = _group(rng, P, S, unigram=False)
    meta = pl.concat([_meta(P, np.zeros(P, int), "other", rng), _meta(P, np.zeros(P, int), "s", rng)])
    t = token_rows(g, meta.sample(fraction=1.0, shuffle=True, seed=3))   # order of meta rows must not matter
    assert t.columns == ["size", "step", "position", "token_id", "kl_mean", "kl_std", "surprisal_mean",
                         "entropy_mean", "kl_uniform_mean", "kl_unigram_mean"]
    kl = g.arrays["kl"].astype(np.float64)
    vals = np.array([[kl[p, i, j] for i in range(S) for j in range(S) if i != j] for p in range(P)])
    np.testing.assert_allclose(t["kl_mean"].to_numpy(), vals.mean(1), rtol=1e-6)
    np.testing.assert_allclose(t["kl_std"].to_numpy(), vals.std(1), rtol=1e-5)
    np.testing.assert_allclose(t["surprisal_mean"].to_numpy(), g.arrays["surprisal"].mean(1), rtol=1e-6)
    assert t["position"].to_list() == list(range(1, P + 1))
    own = meta.filter(pl.col("size") == "s").sort("position")
    assert t["token_id"].to_list() == own["token_id"].to_list()
    assert t["kl_unigram_mean"].null_count() == P


def test_pair_rows():
    rng = np.random.default_rng(2)
    g = _group(rng, 17, 3)
    r = pair_rows(g)
    assert r.height == 6 and set(zip(r["seed_a"], r["seed_b"])) == {(a, b) for a in (10, 11, 12) for b in (10, 11, 12) if a != b}
    for row in r.iter_rows(named=True):
        i, j = row["seed_a"] - 10, row["seed_b"] - 10
        assert row["kl_mean"] == pytest.approx(g.arrays["kl"][:, i, j].astype(np.float64).mean(), rel=1e-9)


def test_summary_points_match_hand_computation():
    rng = np.random.default_rng(3)
    P, S = 40, 3
    docs = np.repeat(np.arange(4), 10)
    g = _group(rng, P, S)
    meta = _meta(P, docs)
    s = summarize([g], meta, n_boot=200)
    assert s.columns == list(agg.SUMMARY_SCHEMA)
    kl = g.arrays["kl"].astype(np.float64)
    tok = kl.sum((1, 2)) / (S * (S - 1))                          # per-token mean over ordered pairs
    row = s.filter((pl.col("metric") == "seeds") & (pl.col("category_kind") == "all")).row(0, named=True)
    assert row["n_tokens"] == P
    assert row["e_conv"] == pytest.approx(-tok.mean(), rel=1e-9)
    assert row["mean_kl"] == pytest.approx(tok.mean(), rel=1e-9)
    assert row["sd_tokens"] == pytest.approx(tok.std(ddof=1), rel=1e-9)
    # a category: UPOS NOUN (nulls skipped)
    upos = meta["upos"].to_list()
    m = np.array([u == "NOUN" for u in upos])
    r = s.filter((pl.col("metric") == "seeds") & (pl.col("category") == "NOUN") & (pl.col("category_kind") == "upos")).row(0, named=True)
    assert r["n_tokens"] == m.sum() and r["e_conv"] == pytest.approx(-tok[m].mean(), rel=1e-9)
    n_upos = s.filter((pl.col("metric") == "seeds") & (pl.col("category_kind") == "upos"))["n_tokens"].sum()
    assert n_upos == sum(u is not None for u in upos)
    # baselines: mean over tokens and seeds
    for metric, key in (("uniform", "kl_uniform"), ("unigram", "kl_unigram")):
        r = s.filter((pl.col("metric") == metric) & (pl.col("category_kind") == "all")).row(0, named=True)
        assert r["e_conv"] == pytest.approx(-g.arrays[key].astype(np.float64).mean(), rel=1e-6)
    # every point estimate lies inside its own CI
    ok = s.filter(pl.col("ci_low").is_not_null())
    assert ok.height == s.height
    assert ((ok["ci_low"] <= ok["e_conv"] + 1e-12) & (ok["e_conv"] <= ok["ci_high"] + 1e-12)).all()
    # category order: numeric bins ascending, '8+' last
    assert s.filter((pl.col("category_kind") == "final_surprisal_bin") & (pl.col("metric") == "seeds"))["category"].to_list() == ["[0,1)", "8+"]


def test_sd_pairs_equal_pandas_style_computation_from_pair_level_rows():
    """sd_pairs = ddof=1 SD over ordered pairs of each pair's mean over the category's tokens,
    recomputed from a long pair-level frame (position, seed_a, seed_b, kl) with polars group-bys."""
    rng = np.random.default_rng(11)
    P, S = 37, 4
    g = _group(rng, P, S)
    meta = _meta(P, np.arange(P) // 8)
    s = summarize([g], meta, n_boot=50)
    a, b = np.nonzero(~np.eye(S, dtype=bool))
    long = pl.DataFrame({"position": np.repeat(np.arange(1, P + 1), len(a)), "seed_a": np.tile(a, P),
                         "seed_b": np.tile(b, P), "kl": g.arrays["kl"][:, a, b].astype(np.float64).ravel()})
    long = long.join(meta.select("position", "upos"), on="position")
    for cat in ("NOUN", "DET"):
        per_pair = long.filter(pl.col("upos") == cat).group_by("seed_a", "seed_b").agg(pl.col("kl").mean())
        row = s.filter((pl.col("metric") == "seeds") & (pl.col("category") == cat)).row(0, named=True)
        assert row["sd_pairs"] == pytest.approx(per_pair["kl"].std(ddof=1), rel=1e-9)
        assert row["mean_kl"] == pytest.approx(per_pair["kl"].mean(), rel=1e-9)
    # per-seed metrics: SD over seeds of their means; surprisal rows hold the mean surprisal
    r = s.filter((pl.col("metric") == "surprisal") & (pl.col("category_kind") == "all")).row(0, named=True)
    sur = g.arrays["surprisal"].astype(np.float64)
    assert r["mean_kl"] == pytest.approx(sur.mean(), rel=1e-6)
    assert r["sd_pairs"] == pytest.approx(sur.mean(0).std(ddof=1), rel=1e-6)
    kinds = set(s.filter(pl.col("metric") == "surprisal")["category_kind"])
    assert kinds == set(s.filter(pl.col("metric") == "seeds")["category_kind"])


def test_bootstrap_replicates_equal_explicit_resampling():
    """The vectorised replicate = the mean over an explicitly expanded resample: the drawn documents
    x the ordered pairs among the drawn seeds (never a seed with itself)."""
    from seedkl_jax.analysis import bootstrap as bs
    rng = np.random.default_rng(4)
    P, D, S, C, B = 30, 5, 3, 2, 12
    kl = _kl(rng, P, S)
    doc = rng.integers(0, D, P)
    codes = rng.integers(-1, C, P)
    dr = bs.draws(D, S, B, seed=3)
    st = agg.category_stats(bs.ordered_pairs(kl), doc, D, codes, C, dr, pairs=True)
    for b in range(B):
        docs = np.repeat(np.arange(D), dr.W[b].astype(int))
        seeds = np.repeat(np.arange(S), dr.V[b].astype(int))
        pairs = [(i, j) for i in seeds for j in seeds if i != j]
        for c in range(C):
            x = [kl[p, i, j] for d in docs for p in np.flatnonzero((doc == d) & (codes == c)) for i, j in pairs]
            if x:
                assert st["reps"][b, c] == pytest.approx(np.mean(x), rel=1e-6)
            else:
                assert np.isnan(st["reps"][b, c])
    assert np.isnan(st["reps"]).any()                                 # some draw has one distinct seed


def test_planted_seed_effect_widens_the_seed_bootstrap_ci():
    """One seed far from the others (its pairs' KL x4): resampling seeds must see it, so the CI widens
    compared with the same data without the outlier seed effect."""
    rng = np.random.default_rng(12)
    P, S, D = 200, 5, 20
    base = _kl(rng, P, S)
    meta = _meta(P, np.arange(P) // 10)
    planted = base.copy()
    planted[:, 0, :] *= 4
    planted[:, :, 0] *= 4
    widths = []
    for kl in (base, planted):
        g = GroupResult("s", 0, list(range(S)), {"kl": kl})
        r = summarize([g], meta, n_boot=400).filter(pl.col("category_kind") == "all").row(0, named=True)
        widths.append((r["ci_high"] - r["ci_low"]) / abs(r["e_conv"]))
    assert widths[1] > 2 * widths[0], widths


def test_replicates_are_paired_across_groups():
    rng = np.random.default_rng(13)
    P = 60
    meta = _meta(P, np.arange(P) // 6)
    g1, g2 = _group(rng, P, 4, step=0), _group(rng, P, 4, step=1)
    g2.arrays["kl"] = g1.arrays["kl"] * 1.5
    reps = {}
    summarize([g1, g2], meta, n_boot=100, replicates=reps)
    a, b = reps[("s", 0, "seeds", "all", "all")], reps[("s", 1, "seeds", "all", "all")]
    np.testing.assert_allclose(b, 1.5 * a, rtol=1e-5)                # same draws: exactly proportional
    assert ("s", 0, "uniform", "all", "all") not in reps              # only `keep` metrics are kept


def _clustered(rng, D, per_doc, S):
    """Documents with their own KL level, so the document part of the CI is what varies."""
    P = D * per_doc
    docs = np.repeat(np.arange(D), per_doc)
    scale = np.exp(0.6 * rng.permutation(np.linspace(-1.5, 1.5, D)))[docs]     # same spread for any D
    return _group(rng, P, S, scale=scale), _meta(P, docs)


def test_ci_shrinks_with_more_documents():
    rng = np.random.default_rng(5)
    widths = []
    for D in (4, 64):
        g, meta = _clustered(rng, D, 20, 4)
        r = summarize([g], meta, n_boot=500).filter((pl.col("metric") == "seeds") & (pl.col("category_kind") == "all")).row(0, named=True)
        assert r["ci_low"] <= r["e_conv"] <= r["ci_high"]
        widths.append((r["ci_high"] - r["ci_low"]) / abs(r["e_conv"]))
    assert widths[1] < 0.5 * widths[0]                                # ~1/4 expected (16x the documents)


def test_one_document_and_two_seeds():
    rng = np.random.default_rng(6)
    P = 50
    one_doc = _meta(P, np.zeros(P, int))
    s = summarize([_group(rng, P, 4)], one_doc, n_boot=300)
    r = s.filter((pl.col("metric") == "seeds") & (pl.col("category_kind") == "all")).row(0, named=True)
    assert r["ci_low"] < r["e_conv"] < r["ci_high"]                  # seeds alone still vary
    # S=2 and one document: nothing to resample -> the interval is the point
    s2 = summarize([_group(rng, P, 2)], one_doc, n_boot=300)
    r2 = s2.filter((pl.col("metric") == "seeds") & (pl.col("category_kind") == "all")).row(0, named=True)
    assert r2["ci_low"] == pytest.approx(r2["e_conv"]) and r2["ci_high"] == pytest.approx(r2["e_conv"])
    # S=2 with several documents: documents vary
    s3 = summarize([_group(rng, P, 2)], _meta(P, np.arange(P) // 10), n_boot=300)
    r3 = s3.filter((pl.col("metric") == "seeds") & (pl.col("category_kind") == "all")).row(0, named=True)
    assert r3["ci_high"] - r3["ci_low"] > 0


def test_summary_deterministic_and_multi_group():
    rng = np.random.default_rng(7)
    P = 30
    meta = pl.concat([_meta(P, np.arange(P) // 6, size) for size in ("70m", "14m")])
    groups = [_group(rng, P, 3, size=size, step=st) for size in ("70m", "14m") for st in (8, 0, 2)]
    a = summarize(groups, meta, n_boot=100, seed=1)
    b = summarize(groups[::-1], meta, n_boot=100, seed=1)
    c = summarize(groups, meta, n_boot=100, seed=2)
    assert a.sort(["size", "step", "metric", "category_kind", "category"]).equals(
        b.sort(["size", "step", "metric", "category_kind", "category"]))
    assert not a["ci_low"].equals(c["ci_low"])
    assert a["e_conv"].equals(c["e_conv"])
    first = a.filter((pl.col("metric") == "seeds") & (pl.col("category_kind") == "all"))
    # sizes keep the order groups came in, steps ascend within a size
    assert list(zip(first["size"], first["step"])) == [(s, t) for s in ("70m", "14m") for t in (0, 2, 8)]


def test_missing_kinds_and_baselines_are_skipped():
    rng = np.random.default_rng(8)
    P = 20
    meta = pl.DataFrame({"position": np.arange(1, P + 1), "token_id": np.arange(P), "doc_id": np.zeros(P, int)})
    s = summarize([_group(rng, P, 3, unigram=False)], meta, n_boot=50)
    assert set(s["category_kind"]) == {"all"} and set(s["metric"]) == {"seeds", "uniform", "surprisal"}


@pytest.mark.parametrize("bad", ["rows", "seeds", "one_seed", "dup", "batch"])
def test_bad_inputs(bad):
    rng = np.random.default_rng(9)
    P = 12
    meta = _meta(P, np.zeros(P, int))
    g = _group(rng, P, 3)
    groups = [g]
    if bad == "rows":
        meta = meta.head(P - 1)
    elif bad == "seeds":
        g.seeds = [1, 2]
    elif bad == "one_seed":
        g = _group(rng, P, 1)
        groups = [g]
    elif bad == "dup":
        groups = [g, g]
    elif bad == "batch":
        g.arrays["kl"] = g.arrays["kl"][None]
    with pytest.raises(SeedKLError):
        summarize(groups, meta, n_boot=10)


def test_ordering_helpers():
    assert agg.category_order("freq_bin", ["1e4+", "[10,100)", "<10", "[1e3,1e4)", "[100,1e3)"]) == \
        ["<10", "[10,100)", "[100,1e3)", "[1e3,1e4)", "1e4+"]
    assert agg.category_order("final_surprisal_bin", ["8+", "[2,4)", "[0,1)"]) == ["[0,1)", "[2,4)", "8+"]
    assert agg.category_order("pos_group", ["other", "content", "function"]) == ["function", "content", "other"]
    assert agg.size_order(["410m", "14m", "1.4b", "70m"]) == ["14m", "70m", "410m", "1.4b"]
    assert agg.size_order(["large", "small"]) == ["large", "small"]


def test_category_in_one_document_only():
    """Replicates that miss the only document of a category are dropped, not averaged as zeros."""
    rng = np.random.default_rng(10)
    P = 50
    docs = np.arange(P) // 10
    meta = _meta(P, docs).with_columns(
        pl.Series("freq_bin", ["rare" if p < 4 else "[10,100)" for p in range(P)]))
    s = summarize([_group(rng, P, 3)], meta, n_boot=300)
    r = s.filter((pl.col("metric") == "seeds") & (pl.col("category") == "rare")).row(0, named=True)
    assert r["n_tokens"] == 4 and r["ci_low"] is not None
    assert r["ci_low"] <= r["e_conv"] <= r["ci_high"]
    lo, hi = agg.bs.percentile_ci(np.array([[1.0, np.nan, np.nan], [2.0, 3.0, np.nan], [3.0, 5.0, np.nan]]))
    assert lo[0] == pytest.approx(np.percentile([1, 2, 3], 2.5)) and hi[1] == pytest.approx(np.percentile([3, 5], 97.5))
    assert np.isnan(lo[2]) and np.isnan(hi[2])
