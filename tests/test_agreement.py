"""Issue 20 downstream of the kernel: top1_agree / js summary rows, their table columns, topk.parquet,
the agreement figure and report section, and `seedkl analyze`'s optional PAIRS columns, on GroupResults
built by hand (the kernel's own numbers are tested against float64 oracles in tests/test_kernels.py and,
end to end, in tests/test_study.py)."""
import numpy as np
import polars as pl
import pytest

from seedkl_jax.analysis import tables
from seedkl_jax.analysis.aggregate import (GroupResult, pair_position_rows, pair_rows, summarize,
                                           token_rows)
from seedkl_jax.analysis.topk import topk_rows
from seedkl_jax.errors import SeedKLError
from seedkl_jax.report.outputs import write_outputs
from test_analysis import _group, _meta

OLD_FILES = ["divergent_tokens.parquet", "findings.json", "pairs.parquet", "phases.json", "regression.parquet",
             "report.md", "summary.csv", "summary.parquet", "token_meta.parquet", "tokens.parquet"]  # and others'


def _agreement(rng, P, S, K=4, js=True):
    """top1_agree [P,S,S] from random argmaxes (diagonal 1), js [P,S,S] symmetric (diagonal 0), top-k."""
    arg = rng.integers(0, 3, (P, S))
    out = {"top1_agree": (arg[:, :, None] == arg[:, None, :]).astype(np.float32)}
    if js:
        j = rng.random((P, S, S)).astype(np.float32) * 0.5
        j = (j + j.transpose(0, 2, 1)) / 2
        j[:, np.arange(S), np.arange(S)] = 0
        out["js"] = j
    ids = np.stack([rng.permutation(50)[:K] for _ in range(P * S)]).reshape(P, S, K).astype(np.int32)
    out["topk_ids"] = ids
    out["topk_prob"] = -np.sort(-rng.random((P, S, K)), -1).astype(np.float32) / K
    return out


def _groups(rng, P=40, S=3, steps=(0, 4, 16), sizes=("s",), **kw):
    gs = []
    for size in sizes:
        for step in steps:
            g = _group(rng, P, S, size=size, step=step)
            g.arrays.update(_agreement(rng, P, S, **kw))
            gs.append(g)
    return gs


def test_summary_rows_aggregate_like_the_kl_between_seeds():
    """top1_agree and js rows are the "seeds" rows of the same arrays put in kl's place: same tokens,
    pairs, bootstrap; e_conv = +agreement (its CI as is) and -mean JS (as E[conv] = -mean KL)."""
    rng = np.random.default_rng(0)
    P, S = 40, 3
    docs = np.repeat(np.arange(4), 10)
    meta = _meta(P, docs)
    (g,) = _groups(rng, P, S, steps=(0,))
    s = summarize([g], meta, n_boot=100)
    assert {"top1_agree", "js"} <= set(s["metric"])
    for metric in ("top1_agree", "js"):
        as_kl = GroupResult(g.size, g.step, g.seeds, {"kl": g.arrays[metric]})
        ref = summarize([as_kl], meta, n_boot=100).filter(pl.col("metric") == "seeds").drop("metric")
        got = s.filter(pl.col("metric") == metric).drop("metric")
        assert set(got["category_kind"]) == set(ref["category_kind"]) and got.height == ref.height
        for col in ("size", "step", "category_kind", "category", "n_tokens", "mean_kl", "sd_tokens", "sd_pairs"):
            assert got[col].to_list() == ref[col].to_list(), (metric, col)
        if metric == "js":
            assert got["e_conv"].to_list() == ref["e_conv"].to_list()
            assert got["ci_low"].to_list() == ref["ci_low"].to_list()
        else:
            np.testing.assert_array_equal(got["e_conv"], got["mean_kl"])
            np.testing.assert_array_equal(got["ci_low"], -ref["ci_high"])
            np.testing.assert_array_equal(got["ci_high"], -ref["ci_low"])
    row = s.filter((pl.col("metric") == "top1_agree") & (pl.col("category_kind") == "all")).row(0, named=True)
    off = ~np.eye(S, dtype=bool)
    assert row["mean_kl"] == pytest.approx(g.arrays["top1_agree"][:, off].mean(), rel=1e-12)
    assert row["ci_low"] <= row["e_conv"] <= row["ci_high"] and 0 <= row["ci_low"] and row["ci_high"] <= 1
    # without the arrays: no rows, every other row unchanged
    plain = GroupResult(g.size, g.step, g.seeds, {k: v for k, v in g.arrays.items()
                                                  if k not in ("top1_agree", "js")})
    assert summarize([plain], meta, n_boot=100).equals(s.filter(~pl.col("metric").is_in(["top1_agree", "js"])))


