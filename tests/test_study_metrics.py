"""Issue 20's metrics end to end on test_study's local suite: --metrics=kl,top1,js and --save_topk in a
run (top1_agree / js columns and summary rows, topk.parquet) against a float64 torch oracle, with a
held-out --surprisal_seed in the last-step groups; the exact old file set with --metrics=kl
--save_topk=0; and a resumed run (one group deleted, one saved without the new arrays) writing the
same files as the uninterrupted one."""
from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from seedkl_jax.study import store
from seedkl_jax.study.run import run_study
from test_study import FINAL_FILES, STEPS, TOKENS_COLS, _cfg, lab, oracle_logp  # noqa: F401 (lab: the fixture)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SEEDS = (1, 2)          # compared; seed 3 is held out (--surprisal_seed) at the last step
K = 3
NEW = ["top1_agree", "js", "topk_ids", "topk_prob"]
COMPARED = ["tokens.parquet", "pairs.parquet", "pair_positions.parquet", "summary.parquet", "topk.parquet",
            "token_meta.parquet"]


def _suite(lab):
    return dataclasses.replace(lab["suite"], sizes=("s1",), seeds=SEEDS)


def _run(lab, out, **kw):
    return run_study(_cfg(lab, out, suite=_suite(lab), surprisal_seed=3, save_pair_positions=True, **kw),
                     progress=False)


@pytest.fixture(scope="module")
def runs(lab):
    root = lab["root"] / "metrics"
    _run(lab, root / "all", metrics=("kl", "top1", "js"), save_topk=K)
    _run(lab, root / "old", metrics=("kl",), save_topk=0)
    return root


def test_agreement_and_topk_match_a_float64_oracle(lab, runs):
    out = runs / "all"
    tokens = pl.read_parquet(out / "tokens.parquet")
    topk = pl.read_parquet(out / "topk.parquet")
    assert topk.columns == ["size", "step", "seed", "position", "rank", "token_id", "prob"]
    P = len(lab["ids"]) - 1
    assert topk.height == len(STEPS) * len(SEEDS) * P * K and set(topk["seed"]) == set(SEEDS)
    for step in (0, max(STEPS)):   # the last step's groups held seed 3 too: split off every array
        logp = oracle_logp(lab, "s1", step, SEEDS)
        p = np.exp(logp)
        arg = logp.argmax(-1)                                                  # [S,P]
        t = tokens.filter(pl.col("step") == step).sort("position")
        top2 = np.sort(p, -1)[..., -2:]
        sure = ((top2[..., 1] - top2[..., 0]) > 1e-5).all(0)                   # no near-tie for the argmax
        assert sure.mean() > 0.9   # (random inits over the real vocab rarely agree: tests/test_kernels* cover 1s)
        np.testing.assert_array_equal(t["top1_agree_mean"].to_numpy()[sure], (arg[0] == arg[1])[sure])
        m = (p[0] + p[1]) / 2
        js = 0.5 * (p[0] * (logp[0] - np.log(m))).sum(-1) + 0.5 * (p[1] * (logp[1] - np.log(m))).sum(-1)
        assert js.max() > 0.01
        np.testing.assert_allclose(t["js_mean"], js, rtol=1e-4, atol=1e-6)
        for s, seed in enumerate(SEEDS):
            k = topk.filter((pl.col("step") == step) & (pl.col("seed") == seed)).sort("position", "rank")
            order = np.argsort(-logp[s], -1, kind="stable")[:, :K]             # [P,K]
            want = np.take_along_axis(p[s], order, -1)
            got_p = k["prob"].to_numpy().reshape(P, K)
            np.testing.assert_allclose(got_p, want, rtol=1e-5, atol=1e-7)
            clear = np.diff(np.concatenate([want, np.sort(p[s], -1)[:, -K - 1:-K]], -1)[:, ::-1], axis=-1)
            clear = (np.abs(clear) > 1e-5).all(-1)                             # no near-tie in the top K+1
            assert clear.mean() > 0.9
            np.testing.assert_array_equal(k["token_id"].to_numpy().reshape(P, K)[clear], order[clear])
    summary = pl.read_parquet(out / "summary.parquet")
    assert {"top1_agree", "js"} <= set(summary["metric"])
    assert set(summary.filter(pl.col("metric") == "js")["category_kind"]) == set(
        summary.filter(pl.col("metric") == "seeds")["category_kind"])
    pp = pl.read_parquet(out / "pair_positions.parquet")
    assert pp.columns[-3:] == ["kl", "top1_agree", "js"] and pp["top1_agree"].dtype == pl.Int8
    with np.load(store.group_path(out, "s1", max(STEPS))) as z:
        assert z["top1_agree"].shape == (P, 2, 2) and z["topk_ids"].shape == (P, 2, K)
    text = (out / "report.md").read_text()
    assert "## Agreement between seeds" in text and (out / "figures" / "agreement.png").is_file()


def test_kl_only_writes_exactly_the_old_files(lab, runs):
    out, full = runs / "old", runs / "all"
    names = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
    assert set(FINAL_FILES + ["pair_positions.parquet", "timings.json"]) <= set(names)
    new = sorted(p.name for p in full.iterdir() if p.is_file() and not p.name.startswith("."))
    assert new == sorted(names + ["topk.parquet"])
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert sorted(p.name for p in (full / "figures").iterdir()) == sorted(figures + ["agreement.png"])
    assert pl.read_parquet(out / "tokens.parquet").columns == TOKENS_COLS
    assert pl.read_parquet(out / "pairs.parquet").columns == ["size", "step", "seed_a", "seed_b", "kl_mean"]
    assert pl.read_parquet(out / "pair_positions.parquet").columns[-1] == "kl"
    assert set(pl.read_parquet(out / "summary.parquet")["metric"]) == {"seeds", "uniform", "unigram", "surprisal"}
    assert not (out / "figures" / "agreement.png").exists()
    assert "Agreement between seeds" not in (out / "report.md").read_text()
    with np.load(store.group_path(out, "s1", 0)) as z:
        assert not set(NEW) & set(z.files)
    # the KL itself does not depend on what else the pass measured
    a, b = (pl.read_parquet(o / "tokens.parquet").select(TOKENS_COLS) for o in (out, full))
    np.testing.assert_allclose(a["kl_mean"], b["kl_mean"], rtol=1e-5, atol=1e-7)


def test_resume_rebuilds_the_same_new_files(lab, runs, tmp_path):
    """One group deleted, another saved without top1_agree (an older run's): exactly those two are
    recomputed and every final file equals the uninterrupted run's."""
    import shutil

    full = runs / "all"
    out = tmp_path / "resumed"
    shutil.copytree(full, out)
    for name in COMPARED + ["summary.csv", "report.md"]:
        (out / name).unlink()
    store.group_path(out, "s1", STEPS[1]).unlink()
    old = store.group_path(out, "s1", STEPS[0])
    with np.load(old) as z:
        kept = {k: z[k] for k in z.files if k != "top1_agree"}
    with open(old, "wb") as f:
        np.savez(f, **kept)
    computed = []
    run_study(_cfg(lab, out, suite=_suite(lab), surprisal_seed=3, save_pair_positions=True,
                   metrics=("kl", "top1", "js"), save_topk=K), progress=False,
              on_group=lambda size, step: computed.append(step))
    assert sorted(computed) == sorted(STEPS[:2])
    for name in COMPARED:
        a, b = pl.read_parquet(full / name), pl.read_parquet(out / name)
        assert a.equals(b), name
    assert (out / "summary.csv").read_bytes() == (full / "summary.csv").read_bytes()
