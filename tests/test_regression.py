"""analysis.regression and analysis.divergent: checked against explicit least squares / numpy."""
import numpy as np
import polars as pl
import pytest

from seedkl_jax.analysis.aggregate import GroupResult
from seedkl_jax.analysis.divergent import divergent_tokens
from seedkl_jax.analysis.regression import design, regression

TAGS = ["NN", "DT", "JJ", "IN", None]


def _suite(rng, P=120, S=3, sizes=("14m", "70m"), steps=(0, 8)):
    tag = [TAGS[i] for i in rng.integers(0, len(TAGS), P)]
    count = rng.integers(0, 10**6, P)
    meta = pl.DataFrame({"position": np.arange(1, P + 1), "token_id": rng.integers(0, 15, P),
                         "token_str": [f"t{i}" for i in range(P)], "doc_id": np.arange(P) // 12,
                         "count": count, "xpos": tag, "context_xpos": [None] + tag[:-1]})
    groups = []
    for si, size in enumerate(sizes):
        for st in steps:
            level = 0.05 + 0.01 * np.log10(np.maximum(count, 1)) * (1 + st / 8) + 0.02 * si
            kl = level[:, None, None] * rng.lognormal(0, 0.3, (P, S, S))
            kl[:, np.arange(S), np.arange(S)] = 0
            groups.append(GroupResult(size, st, list(range(S)), {"kl": kl.astype(np.float32)}))
    return groups, meta


def test_log_frequency_coefficient_equals_plain_least_squares_under_another_coding():
    rng = np.random.default_rng(0)
    groups, meta = _suite(rng)
    reg = regression(groups, meta, n_boot=50)
    X, names, refs, _ = design(meta, ["14m", "70m"])
    assert np.linalg.matrix_rank(X) == X.shape[1]                        # full rank, unlike the paper's
    assert refs["size"] == "size=14m" and refs["pos"].startswith("xpos=")
    S = 3
    a, b = np.nonzero(~np.eye(S, dtype=bool))
    for step in (0, 8):
        # explicit rows: size x token x ordered pair, coded differently: no intercept, every target-PoS
        # level, context PoS and size dummies against their *last* level
        rows_x, rows_y = [], []
        tgt = ["untagged" if t is None else t for t in meta["xpos"].to_list()]
        ctx = ["untagged" if t is None else t for t in meta["context_xpos"].to_list()]
        levels, c_levels = sorted(set(tgt)), sorted(set(ctx))
        for si, g in enumerate(g for g in groups if g.step == step):
            for p in range(meta.height):
                x = [np.log10(max(meta["count"][p], 1))] + [float(tgt[p] == lv) for lv in levels]
                x += [float(ctx[p] == lv) for lv in c_levels[:-1]] + [float(si == 0)]
                for i, j in zip(a, b):
                    rows_x.append(x)
                    rows_y.append(float(g.arrays["kl"][p, i, j]))
        coef = np.linalg.lstsq(np.array(rows_x), np.array(rows_y), rcond=None)[0]
        r = reg.filter((pl.col("step") == step) & (pl.col("term") == "log10_count")).row(0, named=True)
        assert r["coef"] == pytest.approx(coef[0], rel=1e-6)
        assert r["n_rows"] == len(rows_y) and r["ci_low"] < r["coef"] < r["ci_high"]
    sz = reg.filter(pl.col("term") == "size=70m")
    assert sz["coef"].to_list() == pytest.approx([0.02, 0.02], abs=0.006)   # the planted size effect
    assert set(sz["reference"]) == {"size=14m"}


