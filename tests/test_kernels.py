"""Kernel tests: fused divergences vs a float64 numpy oracle built from HF torch logits.

Tolerance everywhere (the issue's acceptance): |ours − oracle| ≤ 1e-5 · max(1, |oracle|) nats.
The torch models have their output rows scaled up so logits spread over several nats (KLs of
order 0.1–1, not the ~1e-4 of a raw 0.02 init, so a wrong normalisation cannot hide), and the 27
padded rows (ids 50,277..50,303) get huge logits: leaking them into the softmax would be obvious.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from seedkl_jax.errors import SeedKLError
from seedkl_jax.hf.families import neox_config
from seedkl_jax.hf.mapping import state_dict_to_params
from seedkl_jax.kernels.compare import compare, compare_stacked, stack_params
from seedkl_jax.kernels.divergence import (
    chunking,
    default_cache_logits,
    default_form,
    divergence_jit,
)
from seedkl_jax.kernels.reference import unigram_logprobs
from seedkl_jax.kernels.windows import make_windows, window_starts
from seedkl_jax.models import NeoXConfig, hidden_states

V_PAD, V_REAL = 50304, 50277
HF_KW = dict(vocab_size=V_PAD, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=64, max_position_embeddings=64)


@dataclasses.dataclass
class FakeModel:  # what compare() needs from seedkl_jax.convert.loader.Model
    params: dict
    config: NeoXConfig
    name: str
    revision: str | None = None
    real_vocab_size: int | None = None


@pytest.fixture(scope="module")
def suite():
    """3 random-init HF checkpoints (torch models) and the same weights as our params."""
    torch_models, models = [], []
    for seed in range(3):
        torch.manual_seed(seed)
        m = GPTNeoXForCausalLM(GPTNeoXConfig(**HF_KW)).eval()
        with torch.no_grad():
            out = m.get_output_embeddings().weight  # [V, D]
            out.mul_(20.0 + 5 * seed)               # logits of several nats
            m.gpt_neox.final_layer_norm.bias.fill_(0.1)  # Σ_d h_d = 3.2 at every position, so
            out[V_REAL:] = 3.0                      # padded ids get logits ≈ 9.6, near the top
        cfg = neox_config(m.config.to_dict())
        params = state_dict_to_params({k: v.numpy() for k, v in m.state_dict().items()}, cfg)
        torch_models.append(m)
        models.append(FakeModel(params, cfg, f"seed{seed}", real_vocab_size=V_REAL))
    return torch_models, models


def hf_logits(torch_models, ids: np.ndarray) -> np.ndarray:
    """[S,B,T,V] float64 logits of each torch model on ids [B,T]."""
    with torch.no_grad():
        return np.stack([m(torch.tensor(ids, dtype=torch.long)).logits.double().numpy() for m in torch_models])


def oracle(z: np.ndarray, targets: np.ndarray, vocab_size: int, ref: np.ndarray | None) -> dict:
    """Exact (float64) quantities from logits z [S,*B,V] (sliced to the real vocab here)."""
    z = z[..., :vocab_size]
    m = z.max(-1, keepdims=True)
    lp = z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))
    p = np.exp(lp)
    mv = lambda a: np.moveaxis(a, 0, -1)  # [S,*B] -> [*B,S]
    out = {"surprisal": mv(-np.take_along_axis(lp, np.broadcast_to(targets, lp.shape[:-1])[..., None], -1)[..., 0]),
           "entropy": mv(-(p * lp).sum(-1)),
           "kl_uniform": mv((p * (lp + np.log(vocab_size))).sum(-1)),
           "kl": np.moveaxis(np.stack([np.stack([(p[i] * (lp[i] - lp[j])).sum(-1) for j in range(len(z))])
                                       for i in range(len(z))]), (0, 1), (-2, -1))}
    if ref is not None:
        r = ref.astype(np.float64) - np.log(np.exp(ref.astype(np.float64)).sum())
        out["kl_unigram"] = mv((p * (lp - r)).sum(-1))
    return out


def assert_close(ours: dict, want: dict):
    for k in want:
        err = np.abs(ours[k].astype(np.float64) - want[k]) / np.maximum(1.0, np.abs(want[k]))
        assert ours[k].dtype == np.float32 and np.all(np.isfinite(ours[k])), k
        assert err.max() <= 1e-5, f"{k}: max scaled error {err.max():.2e}"
    kl = ours["kl"]
    assert np.all(np.diagonal(kl, axis1=-2, axis2=-1) == 0), "KL diagonal must be exactly 0"
    assert np.all(kl >= 0), "negative KL"


def random_text(n, rng, batch=None):
    return rng.randint(0, V_REAL, n if batch is None else (batch, n))


@pytest.mark.parametrize("vocab_chunk,vocab_size,position_block,kernel,form", [
    (None, V_REAL, None, "fused", None),        # defaults (the backend's form)
    (16759, V_REAL, None, "fused", "pair"),     # chunk divides the real vocab: 3 full chunks
    (5000, V_REAL, 16, "fused", "pair"),        # does not divide: last chunk partly padded ids; 3 blocks
    (5000, V_PAD, None, "fused", "pair"),       # no padding masked; last chunk's slice clamped, overlapping
    (16759, V_REAL, None, "fused", "onepass"),
    (5000, V_REAL, 16, "fused", "onepass"),
    (5000, V_PAD, None, "fused", "onepass"),
    (5000, V_REAL, 16, "fused", "einsum"),
    (None, V_REAL, None, "naive", None),        # the materialising baseline agrees too
])
def test_matches_float64_oracle(suite, vocab_chunk, vocab_size, position_block, kernel, form):
    torch_models, models = suite
    rng = np.random.RandomState(1)
    ids = random_text(24, rng, batch=2)
    counts = rng.poisson(0.3, vocab_size).astype(float)  # mostly zeros: smoothing must keep it finite
    ref = unigram_logprobs(counts, vocab_size)
    out = compare(models, ids, reference_logprobs=ref, vocab_size=vocab_size, vocab_chunk=vocab_chunk,
                  position_block=position_block, kernel=kernel, form=form)
    assert out["kl"].shape == (2, 23, 3, 3) and out["surprisal"].shape == (2, 23, 3)
    want = oracle(hf_logits(torch_models, ids)[:, :, :-1], ids[:, 1:], vocab_size, ref)
    assert_close(out, want)
    assert want["kl"].max() > 0.05  # the test has something to measure


def test_masks_padded_vocab(suite):
    """Normalising over all 50,304 rows instead of the real 50,277 changes every quantity."""
    _, models = suite
    ids = random_text(10, np.random.RandomState(2))
    real = compare(models, ids)  # vocab_size from Model.real_vocab_size
    full = compare(models, ids, vocab_size=V_PAD)
    assert np.abs(real["entropy"] - full["entropy"]).max() > 0.1


def _dyadic(rng, shape, scale):
    """Values k/8 (|k| ≤ 16) times a power of two: sums of a few products stay exact in float32."""
    return (rng.randint(-16, 17, shape) / 8.0 * scale).astype(np.float32)


@pytest.mark.parametrize("case", ["one_far_above", "near_uniform", "very_negative"])
@pytest.mark.parametrize("form,cache", [("pair", False), ("pair", True), ("einsum", False), ("einsum", True),
                                        ("onepass", None)])
def test_hard_distributions(case, form, cache):
    """h/W built so the float32 logits are exact; the kernel must then match float64 to the bound."""
    rng = np.random.RandomState(3)
    S, P, D, V, Vr = 3, 6, 9, 1000, 997
    h = _dyadic(rng, (S, P, D), 1.0)
    w = _dyadic(rng, (S, D, V), 1.0)
    h[..., 0] = 1.0  # feature 0 carries a per-id offset row W[:, 0, :]
    if case == "one_far_above":
        w[:, 0, :] = 0.0
        w[:, 0, 7] = 120.0           # p(7) ≈ 1 − 1e-47: tiny KLs, log-probs of −120 elsewhere
        w[1, 0, 8] = 119.0           # seed 1 splits its mass between 7 and 8
    elif case == "near_uniform":
        w *= 2.0 ** -12              # logits ~1e-3: every distribution ≈ uniform
        w[:, 0, :] = 0.0
    else:
        w[:, 0, :] = -4096.0         # all logits ≈ −4096 (exactly representable offset)
    w[:, :, Vr:] = 64.0              # padded ids must stay masked
    targets = rng.randint(0, Vr, P)
    ref = unigram_logprobs(rng.poisson(2.0, Vr), Vr)
    z = np.einsum("spd,sdv->spv", h.astype(np.float64), w.astype(np.float64))
    want = oracle(z, targets, Vr, ref)
    for chunk, block in ((128, 4), (997, None)):  # 4: two position blocks, the second half padding
        out = divergence_jit(h, w, targets, ref, vocab_size=Vr, vocab_chunk=chunk, position_block=block,
                             form=form, cache_logits=cache)
        assert_close({k: np.asarray(v) for k, v in out.items()}, want)
        exact = divergence_jit(h, w, targets, ref, vocab_size=Vr, vocab_chunk=chunk, position_block=block,
                               form="pair", cache_logits=False)
        for k, v in out.items():  # every form agrees with the exact (pair) one to the same bound
            ex = np.asarray(exact[k], np.float64)
            assert np.max(np.abs(np.asarray(v) - ex) / np.maximum(1.0, np.abs(ex))) <= 1e-5, (form, k)


@pytest.mark.parametrize("form,with_ref,vocab_size", [
    ("pair", True, V_REAL), ("pair", False, V_REAL), ("einsum", True, V_REAL), ("einsum", False, V_REAL),
    ("pair", True, V_PAD),  # no padding masked; the last chunk's slice is clamped and overlaps
])
def test_cached_logits_match_recompute_and_oracle(suite, form, with_ref, vocab_size):
    """Pass 2 reading pass 1's logits gives what recomputing them gives, and the float64 answer.

    46 positions (2 texts x 23) in blocks of 16: the last block is part padding. C=5000 does not
    divide V_r = 50,277, so the last chunk holds padded ids (logits ≈ 9.6, near the top) to mask.
    """
    torch_models, models = suite
    rng = np.random.RandomState(7)
    ids = random_text(24, rng, batch=2)
    ref = unigram_logprobs(rng.poisson(0.5, vocab_size), vocab_size) if with_ref else None
    stacked = stack_params([m.params for m in models])
    h = jax.vmap(lambda p: hidden_states(p, models[0].config, ids[:, :-1]))(stacked)  # [S,2,23,D]
    run = lambda cache: {k: np.asarray(v) for k, v in divergence_jit(
        h, stacked["embed_out"]["kernel"], ids[:, 1:], ref, vocab_size=vocab_size, vocab_chunk=5000, position_block=16,
        form=form, cache_logits=cache).items()}
    cached, recomputed = run(True), run(False)
    assert set(cached) == set(recomputed) == {"kl", "surprisal", "entropy", "kl_uniform"} | (
        {"kl_unigram"} if with_ref else set())
    for k in cached:
        diff = np.abs(cached[k].astype(np.float64) - recomputed[k]) / np.maximum(1.0, np.abs(recomputed[k]))
        assert diff.max() <= 1e-6, f"{k}: cached vs recompute {diff.max():.2e}"
    want = oracle(hf_logits(torch_models, ids)[:, :, :-1], ids[:, 1:], vocab_size, ref)
    assert_close(cached, want)
    assert want["kl"].max() > 0.05


def test_cached_logits_working_set():
    """The cache holds one block's logits [n,S,Pb,C], and no more as the positions grow 8x.

    XLA's compiled temp memory: the cached kernel's includes the S·Pb·n·C·4-byte buffer, the
    recompute kernel's does not, and neither grows by a buffer from 64 to 512 positions.
    """
    S, D, V, Vr, Pb = 3, 8, 1000, 997, 32
    n, C = chunking(Vr, V, 128)
    buffer = S * Pb * n * C * 4

    def temp(P, cache):
        spec = lambda *shape: jax.ShapeDtypeStruct(shape, np.float32)
        t = jax.ShapeDtypeStruct((P,), np.int32)
        return divergence_jit.lower(spec(S, P, D), spec(S, D, V), t, None, vocab_size=Vr, vocab_chunk=128,
                                    position_block=Pb, form="pair",
                                    cache_logits=cache).compile().memory_analysis().temp_size_in_bytes

    small, large = {c: temp(64, c) for c in (False, True, None)}, {c: temp(512, c) for c in (False, True)}
    assert small[True] >= buffer and large[True] >= buffer, (small, large, buffer)
    assert small[False] < buffer, (small, buffer)
    assert large[True] - small[True] < buffer and large[False] - small[False] < buffer, (small, large, buffer)
    assert small[None] == small[default_cache_logits()]  # None resolves to the backend's default
    assert default_cache_logits("cpu") is False and default_cache_logits("gpu") is True
    assert default_form("cpu") == "onepass" and default_form("gpu") == "pair"


@pytest.mark.parametrize("n,window,overlap", [(2, 4, 1), (9, 8, 3), (10, 8, 3), (30, 8, 3), (33, 7, 0), (40, 8, 7)])
def test_window_rule(n, window, overlap):
    win = make_windows(np.arange(n), window, overlap)
    starts, T = window_starts(n, window, overlap)
    seen = []
    for k, b in enumerate(win.starts):
        for t in np.nonzero(win.mask[k])[0]:
            p = b + t + 1
            assert win.targets[k, t] == p and win.ids[k, t] == p - 1  # ids are arange: id == index
            # kept from the first window that predicts p: no earlier window covers it
            assert k == 0 or p > starts[k - 1] + T
            seen.append(p)
    assert sorted(seen) == list(range(1, n))
    later = win.mask[1:]
    assert not later[:, :overlap].any()  # later windows keep only slots with ≥ overlap+1 context
    vals = np.where(win.mask, win.targets, -1)
    assert np.array_equal(win.stitch(vals), np.arange(1, n))


def test_window_stitching_matches_assigned_windows(suite):
    """A text longer than the window: each position equals scoring it with its assigned window alone."""
    torch_models, models = suite
    rng = np.random.RandomState(4)
    ids = random_text(30, rng)
    window, overlap = 8, 3
    ref = unigram_logprobs(rng.poisson(1.0, V_REAL), V_REAL)
    out = compare(models, ids, reference_logprobs=ref, window=window, overlap=overlap, window_batch=2)
    win = make_windows(ids, window, overlap)
    z, zfull = [], hf_logits(torch_models, ids[None])[:, 0]
    for p in range(1, len(ids)):
        k, t = [int(a[0]) for a in np.nonzero(win.mask & (win.dest == p - 1))]
        b = win.starts[k]
        z.append(hf_logits(torch_models, ids[None, b:p])[:, 0, -1])  # context t_b..t_{p-1} only
        assert t == p - 1 - b
    want = oracle(np.stack(z, 1), ids[1:], V_REAL, ref)
    assert_close(out, want)
    full = oracle(zfull[:, :-1], ids[1:], V_REAL, ref)  # full context differs: the test can fail
    assert np.abs(full["kl"] - want["kl"]).max() > 1e-3


def test_stacked_api_and_compile_reuse(suite):
    """compare_stacked on pre-stacked params (one vmapped forward) matches compare (on CPU one forward
    per seed, `seed_params`) to float32 rounding; a second text of another length reuses the step."""
    _, models = suite
    stacked = stack_params([m.params for m in models])
    rng = np.random.RandomState(5)
    ids = random_text(20, rng)
    a = compare(models, ids, window=8, overlap=4)
    b = compare_stacked(stacked, models[0].config, ids, vocab_size=V_REAL, window=8, overlap=4)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)
    from seedkl_jax.kernels import compare as cmp
    before = cmp._step._cache_size()
    compare_stacked(stacked, models[0].config, random_text(27, rng), vocab_size=V_REAL, window=8, overlap=4)
    assert cmp._step._cache_size() == before


def test_unigram_logprobs():
    counts = np.array([0.0, 6e-312, 3.0, 1.0, 0.0, 5.0])  # zero and denormal-garbage counts
    lp = unigram_logprobs(counts, 8)  # ids 6, 7 never counted
    assert lp.shape == (8,) and lp.dtype == np.float32 and np.all(np.isfinite(lp))
    np.testing.assert_allclose(np.exp(lp.astype(np.float64)).sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.exp(lp[[0, 1, 6]]), 0.5 / (9 + 0.5 * 8), rtol=1e-6)
    with pytest.raises(SeedKLError, match="counts"):
        unigram_logprobs(np.ones(9), 8)
    with pytest.raises(SeedKLError, match="counts"):
        unigram_logprobs(np.array([1.0, -1.0]), 2)


def _broken(model, seed, where):
    params = jax.tree.map(np.array, model.params)
    if where == "nan":
        params["layers"]["mlp"]["fc_in"]["kernel"][0, 0, 0] = np.nan
    else:
        params["embed_out"]["kernel"][:, 5] = np.inf
    return dataclasses.replace(model, params=params, name=f"broken{seed}")


def test_bad_inputs(suite):
    _, models = suite
    ids = random_text(12, np.random.RandomState(6))
    bad = [
        (lambda: compare(models[:1], ids), "≥ 2"),
        (lambda: compare([models[0], dataclasses.replace(models[1], config=dataclasses.replace(
            models[1].config, layer_norm_eps=1e-6))], ids), "layer_norm_eps"),
        (lambda: compare([models[0], dataclasses.replace(models[1], real_vocab_size=50000)], ids), "vocab"),
        (lambda: compare(models, ids[:1]), "nothing to predict"),
        (lambda: compare(models, np.array([1, 2, V_REAL + 3])), str(V_REAL + 3)),
        (lambda: compare(models, ids.astype(float)), "integer"),
        (lambda: compare(models, ids, window=4, overlap=4), "overlap"),
        (lambda: compare(models, random_text(100, np.random.RandomState(0)), window=128, overlap=0), "context"),
        (lambda: compare(models, ids, reference_logprobs=np.zeros(10)), "reference_logprobs"),
        (lambda: compare(models, ids, reference_logprobs=np.full(V_REAL, -np.inf)), "reference_logprobs"),
        (lambda: compare([models[0], _broken(models[1], 1, "nan"), models[2]], ids), r"seed 1 \(broken1\)"),
        (lambda: compare([models[0], models[1], _broken(models[2], 2, "inf")], ids), r"seed 2 \(broken2\)"),
    ]
    for fn, msg in bad:
        with pytest.raises(SeedKLError, match=msg):
            fn()


def test_compare_loaded_checkpoints_defaults_to_tokenizer_vocab(hf_checkpoint):
    """Through the real loader: vocab_size defaults to the tokenizer beside the checkpoint (15 ids of 512 rows)."""
    from seedkl_jax.convert.loader import load

    models = [load(str(hf_checkpoint(seed, tokenizer="tiny"))) for seed in (0, 1)]
    ids = np.array([0, 2, 3, 4, 5, 6, 7, 8, 9, 14, 0])
    out = compare(models, ids)
    np.testing.assert_array_equal(out["entropy"], compare(models, ids, vocab_size=15)["entropy"])
    assert np.abs(out["entropy"] - compare(models, ids, vocab_size=512)["entropy"]).max() > 1.0


def test_windows_for_a_batch_of_texts():
    ids = np.stack([np.arange(20), np.arange(20) + 100])
    win = make_windows(ids, 6, 2)
    assert win.out_shape == (2, 19) and win.num_windows == 2 * len(window_starts(20, 6, 2)[0])
    np.testing.assert_array_equal(win.stitch(np.where(win.mask, win.targets, -1)), ids[:, 1:])
    padded = win.pad_to(win.num_windows + 3)
    np.testing.assert_array_equal(padded.stitch(np.where(padded.mask, padded.targets, -1)), ids[:, 1:])


@pytest.mark.parametrize("form,kernel", [("pair", "fused"), ("einsum", "fused"), ("onepass", "fused"),
                                         ("pair", "naive")])
def test_several_references_in_one_pass(form, kernel):
    """reference_logprobs [K,V_r] gives kl_unigram [..,S,K], each column what that reference alone gives
    (the study reduces its own and the other --compat's unigram in one pass at the first step)."""
    rng = np.random.RandomState(11)
    S, P, D, V, Vr = 3, 40, 16, 1000, 997
    h = rng.randn(S, P, D).astype(np.float32)
    w = (rng.randn(S, D, V) * 0.8).astype(np.float32)
    targets = rng.randint(0, Vr, P)
    refs = np.stack([unigram_logprobs(rng.poisson(2.0, Vr), Vr), unigram_logprobs(rng.poisson(0.1, Vr), Vr)])
    run = lambda r: divergence_jit(h, w, targets, r, vocab_size=Vr, vocab_chunk=128, position_block=16,
                                   form=form, kernel=kernel)
    both = run(refs)
    assert both["kl_unigram"].shape == (P, S, 2)
    for k in range(2):
        alone = run(refs[k])
        assert alone["kl_unigram"].shape == (P, S)
        np.testing.assert_allclose(np.asarray(both["kl_unigram"][..., k]), np.asarray(alone["kl_unigram"]),
                                   rtol=1e-6, atol=1e-6)
        for key in ("kl", "entropy", "surprisal"):
            np.testing.assert_array_equal(np.asarray(both[key]), np.asarray(alone[key]))
    assert np.abs(np.asarray(both["kl_unigram"][..., 0] - both["kl_unigram"][..., 1])).max() > 0.1


def test_resolve_kernel_fills_checks_and_is_a_fixed_point():
    """Every None is filled once with the backend's choice; a resolved config resolves to itself; bad
    combinations are named errors."""
    from jax.sharding import Mesh

    from seedkl_jax.config import KernelConfig, KernelForm
    from seedkl_jax.kernels.compare import resolve_kernel

    cpu = resolve_kernel(KernelConfig(), None, 5, backend="cpu")
    assert cpu == KernelConfig(kernel="fused", form="onepass", vocab_chunk=1024, position_block=256, cache_logits=False)
    gpu = resolve_kernel(None, None, 5, backend="gpu")
    assert (gpu.form, gpu.cache_logits, gpu.position_block) == (KernelForm.PAIR, True, 1024)
    for cfg in (cpu, gpu, resolve_kernel(KernelConfig(form="einsum", vocab_chunk=300), None, 3, backend="cpu")):
        assert resolve_kernel(cfg, None, 5, backend="cpu" if cfg is not gpu else "gpu") == cfg
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    assert resolve_kernel(KernelConfig(form="einsum"), mesh, 2, backend="cpu").form == "einsum"
    with pytest.raises(SeedKLError, match="cache_logits"):
        resolve_kernel(KernelConfig(form="onepass", cache_logits=True), None, 2, backend="cpu")
    with pytest.raises(SeedKLError, match="≥ 2 checkpoints"):
        resolve_kernel(KernelConfig(), None, 1, backend="cpu")
    for gone in ("fast", "native"):  # the compiled CPU form was removed: a named error, not a crash
        with pytest.raises(SeedKLError, match=f"--kernel_form='{gone}'.*pair, einsum, onepass"):
            KernelConfig(form=gone)


@pytest.mark.parametrize("form", ["pair", "onepass"])
def test_kernel_runs_only_on_kept_slots(suite, form):
    """Later windows send only their kept slots through the unembedding and the KL (a fixed-width
    slot list); the results equal scoring every slot of every window (one batch holding the first
    window goes the full path)."""
    from seedkl_jax.config import KernelConfig
    from seedkl_jax.kernels.compare import _kept_slots

    _, models = suite
    ids = random_text(40, np.random.RandomState(12))
    win = make_windows(ids, 8, 3)
    assert win.keep_max == 5 and _kept_slots(win, 0, 1)[0] is None and _kept_slots(win, 1, 1)[0].shape == (1, 5)
    kw = dict(window=8, overlap=3, kernel=KernelConfig(form=form, vocab_chunk=5000, position_block=4))
    stacked = stack_params([m.params for m in models])
    cfg = models[0].config
    compact = compare_stacked(stacked, cfg, ids, window_batch=1, **kw)
    full = compare_stacked(stacked, cfg, ids, window_batch=win.num_windows, **kw)
    for k in full:
        np.testing.assert_allclose(compact[k], full[k], rtol=1e-5, atol=1e-6)
