"""Init vs data order (issue 20, part 6): pair types from a seed-factor table, E[conv] per type with the
study's bootstrap, --seed_factors and the decoupled PolyPythia preset, and a local suite the trainer builds
with separate init and data-order seeds, run through the whole study."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from seedkl_jax.analysis import bootstrap as bs
from seedkl_jax.analysis.aggregate import GroupResult
from seedkl_jax.analysis.pair_types import pair_type_rows, pair_types
from seedkl_jax.config import SuiteConfig
from seedkl_jax.errors import SeedKLError
from seedkl_jax.study import suite as suite_lib
from seedkl_jax.study.suite import PRESETS, check_complete, resolve_suite

FACTORS = {1: {"init": 1, "data": 1}, 2: {"init": 1, "data": 2}, 3: {"init": 3, "data": 1}}


def test_pair_types_name_the_differing_factors_in_table_order():
    assert pair_types([1, 2, 3], FACTORS) == ["data", "init", "data", "init+data", "init", "init+data"]
    same = {**FACTORS, 4: {"init": 1, "data": 1}}
    assert pair_types([1, 4], same) == ["none", "none"]
    with pytest.raises(SeedKLError, match=r"seed\(s\) \[5\]"):
        pair_types([1, 5], FACTORS)


def test_pair_type_rows_match_numpy_and_the_studys_bootstrap():
    rng = np.random.default_rng(0)
    P, S = 40, 3
    meta = pl.DataFrame({"position": np.arange(1, P + 1), "token_id": np.zeros(P, np.int64),
                         "doc_id": np.arange(P) // 8})
    kl = rng.lognormal(0, 0.5, (P, S, S)).astype(np.float32)
    kl[:, np.arange(S), np.arange(S)] = 0
    df = pair_type_rows([GroupResult("s", 4, [1, 2, 3], {"kl": kl})], meta, FACTORS, n_boot=200)
    assert df["pair_type"].to_list() == ["init", "data", "init+data"]           # fewer factors first
    k = kl.astype(np.float64)
    want = {"data": (k[:, 0, 1], k[:, 1, 0]), "init": (k[:, 0, 2], k[:, 2, 0]), "init+data": (k[:, 1, 2], k[:, 2, 1])}
    for r in df.to_dicts():
        a, b = want[r["pair_type"]]
        assert r["n_pairs"] == 2 and r["n_tokens"] == P
        assert r["e_conv"] == pytest.approx(-np.mean([a.mean(), b.mean()]), rel=1e-12)
        assert r["sd_pairs"] == pytest.approx(np.std([a.mean(), b.mean()], ddof=1), rel=1e-9)
        assert r["ci_low"] <= r["e_conv"] <= r["ci_high"]
    # the interval is the percentile interval of the replicates written out by hand (same draws as summary)
    dr = bs.draws(5, S, 200, 0)
    ia, ib = np.nonzero(~np.eye(S, dtype=bool))
    doc = np.arange(P) // 8
    reps = []
    for W, V in zip(dr.W, dr.V):
        w = [V[i] * V[j] if (i, j) in ((0, 1), (1, 0)) else 0.0 for i, j in zip(ia, ib)]
        num = sum(W[d] * w[u] * k[doc == d, ia[u], ib[u]].sum() for d in range(5) for u in range(len(w)))
        den = sum(W[d] * (doc == d).sum() for d in range(5)) * sum(w)
        reps.append(num / den if den else np.nan)
    lo, hi = np.nanpercentile(reps, [2.5, 97.5])
    r = df.filter(pl.col("pair_type") == "data").row(0, named=True)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((-hi, -lo), rel=1e-9)


# ---------------------------------------------------------------- --seed_factors and the preset

def _suite_cfg(**kw) -> SuiteConfig:
    base = dict(preset="", model_template="/x/{size}/seed{seed}/step{step}", sizes=("a",), steps=(0,), seeds=(1, 2, 3))
    return SuiteConfig(**{**base, **kw})


def test_seed_factors_file_is_read_and_checked(tmp_path):
    f = tmp_path / "f.json"
    f.write_text(json.dumps({"1": {"init": 1, "data": 1}, "2": {"init": 1, "data": 2}, "3": {"init": 3, "data": 1},
                             "9": {"init": 9, "data": 9}}))
    s = resolve_suite(_suite_cfg(seed_factors=str(f)))
    assert s.seed_factors == FACTORS                         # restricted to the compared seeds, keys as seeds
    assert resolve_suite(_suite_cfg()).seed_factors is None
    cases = [("{", "not readable JSON"), ("[]", "not a non-empty JSON object"), ('{"1": 3}', "seed '1' has no"),
             ('{"1": {"init": 1}, "2": {"init": 2}}', r"no factors for seed\(s\) \[3\]"),
             ('{"1": {"init": 1}, "2": {"data": 2}, "3": {"init": 3}}', "same factor names"),
             ('{"a b": {"init": 1}}', "is not a seed")]
    for text, needle in cases:
        f.write_text(text)
        with pytest.raises(SeedKLError, match=needle) as e:
            resolve_suite(_suite_cfg(seed_factors=str(f)))
        assert str(f) in str(e.value)
    with pytest.raises(SeedKLError, match="file not found"):
        resolve_suite(_suite_cfg(seed_factors=str(tmp_path / "nope.json")))


def test_decoupled_preset_names_the_published_runs_and_their_factors(monkeypatch):
    s = PRESETS["polypythia-160m-decoupled"].validate()
    assert s.seeds == ("pythia-160m", "pythia-160m-data-seed1", "pythia-160m-data-seed2", "pythia-160m-data-seed3",
                       "pythia-160m-weight-seed1", "pythia-160m-weight-seed2", "pythia-160m-weight-seed3")
    assert s.checkpoint("160m", 512, "pythia-160m-weight-seed2") == ("EleutherAI/pythia-160m-weight-seed2", "step512")
    assert s.checkpoint("160m", 0, "pythia-160m") == ("EleutherAI/pythia-160m", "step0")
    assert s.steps == PRESETS["polypythia"].steps and s.phase_steps == (16, 256, 2000)
    f = resolve_suite(SuiteConfig(preset="polypythia-160m-decoupled")).seed_factors
    assert f["pythia-160m"] == {"init": 0, "data": 0} and f["pythia-160m-data-seed3"] == {"init": 0, "data": 3}
    assert f["pythia-160m-weight-seed1"] == {"init": 1, "data": 0}
    types = pair_types(list(s.seeds), f)
    assert {t: types.count(t) for t in set(types)} == {"data": 12, "init": 12, "init+data": 18}
    # a subset of the runs keeps their rows
    sub = resolve_suite(SuiteConfig(preset="polypythia-160m-decoupled", seeds=("pythia-160m", "pythia-160m-data-seed1")))
    assert list(sub.seed_factors) == ["pythia-160m", "pythia-160m-data-seed1"]
    # missing revisions are listed before any compute, as for the other presets
    monkeypatch.setattr(suite_lib, "_hub_cached", lambda *a: False)
    monkeypatch.setattr(suite_lib.hub, "missing_on_hub", lambda todo: [
        f"{m}@{r}: no such revision on the hub" for m, r in todo if m.endswith("weight-seed3") and r == "step1"])
    with pytest.raises(SeedKLError, match=r"1 of 140 checkpoints missing.*pythia-160m-weight-seed3@step1"):
        check_complete(s)


# ---------------------------------------------------------------- a trained suite, through the study

@pytest.fixture(scope="module")
def decoupled(tmp_path_factory):
    """3 seeds of one tiny width: 1 = (init 1, data 1), 2 shares 1's init, 3 shares 1's data order."""
    import dataclasses

    from seedkl_jax.lab import grammar as G
    from seedkl_jax.lab import trainer as T

    work = tmp_path_factory.mktemp("decoupled")
    grammar = G.Grammar(G.GrammarConfig(nouns=40, verbs=16, adjs=12, advs=6, propns=8, clusters=4))
    tok = G.build_tokenizer(grammar)
    G.save_tokenizer(tok, work / "tok")
    ids = np.asarray(tok.encode(G.documents_text(G.generate_documents(grammar, seed=0, n_sentences=800))).ids,
                     np.int32)
    cfg = T.TrainConfig(widths=(32,), layers=1, heads=4, context=16, batch=4, steps=8, warmup=2, lr=1e-2,
                        seeds=(1, 2, 3), ckpt_per_octave=1, ckpt_every=0, split_seeds={2: (1, 2), 3: (3, 1)})
    trained = T.train_suite(cfg, ids, work / "tok", tok.get_vocab_size(with_added_tokens=True), work / "suite",
                            progress=False)
    eval_docs = G.generate_documents(grammar, seed=5, n_sentences=12)
    (work / "eval.txt").write_text(G.documents_text(eval_docs), encoding="utf-8")
    return dict(work=work, trained=trained, cfg=cfg, ids=ids, tok=tok, replace=dataclasses.replace)


def test_trainer_splits_init_and_data_seeds(decoupled):
    from seedkl_jax.lab import trainer as T
    from seedkl_jax.models import init_params

    cfg, work = decoupled["cfg"], decoupled["work"]
    assert json.loads((work / "suite" / "seed_factors.json").read_text()) == {
        "1": {"init": 1, "data": 1}, "2": {"init": 1, "data": 2}, "3": {"init": 3, "data": 1}}
    size = decoupled["trained"].sizes[0]
    key = json.loads((work / "suite" / size / "done.json").read_text())["key"]["train"]
    assert key["split_seeds"] == {"1": [1, 1], "2": [1, 2], "3": [3, 1]}
    # without split_seeds the key is the one written before the option existed
    plain = T._size_key(cfg.model_config(32, 100), decoupled["replace"](cfg, split_seeds=None), "h")
    assert "split_seeds" not in plain["train"]
    # the seeds' params: 1 and 2 start equal and part once their batches differ; 3 starts elsewhere
    import jax
    mc = cfg.model_config(32, decoupled["tok"].get_vocab_size(with_added_tokens=True))
    chunks = T.make_chunks(decoupled["ids"], cfg.context)
    p0 = jax.device_get(init_params(mc, jax.random.PRNGKey(1), std=cfg.init_std))
    one = decoupled["replace"](cfg, steps=1, warmup=1)
    after = jax.device_get(T.train_seeds(mc, one, chunks, [1, 2, 3]))
    emb = lambda p, i: np.asarray(p["embed_out"]["kernel"][i])  # noqa: E731
    assert not np.array_equal(emb(after, 0), emb(after, 1))            # other batches at step 1
    assert np.abs(emb(after, 0) - emb(after, 2)).max() > 0.05          # other init
    assert np.abs(emb(after, 1) - np.asarray(p0["embed_out"]["kernel"])).max() < 0.05   # moved by one step only
    with pytest.raises(SeedKLError, match="same model"):
        decoupled["replace"](cfg, split_seeds={2: (1, 1)}).validate()
    with pytest.raises(SeedKLError, match="not one of the seeds"):
        decoupled["replace"](cfg, split_seeds={7: (1, 1)}).validate()


def test_study_with_seed_factors_reports_pair_types(decoupled, tmp_path):
    from seedkl_jax.config import StudyConfig
    from seedkl_jax.study.run import run_study

    t, work = decoupled["trained"], decoupled["work"]
    out = tmp_path / "out"
    report = run_study(StudyConfig.from_flat(
        preset="", model_template=t.model_template, revision_template="", sizes=tuple(t.sizes), steps=(0, 2, 8),
        seeds=(1, 2, 3), seed_factors=str(work / "suite" / "seed_factors.json"), text=str(work / "eval.txt"),
        out=str(out), pos="none", n_boot=50, cache_dir=str(tmp_path / "cache")), progress=False)
    df = pl.read_parquet(out / "pair_types.parquet")
    assert df.columns == ["size", "step", "pair_type", "n_pairs", "n_tokens", "mean_kl", "e_conv", "sd_pairs",
                          "ci_low", "ci_high"]
    assert df.height == 3 * 3 and set(df["pair_type"]) == {"init", "data", "init+data"}
    assert set(df["n_pairs"]) == {2}
    at = {(r["step"], r["pair_type"]): r for r in df.to_dicts()}
    assert at[(0, "data")]["mean_kl"] == 0.0                  # same init: identical at step 0
    assert at[(0, "init")]["mean_kl"] > 1e-3 and at[(0, "init+data")]["mean_kl"] > 1e-3
    assert at[(8, "data")]["mean_kl"] > 0.0                   # their data orders have parted them since
    # each type's mean is the mean of its pairs in pairs.parquet
    pairs = pl.read_parquet(out / "pairs.parquet").filter(pl.col("step") == 8)
    kl = {(r["seed_a"], r["seed_b"]): r["kl_mean"] for r in pairs.to_dicts()}
    assert at[(8, "init")]["mean_kl"] == pytest.approx((kl[(1, 3)] + kl[(3, 1)]) / 2, rel=1e-9)
    assert at[(8, "init+data")]["mean_kl"] == pytest.approx((kl[(2, 3)] + kl[(3, 2)]) / 2, rel=1e-9)
    text = report.read_text()
    assert "Init vs data order" in text and "econv_by_pair_type.png" in text
    assert (out / "figures" / "econv_by_pair_type.png").is_file()


def test_study_without_seed_factors_writes_no_pair_types(decoupled, tmp_path):
    from seedkl_jax.config import StudyConfig
    from seedkl_jax.study.run import run_study

    t, work = decoupled["trained"], decoupled["work"]
    out = tmp_path / "out"
    run_study(StudyConfig.from_flat(
        preset="", model_template=t.model_template, revision_template="", sizes=tuple(t.sizes), steps=(0, 8),
        seeds=(1, 2, 3), text=str(work / "eval.txt"), out=str(out), pos="none", n_boot=20,
        cache_dir=str(tmp_path / "cache")), progress=False)
    assert (out / "report.md").is_file() and not (out / "pair_types.parquet").exists()
    assert not (out / "figures" / "econv_by_pair_type.png").exists()
