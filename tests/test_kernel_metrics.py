"""The kernel's opt-in outputs (top1_agree, js, topk_ids/topk_prob) vs a float64 numpy oracle.

Every form (onepass, pair with and without cached logits, einsum, the naive baseline) at several vocab
chunks C over V_r = 997 real ids of V = 1000 rows (the padded rows get the largest logits, so leaking
them would show): C = 128 and 300 (balanced to 125 and 250 ids: the last chunk holds padded ids),
7 (143 chunks of 7 ids: the last chunk's slice is clamped and overlaps the one before) and 4 (narrower
than K = 5), with planted ties across and inside chunks. Logits are
dyadic (exact in float32) so the oracle's argmax and its ties are the kernel's: top1 and top-k ids
must match exactly (lowest id first among equal logits), probabilities to 1e-6, JS to 1e-5 of float64
(scaled by max(1, |JS|), as the KL tests do).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
import pytest

from seedkl_jax.errors import SeedKLError
from seedkl_jax.kernels.compare import compare, compare_stacked, stack_params
from seedkl_jax.kernels.divergence import divergence_jit
from seedkl_jax.kernels.windows import make_windows
from seedkl_jax.models import hidden_states
from seedkl_jax.models.gpt_neox import NeoXConfig, init_params

S, P, D, V, VR, K = 4, 10, 9, 1000, 997, 5
ALL = ("kl", "top1", "js")


def oracle(z: np.ndarray, vocab_size: int, k: int) -> dict:
    """float64 top1_agree / js [P,S,S], topk_ids / topk_prob [P,S,K] from logits z [S,P,V]."""
    z = np.asarray(z, np.float64)[..., :vocab_size]
    m = z.max(-1, keepdims=True)
    lp = z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))
    p = np.exp(lp)
    arg = z.argmax(-1)  # [S,P]: lowest id among equal maxima
    lmu = np.logaddexp(lp[:, None], lp[None]) - math.log(2.0)  # [S,S,P,V], log of the mixture
    js = 0.5 * (p[:, None] * (lp[:, None] - lmu) + p[None] * (lp[None] - lmu)).sum(-1)
    ids = np.argsort(-z, axis=-1, kind="stable")[..., :k]  # descending, lowest id first among equals
    return {"top1_agree": np.moveaxis((arg[:, None] == arg[None]).astype(np.float64), -1, 0),
            "js": np.moveaxis(js, -1, 0), "topk_ids": np.moveaxis(ids, 0, 1),
            "topk_prob": np.moveaxis(np.take_along_axis(p, ids, -1), 0, 1)}


def check(out: dict, want: dict, S: int) -> None:
    out = {k: np.asarray(v) for k, v in out.items()}
    assert out["top1_agree"].dtype == np.float32 and out["js"].dtype == np.float32
    assert out["topk_ids"].dtype == np.int32 and out["topk_prob"].dtype == np.float32
    np.testing.assert_array_equal(out["top1_agree"], want["top1_agree"])
    np.testing.assert_array_equal(out["topk_ids"], want["topk_ids"])
    np.testing.assert_allclose(out["topk_prob"], want["topk_prob"], rtol=0, atol=1e-6)
    err = np.abs(out["js"] - want["js"]) / np.maximum(1.0, np.abs(want["js"]))
    assert err.max() <= 1e-5, f"js: max scaled error {err.max():.2e}"
    js = out["js"]
    assert np.all(js >= 0) and np.array_equal(js, np.swapaxes(js, -1, -2))
    assert np.all(np.diagonal(js, axis1=-2, axis2=-1) == 0)
    assert np.all(np.diagonal(out["top1_agree"], axis1=-2, axis2=-1) == 1)
    assert np.all(np.diff(out["topk_prob"], axis=-1) <= 0), "top-k probabilities must descend"


def _dyadic(rng, shape, denom):
    return (rng.randint(-16, 17, shape) / denom).astype(np.float32)


def dyadic_logits(case: str, offset: float = 10.0):
    """h [S,P,D], w [S,D,V] with float32-exact logits (sums of k/1024 below 2^13), seeds perturbed
    from a common draw so that their argmaxes agree at some positions and not at others, and with
    planted exact ties: ids 499 = 500 (across a chunk boundary at every C tested: chunks are
    balanced to ⌈V_r/n⌉ = 125, 250, 4 ids; 7 has it inside) and 601 = 602 (inside a chunk), lifted by `offset` so
    they reach the top at some positions; seed 1 prefers 500 by 1/8."""
    rng = np.random.RandomState(0)
    h = _dyadic(rng, (1, P, D), 8.0) + _dyadic(rng, (S, P, D), 32.0)
    w = _dyadic(rng, (1, D, V), 8.0) + _dyadic(rng, (S, D, V), 32.0)
    h[..., 0] = 1.0  # feature 0 adds the row W[:, 0, :] to every position's logits
    w[:, :, [500, 602]] = w[:, :, [499, 601]]
    w[:, 0, [499, 500, 601, 602]] += offset
    w[1, 0, 500] += 0.125
    if case == "very_negative":
        w[:, 0, :] -= 4096.0  # all logits near −4096 (still exact: 13 integer bits, 10 fractional)
    w[:, :, VR:] = 64.0  # padded rows, huge logits: must stay masked
    return h, w


FORMS = [("onepass", None, "fused"), ("pair", False, "fused"), ("pair", True, "fused"), ("einsum", False, "fused"),
         ("pair", None, "naive")]


@pytest.mark.parametrize("form,cache,kernel", FORMS)
@pytest.mark.parametrize("chunk", [128, 300, 7, 4])
def test_metrics_match_float64_oracle(form, cache, kernel, chunk):
    if kernel == "naive" and chunk != 128:
        pytest.skip("the naive baseline has no chunks")
    h, w = dyadic_logits("plain")
    z = np.einsum("spd,sdv->spv", h.astype(np.float64), w.astype(np.float64))
    want = oracle(z, VR, K)
    targets = np.arange(P) % VR
    out = divergence_jit(h, w, targets, vocab_size=VR, vocab_chunk=chunk, position_block=4, form=form,
                         cache_logits=cache, kernel=kernel, metrics=ALL, topk=K)
    assert out["top1_agree"].shape == (P, S, S) and out["topk_ids"].shape == (P, S, K)
    check(out, want, S)
    # the test can fail: agreement varies, the planted ties are there and resolved to the lower id
    off = want["top1_agree"][:, ~np.eye(S, dtype=bool)]
    assert 0 < off.mean() < 1
    top2 = want["topk_ids"][:, 0, :2].tolist()  # seed 0: both planted ties reach the top somewhere
    assert [499, 500] in top2 and [601, 602] in top2 and 500 in want["topk_ids"][:, 1, 0]
    assert want["js"].max() > 0.01
    # top1 alone (no top-k carried: the argmax reuses the running max) gives the same agreement
    alone = divergence_jit(h, w, targets, vocab_size=VR, vocab_chunk=chunk, position_block=4, form=form,
                           cache_logits=cache, kernel=kernel, metrics=("kl", "top1"))
    assert set(alone) == {"kl", "surprisal", "entropy", "kl_uniform", "top1_agree"}
    np.testing.assert_array_equal(np.asarray(alone["top1_agree"]), want["top1_agree"])
    np.testing.assert_array_equal(np.asarray(alone["kl"]), np.asarray(out["kl"]))  # the KL is untouched


@pytest.mark.parametrize("form,cache,kernel", FORMS)
@pytest.mark.parametrize("case", ["random", "very_negative", "near_identical"])
def test_js_and_topk_at_hard_logits(form, cache, kernel, case):
    """Logits of several nats (random, not dyadic), all near −4096, or two seeds almost equal (JS ~1e-9)."""
    rng = np.random.RandomState(1)
    if case == "very_negative":
        h, w = dyadic_logits(case)
    else:
        h = rng.randn(S, P, D).astype(np.float32)
        w = (rng.randn(S, D, V) * 1.5).astype(np.float32)
        if case == "near_identical":
            w[1] = w[0] * (1 + 1e-4)
        w[:, :, VR:] = 20.0
    z = np.einsum("spd,sdv->spv", h.astype(np.float64), w.astype(np.float64))
    want = oracle(z, VR, K)
    out = divergence_jit(h, w, np.zeros(P, np.int32), vocab_size=VR, vocab_chunk=300, position_block=4,
                         form=form, cache_logits=cache, kernel=kernel, metrics=ALL, topk=K)
    check(out, want, S)


def test_bad_metrics():
    h, w = dyadic_logits("plain")
    for kw, msg in [(dict(metrics=("top1",)), "kl"), (dict(metrics=("kl", "churn")), "churn"),
                    (dict(topk=-1), "topk"), (dict(topk=VR + 1), "topk")]:
        with pytest.raises(SeedKLError, match=msg):
            divergence_jit(h, w, np.zeros(P, np.int32), vocab_size=VR, **kw)


def tiny_suite(n_seeds=3):
    """Random-init GPT-NeoX seeds that share most of their weights (each = a common draw + 0.3× its
    own), output layer ×25, so logits spread over nats and argmaxes agree at some positions only."""
    cfg = NeoXConfig(vocab_size=V, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                     max_position_embeddings=64)
    base = init_params(cfg, jax.random.PRNGKey(100))
    params = []
    for s in range(n_seeds):
        p = jax.tree.map(lambda b, o: np.asarray(b + 0.3 * o), base, init_params(cfg, jax.random.PRNGKey(s)))
        p["embed_out"]["kernel"] = p["embed_out"]["kernel"] * 25.0
        p["embed_out"]["kernel"][:, VR:] = np.abs(p["embed_out"]["kernel"][:, :3]) * 4  # padded rows near the top
        params.append(p)
    return cfg, params


@dataclasses.dataclass
class FakeModel:  # what compare() needs from a loaded Model
    params: dict
    config: NeoXConfig
    name: str
    real_vocab_size: int | None = VR


def test_compare_stacked_on_a_tiny_neox():
    """Through the jitted compare step (one window): oracle from the model's own hidden states."""
    cfg, params = tiny_suite()
    stacked = stack_params(params)
    ids = np.random.RandomState(2).randint(0, VR, 41)
    out = compare_stacked(stacked, cfg, ids, vocab_size=VR, metrics=("js", "kl", "top1"), topk=3)
    h = jax.vmap(lambda p: hidden_states(p, cfg, ids[None, :-1]))(stacked)[:, 0]  # [S,40,D]
    z = np.einsum("spd,sdv->spv", np.asarray(h, np.float64), np.asarray(stacked["embed_out"]["kernel"], np.float64))
    want = oracle(z, VR, 3)
    assert out["topk_ids"].shape == (40, 3, 3) and out["js"].shape == (40, 3, 3)
    check(out, want, 3)
    off = want["top1_agree"][:, ~np.eye(3, dtype=bool)]
    assert 0 < off.mean() < 1 and want["js"].max() > 0.01
    # defaults unchanged: no new keys; compare() passes metrics/topk through (tuple params, one forward per seed)
    assert set(compare_stacked(stacked, cfg, ids, vocab_size=VR)) == {"kl", "surprisal", "entropy", "kl_uniform"}
    via = compare([FakeModel(p, cfg, f"s{i}") for i, p in enumerate(params)], ids, metrics=("kl", "top1"), topk=2)
    np.testing.assert_array_equal(via["top1_agree"], out["top1_agree"])
    np.testing.assert_array_equal(via["topk_ids"], out["topk_ids"][..., :2])
    assert "js" not in via