def test_table_columns_beside_kl():
    rng = np.random.default_rng(1)
    P, S = 23, 4
    (g,) = _groups(rng, P, S, steps=(0,))
    meta = _meta(P, np.zeros(P, int))
    off = ~np.eye(S, dtype=bool)
    t = token_rows(g, meta)
    np.testing.assert_allclose(t["top1_agree_mean"], g.arrays["top1_agree"][:, off].mean(1), rtol=1e-6)
    np.testing.assert_allclose(t["js_mean"], g.arrays["js"][:, off].mean(1), rtol=1e-6)
    pr = pair_rows(g)
    for r in pr.iter_rows(named=True):
        i, j = r["seed_a"] - 10, r["seed_b"] - 10
        assert r["top1_agree_mean"] == pytest.approx(g.arrays["top1_agree"][:, i, j].mean())
        assert r["js_mean"] == pytest.approx(g.arrays["js"][:, i, j].astype(np.float64).mean())
    pp = pair_position_rows(g)
    assert pp.columns == ["size", "step", "seed_a", "seed_b", "position", "kl", "top1_agree", "js"]
    assert pp["top1_agree"].dtype == pl.Int8 and set(pp["top1_agree"]) <= {0, 1}
    r = pp.filter((pl.col("position") == 5) & (pl.col("seed_a") == 12) & (pl.col("seed_b") == 10)).row(0, named=True)
    assert r["top1_agree"] == g.arrays["top1_agree"][4, 2, 0] and r["js"] == g.arrays["js"][4, 2, 0]
    # a group without them: exactly the old columns
    plain = _group(rng, P, S)
    assert "top1_agree_mean" not in token_rows(plain, meta).columns
    assert pair_rows(plain).columns == ["size", "step", "seed_a", "seed_b", "kl_mean"]
    assert pair_position_rows(plain).columns == ["size", "step", "seed_a", "seed_b", "position", "kl"]


def test_topk_rows():
    rng = np.random.default_rng(2)
    P, S, K = 7, 3, 4
    (g,) = _groups(rng, P, S, K=K, steps=(8,))
    positions = np.arange(1, P + 1) * 10
    t = topk_rows(g, positions)
    assert t.columns == ["size", "step", "seed", "position", "rank", "token_id", "prob"] and t.height == P * S * K
    assert t["token_id"].dtype == pl.Int32 and t["prob"].dtype == pl.Float32 and t["rank"].to_list()[:K] == [1, 2, 3, 4]
    for r in t.sample(20, seed=0).iter_rows(named=True):
        p, s = int(np.flatnonzero(positions == r["position"])[0]), r["seed"] - 10
        assert r["token_id"] == g.arrays["topk_ids"][p, s, r["rank"] - 1]
        assert r["prob"] == g.arrays["topk_prob"][p, s, r["rank"] - 1]
    assert t.equals(t.sort(["seed", "position", "rank"]))
    assert topk_rows(_group(rng, P, S)) is None
    with pytest.raises(SeedKLError, match="topk_prob has shape"):
        bad = dict(g.arrays, topk_prob=g.arrays["topk_prob"][:, :, :2])
        topk_rows(GroupResult(g.size, g.step, g.seeds, bad))


