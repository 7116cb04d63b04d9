"""The vmapped multi-seed trainer: same params as one seed alone, HF checkpoints that load back exactly."""
import dataclasses
import json
import math
import os

import jax
import numpy as np
import pytest

from seedkl_jax.lab import grammar as G
from seedkl_jax.errors import SeedKLError
from seedkl_jax.models import init_params, logits
from seedkl_jax.lab import trainer as T

SMALL = G.GrammarConfig(nouns=40, verbs=16, adjs=12, advs=6, propns=8, clusters=4)
TINY = T.TrainConfig(widths=(32,), layers=1, heads=4, context=16, batch=4, steps=6, warmup=2, lr=1e-2,
                     seeds=(1, 2), ckpt_per_octave=1, ckpt_every=0)


def test_checkpoint_steps_are_log_spaced_then_regular():
    assert T.TrainConfig(steps=1024, ckpt_per_octave=1, ckpt_every=256).checkpoint_steps() == [
        0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024]
    assert T.TrainConfig(steps=100, warmup=10, ckpt_per_octave=1, ckpt_every=0).checkpoint_steps() == [
        0, 1, 2, 4, 8, 16, 32, 64, 100]
    # two per octave from step 8: round(2 ** (j / 2))
    assert T.TrainConfig(steps=1024, ckpt_per_octave=2, ckpt_every=0).checkpoint_steps() == [
        0, 1, 2, 4, 8, 11, 16, 23, 32, 45, 64, 91, 128, 181, 256, 362, 512, 724, 1024]


def test_lr_schedule_warms_up_linearly_then_decays_to_the_floor():
    cfg = T.TrainConfig(steps=100, warmup=10, lr=1e-3, final_lr_frac=0.1)
    lr = [float(T.lr_schedule(cfg)(t)) for t in range(101)]
    assert lr[0] == pytest.approx(1e-4) and lr[4] == pytest.approx(5e-4) and lr[9] == pytest.approx(1e-3)
    assert lr[10] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lr[10:], lr[11:]))
    assert lr[100] == pytest.approx(1e-4)


def test_data_order_is_a_per_seed_permutation_per_epoch():
    a = T.data_order(1, n_chunks=10, steps=5, batch=4)  # 20 draws = 2 epochs
    assert a.shape == (5, 4)
    flat = a.reshape(-1)
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert np.array_equal(a, T.data_order(1, 10, 5, 4))
    assert not np.array_equal(a, T.data_order(2, 10, 5, 4))


def test_bad_settings_are_refused():
    with pytest.raises(SeedKLError, match="--warmup"):
        T.TrainConfig(steps=10, warmup=20).validate()
    with pytest.raises(SeedKLError, match="--widths"):
        T.TrainConfig(widths=(36,), heads=4).validate()
    with pytest.raises(SeedKLError, match="--context"):
        T.make_chunks(np.arange(10), 16)


def test_vmapped_training_equals_each_seed_alone():
    model_cfg = TINY.model_config(32, vocab_size=61)
    assert model_cfg.vocab_size == 64  # padded to a multiple of 8
    ids = np.random.default_rng(0).integers(0, 61, 3000)
    chunks = T.make_chunks(ids, TINY.context)
    seeds = [1, 2, 3]
    # lr 1e-3 (the demo's): the key bias has an exactly-zero true gradient, so Adam turns float noise into
    # updates of size ~lr in BOTH paths; their difference grows with lr (1.7e-6 at 1e-3, 2.7e-5 at 1e-2).
    cfg = dataclasses.replace(TINY, lr=1e-3)
    together = jax.device_get(T.train_seeds(model_cfg, cfg, chunks, seeds, vmapped=True))
    alone = jax.device_get(T.train_seeds(model_cfg, cfg, chunks, seeds, vmapped=False))
    diff = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), together, alone))
    assert max(diff) <= 1e-5
    # ... and training did something, differently per seed (else the comparison would prove nothing)
    init = jax.device_get(init_params(model_cfg, jax.random.PRNGKey(1)))
    moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a[0] - b))), together, init)
    assert max(jax.tree.leaves(moved)) > 1e-3
    assert np.max(np.abs(together["embed_out"]["kernel"][0] - together["embed_out"]["kernel"][1])) > 1e-3


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    work = tmp_path_factory.mktemp("suite")
    grammar = G.Grammar(SMALL)
    tok = G.build_tokenizer(grammar)
    G.save_tokenizer(tok, work / "tok")
    docs = G.generate_documents(grammar, seed=0, n_sentences=800)
    ids = np.asarray(tok.encode(G.documents_text(docs)).ids, np.int32)
    vocab = tok.get_vocab_size(with_added_tokens=True)
    trained = T.train_suite(TINY, ids, work / "tok", vocab, work / "suite", progress=False)
    return trained, ids, vocab, work