@pytest.mark.parametrize("form", ["onepass", "pair"])
def test_metrics_on_kept_slots_and_windows(form):
    """Sliding windows: later windows score only their kept slots; the new outputs stitch like the KL
    and equal scoring every slot of every window."""
    from seedkl_jax.config import KernelConfig

    cfg, params = tiny_suite()
    stacked = stack_params(params)
    ids = np.random.RandomState(3).randint(0, VR, 40)
    win = make_windows(ids, 8, 3)
    kw = dict(vocab_size=VR, window=8, overlap=3, metrics=ALL, topk=4,
              kernel=KernelConfig(form=form, vocab_chunk=300, position_block=4))
    compact = compare_stacked(stacked, cfg, ids, window_batch=1, **kw)
    full = compare_stacked(stacked, cfg, ids, window_batch=win.num_windows, **kw)
    assert compact["topk_ids"].dtype == np.int32 and compact["topk_ids"].shape == (39, 3, 4)
    np.testing.assert_array_equal(compact["topk_ids"], full["topk_ids"])
    np.testing.assert_array_equal(compact["top1_agree"], full["top1_agree"])
    for k in ("js", "topk_prob", "kl"):
        np.testing.assert_allclose(compact[k], full[k], rtol=1e-5, atol=1e-6)


def test_last_only_scores_each_texts_last_prediction():
    """last_only (the ICL probe's targets): the same numbers as scoring every position, at each row's last
    prediction only, the position axis dropped; one text [N] gives scalars per seed pair."""
    cfg, params = tiny_suite()
    stacked = stack_params(params)
    rows = np.random.RandomState(4).randint(0, VR, (3, 12))
    kw = dict(vocab_size=VR, window=11, overlap=0, metrics=ALL, topk=2)
    full = compare_stacked(stacked, cfg, rows, **kw)
    last = compare_stacked(stacked, cfg, rows, last_only=True, **kw)
    assert set(last) == set(full) and last["kl"].shape == (3, 3, 3) and last["surprisal"].shape == (3, 3)
    for k in full:
        np.testing.assert_allclose(last[k], full[k][:, -1], rtol=1e-5, atol=1e-6, err_msg=k)
    one = compare_stacked(stacked, cfg, rows[0], last_only=True, **kw)
    np.testing.assert_allclose(one["kl"], last["kl"][0], rtol=1e-5, atol=1e-6)
