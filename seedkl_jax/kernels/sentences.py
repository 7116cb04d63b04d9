"""Whole-sentence log-probabilities per seed: what minimal pairs (study/minimal_pairs.py) compare.

Causal LMs: a sentence's ids w_1..w_n are fed as [start] w_1..w_n (+ [end] with `end`), and
log P(sentence) = sum over the fed tokens after [start] of log p(token | the tokens before it).
Masked LMs (BERT): the pseudo-log-likelihood, sum over i of log p(w_i | [CLS] w_1..[MASK]..w_n [SEP])
with one forward per masked position (Salazar et al. 2020).

The softmax runs in float32 over the first `vocab_rows` rows of the head: the tokenizer's real ids
(the study's default; padding rows never get probability), or every row of the model's head (what the
paper's script does). Rows are sorted by length and right-padded per batch to a multiple of 8 (a few
compiled shapes): a causal position never sees the padding after it, a masked LM gets it masked out of
the attention.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seedkl_jax.errors import SeedKLError
from seedkl_jax.models import family as families
from seedkl_jax.models.blocks import HIGHEST

# Bytes of float32 logits one batch may hold ([B,T,vocab_rows] causal, [B,vocab_rows] masked).
LOGITS_BUDGET = 1 << 28


def sentence_logprobs(params, model_cfg: Any, sentences: Sequence[np.ndarray], *, vocab_rows: int,
                      start: int | None = None, end: int | None = None, cls: int | None = None,
                      sep: int | None = None, mask: int | None = None, pad: int = 0,
                      seed_names: Sequence[str] | None = None) -> np.ndarray:
    """log P of each sentence under each seed -> [N,S] float64 (sums of float32 log-probs).

    params: the S seeds as kernels.compare.seed_params lays them out (a tuple of pytrees, or one
    pytree with a leading S axis); sentences: N int arrays of token ids without special tokens.
    Causal families need `start` (and `end` to score an end token too); masked ones cls/sep/mask."""
    causal = families.family_of(model_cfg).causal
    if causal:
        if start is None:
            raise SeedKLError("sentence scoring: a causal LM needs a start token id")
        rows = [np.concatenate([[start], s] + ([[end]] if end is not None else [])) for s in sentences]
        owner, targets = np.arange(len(rows)), None
    else:
        if None in (cls, sep, mask):
            raise SeedKLError("sentence scoring: a masked LM needs the tokenizer's [CLS], [SEP] and [MASK] ids")
        rows, targets, owner = _masked_rows(sentences, cls, sep, mask)
    batches = _batches([len(r) for r in rows], vocab_rows, causal)
    seeds = params if isinstance(params, tuple) else None
    S = len(seeds) if seeds is not None else int(jax.tree.leaves(params)[0].shape[0])
    out = np.zeros((len(sentences), S), np.float64)
    for s in range(S):
        p = seeds[s] if seeds is not None else jax.tree.map(lambda x: x[s], params)
        row_logp = np.zeros(len(rows), np.float64)
        for idx, B, T in batches:
            ids, valid = _pad([rows[i] for i in idx], T, B, pad)
            if causal:
                r = _causal(p, jnp.asarray(ids), jnp.asarray(valid), cfg=model_cfg, vocab_rows=vocab_rows)
            else:
                pos, tgt = (jnp.asarray(np.pad(a[idx], (0, B - len(idx)))) for a in targets)
                r = _masked(p, jnp.asarray(ids), jnp.asarray(valid), pos, tgt, cfg=model_cfg, vocab_rows=vocab_rows)
            row_logp[idx] = np.asarray(r, np.float64)[:len(idx)]  # padding rows dropped
        if not np.all(np.isfinite(row_logp)):
            name = seed_names[s] if seed_names is not None else f"seed {s}"
            raise SeedKLError(f"{name}: non-finite sentence log-probabilities; the checkpoint's weights are broken")
        np.add.at(out[:, s], owner, row_logp)
    return out


def _masked_rows(sentences, cls: int, sep: int, mask: int):
    """One row per (sentence, position): [CLS] s [SEP] with that position masked -> rows,
    (masked position [R], its token [R]), owner sentence [R]."""
    rows, pos, tgt, owner = [], [], [], []
    for n, s in enumerate(sentences):
        base = np.concatenate([[cls], s, [sep]]).astype(np.int32)
        for k in range(1, len(s) + 1):
            row = base.copy()
            row[k] = mask
            rows.append(row)
            pos.append(k)
            tgt.append(int(base[k]))
            owner.append(n)
    return rows, (np.asarray(pos, np.int32), np.asarray(tgt, np.int32)), np.asarray(owner)


def _batches(lengths: list[int], vocab_rows: int, causal: bool) -> list[tuple[np.ndarray, int, int]]:
    """Rows grouped by length (row indices, batch rows B, length T): T is the batch's longest row rounded
    up to 8, B fits LOGITS_BUDGET at the longest T, so a few compiled shapes serve every batch and short
    sentences do not pay for the longest one's padding."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    T_max = -(-max(lengths) // 8) * 8
    B = int(max(1, min(256, LOGITS_BUDGET // ((T_max if causal else 1) * vocab_rows * 4), len(lengths))))
    out = []
    for i in range(0, len(order), B):
        idx = order[i:i + B]
        out.append((idx, B, -(-max(lengths[j] for j in idx) // 8) * 8))
    return out


def _pad(rows, T: int, R: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """rows -> ids [R,T] int32 (right-padded with `pad`, padding rows too), valid [R,T] int32."""
    ids = np.full((R, T), pad, np.int32)
    valid = np.zeros((R, T), np.int32)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        valid[i, :len(r)] = 1
    return ids, valid


def _f32(params):
    return jax.tree.map(lambda a: jnp.asarray(a).astype(jnp.float32), params)


@functools.partial(jax.jit, static_argnames=("cfg", "vocab_rows"))
def _causal(params, ids, valid, *, cfg, vocab_rows: int):
    """ids/valid [B,T] -> [B] sum over the valid positions t ≥ 1 of log p(ids[t] | ids[:t])."""
    z = families.logits(params, cfg, ids)[:, :-1, :vocab_rows]  # [B,T-1,rows]; float32
    logp = jax.nn.log_softmax(z.astype(jnp.float32), axis=-1)
    got = jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(valid[:, 1:] > 0, got, 0.0), axis=-1)


@functools.partial(jax.jit, static_argnames=("cfg", "vocab_rows"))
def _masked(params, ids, valid, pos, tgt, *, cfg, vocab_rows: int):
    """ids/valid [B,T], pos/tgt [B] -> [B] log p(tgt | ids) at the masked position `pos`."""
    h = families.hidden_states(params, cfg, ids, valid)  # [B,T,D']
    h = jnp.take_along_axis(h, pos[:, None, None], axis=1)[:, 0]  # [B,D']
    w = families.unembedding(_f32(params), cfg)[:, :vocab_rows]  # [D',rows]
    z = jnp.einsum("bd,dv->bv", h, w, precision=HIGHEST, preferred_element_type=jnp.float32)
    logp = jax.nn.log_softmax(z, axis=-1)
    return jnp.take_along_axis(logp, tgt[:, None], axis=-1)[:, 0]