def test_suite_layout_and_markers(suite):
    trained, _, vocab, work = suite
    (size,) = trained.sizes
    assert trained.steps == [0, 1, 2, 4, 6] and trained.seeds == [1, 2]
    for seed in trained.seeds:
        for step in trained.steps:
            d = trained.checkpoint(size, seed, step)
            assert d == work / "suite" / size / f"seed{seed}" / f"step{step}"
            assert trained.model_template.format(size=size, seed=seed, step=step) == str(d)
            assert {p.name for p in d.iterdir()} == {"config.json", "model.safetensors", "tokenizer.json",
                                                     "tokenizer_config.json"}
    assert not list((work / "suite").rglob(".*tmp*"))  # atomic writes left nothing behind
    info = json.loads((work / "suite" / "suite.json").read_text())
    assert info["sizes"] == [size] and info["revision_template"] == ""
    assert trained.final_loss[size] < math.log(vocab)  # it learned something in 6 steps


def test_checkpoints_round_trip_through_api_load(suite, tmp_path):
    from seedkl_jax import api

    trained, ids, vocab, work = suite
    (size,) = trained.sizes
    model_cfg = trained.configs[size]
    jit_logits = jax.jit(logits, static_argnums=1)
    final = jax.device_get(T.train_seeds(model_cfg, TINY, T.make_chunks(ids, TINY.context), [1, 2]))
    x = ids[None, :TINY.context]
    for i, seed in enumerate(trained.seeds):
        m = api.load(str(trained.checkpoint(size, seed, TINY.steps)), cache_dir=str(tmp_path))
        assert m.config == model_cfg
        mine = jax.tree.map(lambda a: a[i], final)
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(m.params), jax.tree.leaves(mine)))
        np.testing.assert_array_equal(m.logits(x), np.asarray(jit_logits(mine, model_cfg, x)))
    # step 0 is exactly the seed's initialisation
    m0 = api.load(str(trained.checkpoint(size, 2, 0)), cache_dir=str(tmp_path))
    init = jax.device_get(init_params(model_cfg, jax.random.PRNGKey(2)))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(m0.params), jax.tree.leaves(init)))
    tok = api.load_tokenizer(str(trained.checkpoint(size, 1, 0)))
    assert tok.vocab_size == vocab and tok.eos_id == 0


def test_checkpoints_load_in_transformers(suite):
    torch = pytest.importorskip("torch")
    from transformers import GPTNeoXForCausalLM

    from seedkl_jax import api

    trained, ids, _, _ = suite
    (size,) = trained.sizes
    d = trained.checkpoint(size, 1, TINY.steps)
    hf = GPTNeoXForCausalLM.from_pretrained(str(d), dtype=torch.float32).eval()
    x = ids[None, :TINY.context].astype(np.int64)
    with torch.no_grad():
        ref = hf(torch.from_numpy(x)).logits.numpy()
    got = api.load(str(d), cache_dir=str(d.parent.parent / "cache")).logits(x)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


def test_train_suite_reuses_a_finished_size_and_retrains_a_changed_one(suite, monkeypatch):
    trained, ids, vocab, work = suite
    (size,) = trained.sizes
    ckpt = trained.checkpoint(size, 1, TINY.steps) / "model.safetensors"
    before = ckpt.stat().st_mtime_ns
    calls = []
    real = T.train_seeds
    monkeypatch.setattr(T, "train_seeds", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = T.train_suite(TINY, ids, work / "tok", vocab, work / "suite", progress=False)
    assert calls == [] and again.sizes == trained.sizes and ckpt.stat().st_mtime_ns == before
    # an interrupted size (no done.json) is trained again, into the same layout
    (work / "suite" / size / "done.json").unlink()
    T.train_suite(TINY, ids, work / "tok", vocab, work / "suite", progress=False)
    assert calls == [1] and ckpt.stat().st_mtime_ns != before
    # other settings: retrained too
    T.train_suite(dataclasses.replace(TINY, lr=5e-3), ids, work / "tok", vocab, work / "suite",
                  progress=False)
    assert calls == [1, 1]


def test_checkpoint_files_get_the_umasks_mode(suite):
    trained, _, _, work = suite
    umask = os.umask(0o022)
    os.umask(umask)
    files = [f for f in (work / "suite").rglob("*") if f.is_file()]
    assert files and {f.stat().st_mode & 0o777 for f in files} == {0o666 & ~umask}


def test_first_training_bar_says_compiling_then_restarts_its_clock(suite, tmp_path, capsys):
    _, ids, vocab, work = suite
    T.train_suite(dataclasses.replace(TINY, widths=(32,), steps=2, warmup=1), ids, work / "tok", vocab, tmp_path / "s",
                  progress=True)
    err = capsys.readouterr().err
    frames = [f for f in err.replace("\r", "\n").splitlines() if f.startswith("train ")]
    assert frames[0].startswith("train ") and ", compiling" in frames[0] and " 0/2 " in frames[0], frames
    done = [f for f in frames if " 2/2 " in f]
    assert done and ", compiling" not in done[-1], frames
