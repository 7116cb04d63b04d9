"""Causal multi-head attention core shared by the model families (after the q/k/v projections).

Axes: B batch, T positions, H heads, K head width, Tq a block of queries.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# Query block of the causal attention (see `causal_attention`).
ATTENTION_BLOCK = 128


def causal_attention(q, k, v, bias_mask, precision, block: int | None = None):
    """q, k, v [B,T,H,K]; bias_mask [B,1,T,T] additive (0 or float32-min) -> [B,T,H,K].

    Causal: the queries of block [q0, q1) see keys < q1 only, so each block scores just that prefix
    — about half the T x T work, and the [B,H,Tq,q1] temporaries stay far smaller than [B,H,T,T].
    Keys past q1 are masked anyway (their softmax weight is exactly 0), so the result is the same.
    q, k, v go head-major ([B,H,T,K]) once, not per block: the per-block matmuls then read
    contiguous slices (faster on CPU; the measurement is in benchmarks/results/HISTORY.md).
    Scores and softmax in float32, as HF.
    """
    T, K = q.shape[1], q.shape[-1]
    block = ATTENTION_BLOCK if block is None else block
    qh, kh, vh = (jnp.swapaxes(x, 1, 2) for x in (q, k, v))  # [B,H,T,K]
    outs = []
    for q0 in range(0, T, block):
        q1 = min(q0 + block, T)
        scores = jnp.einsum("bhqk,bhsk->bhqs", qh[:, :, q0:q1], kh[:, :, :q1], precision=precision)
        scores = scores.astype(jnp.float32) * (K ** -0.5) + bias_mask[:, :, q0:q1, :q1]
        weights = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
        outs.append(jnp.einsum("bhqs,bhsk->bhqk", weights, vh[:, :, :q1], precision=precision))
    return jnp.swapaxes(jnp.concatenate(outs, axis=2), 1, 2)