def _meta_sized(P, sizes):
    return pl.concat([_meta(P, np.repeat(np.arange(4), P // 4), size) for size in sizes])


def test_outputs_add_topk_agreement_figure_and_section(tmp_path):
    rng = np.random.default_rng(3)
    P, sizes = 40, ("14m", "70m")
    groups = _groups(rng, P, sizes=sizes)
    report = write_outputs(tmp_path / "new", groups, _meta_sized(P, sizes), n_boot=50, phase_steps=(1, 4, 8))
    files = sorted(p.name for p in (tmp_path / "new").iterdir() if p.is_file())
    assert set(OLD_FILES + ["topk.parquet"]) <= set(files)
    topk = pl.read_parquet(tmp_path / "new" / "topk.parquet")
    assert topk.height == len(groups) * P * 3 * 4
    assert topk.equals(pl.concat([topk_rows(g) for g in groups]))  # meta positions 1..P
    assert (tmp_path / "new" / "figures" / "agreement.png").stat().st_size > 10_000
    text = report.read_text()
    assert "## Agreement between seeds" in text and "](figures/agreement.png)" in text
    assert "14m: top-1 agreement [95% CI]" in text and "70m: JS (nats) [95% CI]" in text
    s = pl.read_parquet(tmp_path / "new" / "summary.parquet")
    r = s.filter((pl.col("metric") == "top1_agree") & (pl.col("category_kind") == "all") & (pl.col("size") == "70m")
                 & (pl.col("step") == 16)).row(0, named=True)
    assert f"| 16 |" in text and f"{r['mean_kl']:.4g} [{r['ci_low']:.3g}, {r['ci_high']:.3g}]" in text
    # the same groups without the new arrays: the old files, no agreement figure or section
    for g in groups:
        for k in ("top1_agree", "js", "topk_ids", "topk_prob"):
            g.arrays.pop(k)
    report = write_outputs(tmp_path / "old", groups, _meta_sized(P, sizes), n_boot=50, phase_steps=(1, 4, 8))
    old_files = sorted(p.name for p in (tmp_path / "old").iterdir() if p.is_file())
    assert sorted(old_files + ["topk.parquet"]) == files
    assert not (tmp_path / "old" / "figures" / "agreement.png").exists()
    assert "Agreement between seeds" not in report.read_text()


def test_top1_only_figure_and_section(tmp_path):
    rng = np.random.default_rng(4)
    groups = _groups(rng, js=False)
    report = write_outputs(tmp_path, groups, _meta_sized(40, ("s",)), n_boot=20)
    text = report.read_text()
    assert "s: top-1 agreement [95% CI]" in text and "JS (nats)" not in text
    assert "js_mean" not in pl.read_parquet(tmp_path / "tokens.parquet").columns


def test_analyze_reads_the_agreement_columns_of_pair_positions():
    """pair_positions.parquet (with top1_agree / js) read back by `seedkl analyze` gives the same arrays."""
    rng = np.random.default_rng(5)
    P = 20
    groups = _groups(rng, P, steps=(0, 4))
    pp = pl.concat([pair_position_rows(g) for g in groups])
    meta = _meta(P, np.repeat(np.arange(4), P // 4))
    t = tables.load_tables(pp, meta)
    for g, back in zip(groups, t.groups):
        for k in ("kl", "top1_agree", "js"):
            np.testing.assert_array_equal(back.arrays[k], g.arrays[k].astype(back.arrays[k].dtype), err_msg=k)
    boolean = pp.with_columns(pl.col("top1_agree").cast(pl.Boolean)).drop("js")
    back = tables.load_tables(boolean, meta).groups[0].arrays
    assert "js" not in back and np.array_equal(back["top1_agree"], groups[0].arrays["top1_agree"])
    # a step without them is fine (nulls = not measured); a partial column, or values not 0/1, are refused
    nulls = pp.with_columns(pl.when(pl.col("step") == 4).then(None).otherwise(pl.col("js")).alias("js"))
    assert [("js" in g.arrays) for g in tables.load_tables(nulls, meta).groups] == [True, False]
    partial = pp.with_columns(pl.when(pl.col("position") == 3).then(None).otherwise(pl.col("js")).alias("js"))
    with pytest.raises(SeedKLError, match="column 'js' has .* null"):
        tables.load_tables(partial, meta)
    with pytest.raises(SeedKLError, match="top1_agree' holds values other than 0/1"):
        tables.load_tables(pp.with_columns(pl.col("top1_agree") * 2), meta)
    with pytest.raises(SeedKLError, match="column 'top1_agree' has dtype"):
        tables.load_tables(pp.with_columns(pl.col("top1_agree").cast(pl.Utf8)), meta)


def test_held_out_seed_is_split_off_every_new_array():
    from seedkl_jax.study.run import _split_held_out

    rng = np.random.default_rng(6)
    P, S = 5, 3
    arrays = {"kl": rng.random((P, S + 1, S + 1)), "surprisal": rng.random((P, S + 1)),
              **_agreement(rng, P, S + 1)}
    out = _split_held_out(arrays, S, "held")
    for k in ("kl", "top1_agree", "js"):
        np.testing.assert_array_equal(out[k], arrays[k][:, :S, :S])
    for k in ("topk_ids", "topk_prob"):
        np.testing.assert_array_equal(out[k], arrays[k][:, :S])
    np.testing.assert_array_equal(out["held"], arrays["surprisal"][:, S])