def test_divergent_tokens_match_numpy():
    rng = np.random.default_rng(1)
    groups, meta = _suite(rng, steps=(0, 8))
    d = divergent_tokens(groups, meta, top=3, min_occurrences=3, n_boot=50)
    assert set(d["step"]) == {8} and d.height == 2 * 2 * 3
    g = [g for g in groups if g.size == "70m" and g.step == 8][0]
    tok = g.arrays["kl"].astype(np.float64).sum((1, 2)) / 6
    ids = meta["token_id"].to_numpy()
    means = {t: tok[ids == t].mean() for t in np.unique(ids) if (ids == t).sum() >= 3}
    most = sorted(means, key=lambda t: -means[t])[:3]
    got = d.filter((pl.col("size") == "70m") & (pl.col("end") == "most")).sort("rank")
    assert got["token_id"].to_list() == most
    assert got["e_conv"].to_list() == pytest.approx([-means[t] for t in most], rel=1e-6)
    assert got["occurrences"].to_list() == [int((ids == t).sum()) for t in most]
    least = d.filter((pl.col("size") == "70m") & (pl.col("end") == "least")).sort("rank")
    assert least["token_id"][0] == min(means, key=means.get)                # lowest KL = least divergent
    assert (least["ci_low"] <= least["e_conv"]).all() and (least["e_conv"] <= least["ci_high"]).all()


def test_aliased_levels_are_dropped_not_a_rank_deficient_fit():
    from seedkl_jax.analysis.regression import independent_columns
    rng = np.random.default_rng(2)
    groups, meta = _suite(rng, steps=(0,))
    # make the context tag "IN" coincide with the target tag "JJ" (a collinear pair of indicators)
    tgt = meta["xpos"].to_list()
    ctx = ["IN" if t == "JJ" else ("NN" if c == "IN" else c) for t, c in zip(tgt, meta["context_xpos"].to_list())]
    meta = meta.with_columns(pl.Series("context_xpos", ctx))
    X, names, _, _ = design(meta, ["14m", "70m"])
    keep = independent_columns(X)
    assert len(keep) == X.shape[1] - 1 and np.linalg.matrix_rank(X[:, keep]) == len(keep)
    reg = regression(groups, meta, n_boot=20)
    al = reg.filter(pl.col("reference") == "aliased")
    assert al.height == 1 and al["term"][0].startswith("context_pos=") and al["coef"].null_count() == 1
    assert reg.filter(pl.col("term") == "log10_count")["coef"].is_finite().all()


def test_size_reference_follows_the_given_order():
    """sizes=[...] (seedkl analyze --sizes) names the reference level; the default orders by parameter count."""
    rng = np.random.default_rng(3)
    groups, meta = _suite(rng, sizes=("70m", "14m"))
    assert set(regression(groups, meta, n_boot=20).filter(pl.col("term").str.starts_with("size="))["reference"]) \
        == {"size=14m"}
    flipped = regression(groups, meta, n_boot=20, sizes=["70m", "14m"])
    sz = flipped.filter(pl.col("term") == "size=14m")
    assert set(sz["reference"]) == {"size=70m"}
    assert sz["coef"].to_list() == pytest.approx([0.02, 0.02], abs=0.006)   # _suite plants +0.02 on its 2nd size (14m)


def test_word_position_enters_as_a_factor_with_its_planted_effect():
    """word_position (issue 20) is one more one-hot factor: its coefficient recovers a planted shift of the
    'inside' targets against the most frequent level ('begin'), and the other terms still fit."""
    rng = np.random.default_rng(3)
    groups, meta = _suite(rng, P=240)
    word = [("begin", "begin", "inside", None)[i] for i in rng.integers(0, 4, meta.height)]
    meta = meta.with_columns(pl.Series("word_position", word, dtype=pl.Utf8))
    shift = np.array([0.03 if w == "inside" else 0.0 for w in word], np.float32)
    for g in groups:
        kl = g.arrays["kl"] + shift[:, None, None]
        kl[:, np.arange(3), np.arange(3)] = 0
        g.arrays["kl"] = kl
    _, names, refs, _ = design(meta, ["14m", "70m"])
    assert refs["word_position"] == "word_position=begin"
    assert {"word_position=inside", "word_position=none"} <= set(names)
    reg = regression(groups, meta, n_boot=50)
    w = reg.filter(pl.col("term") == "word_position=inside")
    assert w["coef"].to_list() == pytest.approx([0.03, 0.03], abs=0.01)
    assert set(w["reference"]) == {"word_position=begin"}
    nw = reg.filter(pl.col("term") == "word_position=none")
    assert all(abs(c) < 0.015 for c in nw["coef"].to_list())
    # without the column the design is the paper's (no word-position terms)
    assert not any(n.startswith("word_position") for n in design(meta.drop("word_position"), ["14m"])[1])
