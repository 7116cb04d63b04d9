"""Agreement metrics and top-k beside the KL, from the same vocab chunks (kernels/divergence.py).

Why here: every form of the divergence kernel (and the naive baseline) scans a seed's logits z one
vocab chunk at a time and never holds [S,P,V]; these are the pieces that ride along in that scan.
Axes: S seeds, P positions (a block, last in the raw outputs), C vocab chunk, K top-k, V_r real vocab.

top1 — each seed's argmax over the real vocab, online: chunks come in increasing id order, so the id
of the running max m is replaced only when a chunk's max is strictly larger (m_new > m_old, the
running max the kernel already carries for its normaliser). Among equal logits the lowest id wins,
as with jnp.argmax. top1_agree[i,j] = [argmax_i = argmax_j] (diagonal 1).

top-k — the running K largest logits and their ids [S,P,K]; per chunk `lax.top_k` of the chunk
(masked columns at −inf / −1e30), merged with the running K by one more `lax.top_k` over the
running-then-chunk candidates. `lax.top_k` puts the lower index first among equals and every running
id is below every chunk id, so ties again go to the lowest id, and rank 0 is top1's argmax (used as
such when both are on). Probabilities from the final normaliser, p = e^{(z − m) − log s} (m, s the
online max and rescaled sum), i.e. over the real vocab, descending.

js — JS(p_i,p_j) = ½KL(p_i‖μ) + ½KL(p_j‖μ), μ = (p_i + p_j)/2, nats. Per id, with d = lp_i − lp_j,
a = log 2 − log1p(e^{−|d|}) and lμ = max(lp_i, lp_j) − a (no p underflows: all in log space),

    t = ½[p_i(lp_i − lμ) + p_j(lp_j − lμ)] = ½[p_i(a − relu(−d)) + p_j(a − relu(d))]

which is the sum of the two KLs' φ-terms p(lp − lμ) − p + μ (the −p + μ parts cancel), so t ≥ 0
in exact arithmetic: clamping each term at 0 removes only rounding, as for the KL. It needs
normalised log-probs, so the one-pass form runs a second pass over the chunks for it (opt-in: an
exp and a log1p per pair and id). Symmetrised and its diagonal zeroed exactly at the end.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from seedkl_jax.config import METRICS
from seedkl_jax.errors import SeedKLError


def check_metrics(metrics, topk: int, vocab_size: int) -> tuple[bool, bool, int]:
    """(top1, js, K) from `metrics` (a subset of config.METRICS that includes "kl") and `topk` (0 = off)."""
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    bad = [m for m in metrics if m not in METRICS]
    if bad or "kl" not in metrics:
        raise SeedKLError(f"metrics: {metrics!r}; pass a tuple of {METRICS} that includes 'kl', e.g. ('kl', 'top1')")
    if not 0 <= int(topk) <= vocab_size:
        raise SeedKLError(f"topk: {topk} must be in [0, {vocab_size}] (0 = no top-k; at most the real vocab)")
    return "top1" in metrics, "js" in metrics, int(topk)


def best_init(S: int, P: int, top1: bool, topk: int) -> tuple:
    """The scan carry of the running argmax / top-k: (vals, ids) [S,P,K] with top-k, (ids [S,P],)
    for the argmax alone, () for neither."""
    if topk:
        return jnp.full((S, P, topk), -jnp.inf, jnp.float32), jnp.zeros((S, P, topk), jnp.int32)
    return (jnp.zeros((S, P), jnp.int32),) if top1 else ()


def best_update(carry: tuple, z, start, m_old, m_new) -> tuple:
    """Fold one chunk into the carry: z [S,P,C] logits with masked columns at −inf or −1e30, `start`
    the chunk's first id, m_old / m_new [S,P] the running max before / after this chunk."""
    if not carry:
        return carry
    if len(carry) == 1:  # argmax only: the running max is the kernel's own m
        ids = start + jnp.argmax(z, axis=-1).astype(jnp.int32)
        return (jnp.where(m_new > m_old, ids, carry[0]),)
    vals, ids = carry
    K = vals.shape[-1]
    cv, ci = jax.lax.top_k(z, min(K, z.shape[-1]))
    top, idx = jax.lax.top_k(jnp.concatenate([vals, cv], axis=-1), K)  # running first: ties keep low ids
    return top, jnp.take_along_axis(jnp.concatenate([ids, start + ci.astype(jnp.int32)], axis=-1), idx, axis=-1)


def best_outputs(carry: tuple, m, logs, top1: bool) -> dict:
    """Raw outputs (position axis last) from the final carry and normaliser m, logs = log s [S,P]:
    top1_agree [S,S,P] float32 0/1, topk_ids [S,K,P] int32, topk_prob [S,K,P] float32."""
    out = {}
    if len(carry) == 2:
        vals, ids = carry
        out["topk_ids"] = jnp.moveaxis(ids, -1, 1)
        out["topk_prob"] = jnp.moveaxis(jnp.exp((vals - m[..., None]) - logs[..., None]), -1, 1)
    if top1:
        arg = carry[1][..., 0] if len(carry) == 2 else carry[0]  # [S,P]
        out["top1_agree"] = (arg[:, None] == arg[None]).astype(jnp.float32)
    return out


def js_terms(lp, p):
    """Σ over one chunk of the clamped JS terms: lp, p [S,P,C] (0 at masked ids, where every term is
    then exactly 0) -> [S,S,P]. One seed j at a time: temporaries stay [S,P,C]."""
    log2 = math.log(2.0)

    def column(j):
        lp_j, p_j = j
        d = lp - lp_j
        a = log2 - jnp.log1p(jnp.exp(-jnp.abs(d)))
        t = p * (a - jnp.maximum(-d, 0.0)) + p_j * (a - jnp.maximum(d, 0.0))
        return 0.5 * jnp.sum(jnp.maximum(t, 0.0), axis=-1)

    return jnp.swapaxes(jax.lax.map(column, (lp, p)), 0, 1)


def js_finish(js):
    """[S,S,P] summed terms -> exactly symmetric (the two orders may round differently under fused
    multiply-adds), diagonal exactly 0."""
    S = js.shape[0]
    return 0.5 * (js + jnp.swapaxes(js, 0, 1)) * (1.0 - jnp.eye(S, dtype=js.dtype))[:, :, None]
