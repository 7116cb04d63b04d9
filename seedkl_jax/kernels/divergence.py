"""Per-position divergences between S seeds' next-token distributions, without ever holding [S,P,V].

Why: the paper's pipeline writes every seed's full-vocabulary log-prob matrix to disk (fp16) and
reloads it pair by pair. Here the S×S KLs, surprisal, entropy and the two baselines are reduced on
device, straight from the final hidden states, one vocabulary chunk of C ids and one block of Pb
positions at a time, so the working set is O(S·Pb·C), or O(S·Pb·V) with cached logits (below),
plus the S²·P results, instead of O(S·P·V): bounded whatever the number of positions P.

Axes: S seeds, P positions (leading position axes are flattened into P), Pb a block of positions,
D width, V padded vocab rows (e.g. 50,304), V_r ≤ V the real vocab (e.g. 50,277: ids ≥ V_r are
masked out — the paper's slice-and-renormalise), C vocab chunk, n = ⌈V_r/C⌉ chunks.

Inputs: h [S,P,D] final hidden states, W [S,D,V] output embeddings, x [P] next-token ids (< V_r),
r [V_r] (or K of them, [K,V_r]) optional reference log-probs (normalised; see kernels/reference.py).
For each block of Pb positions (`lax.map`), two passes over the n C-wide chunks of W (`lax.scan`):

    z_s = h_s W_s                                           [S,Pb,C] per chunk, never [S,P,V]
    pass 1: m_s = max_{v<V_r} z_s,  l_s = log Σ_{v<V_r} e^{z_s − m_s}       [S,Pb] (online rescaling)
    pass 2: lp_s = (z_s − m_s) − l_s,  p_s = e^{lp_s}  (both 0 at masked ids), accumulating
      kl[i,j]     = Σ_v p_j·φ(lp_i − lp_j)                 [S,S,Pb]
      entropy[i]  = −Σ_v p_i·lp_i                          [S,Pb]
      kl_uniform  = Σ_v (1/V_r)·φ(lp_i + log V_r)          [S,Pb]
      kl_unigram  = Σ_v e^{r_v}·φ(lp_i − r_v)              [S,Pb]
    surprisal[i] = l_i − (h_i·W_i[:, x] − m_i)              [S,Pb]  (a gather of Pb columns of W)

with φ(d) = d·e^d − e^d + 1 ≥ 0, i.e. each term of kl[i,j] is p_i(lp_i − lp_j) − p_i + p_j. As
Σ p_i = Σ p_j = 1 the sum is exactly KL(p_i‖p_j) = Σ p_i(lp_i − lp_j), but every term is ≥ 0 in
exact arithmetic, so clamping each *term* at 0 removes only rounding noise: a KL can never come out
negative, and the diagonal (lp_i − lp_i = 0, p_i − p_i = 0) is exactly 0 without special-casing.
The same form serves the two baselines (p_j replaced by the uniform / unigram distribution).
Log-probs are formed as (z − m) − l, never via lse = m + l, so they stay exact to float32 even when
all logits sit far from 0 (at z ≈ −4096 lse itself has an ulp of 5e-4).

Both passes need every chunk's z, and pass 2 needs m, l, which only exist after the last chunk of
pass 1. `cache_logits=False` recomputes z in pass 2 (the unembedding, 2·D·V FLOPs per position and
seed, runs twice); `cache_logits=True` has pass 1 emit each chunk's z as its scan output, a buffer
Z [n,S,Pb,C] that pass 2 scans over instead. The values are the same matmul on the same operands,
so both paths agree bitwise in practice (tests hold them to 1e-6). The price is the buffer:
S·Pb·n·C·4 bytes ≈ S·Pb·V·4 per block (S=5, Pb=1024, V=50,304: 1.03 GB; Pb=256: 258 MB), still
independent of P since blocks run one after another. The None default is backend-dependent, see
`default_cache_logits`.

Forms. "pair" (above) is the exact option. "einsum" computes kl_ij = −H_i − Σ_v p_i lp_j as a
batched matmul instead (clamped at 0 after the sum; it subtracts two O(log V) cross entropies).
"onepass" needs one pass and one unembedding per chunk, no logits cache: with online rescaling
(as in flash attention), per seed i and position it carries the running max m_i, s_i = Σ e_i with
e_i = e^{z_i − m_i}, R_i = Σ e_i r and per pair X_ij = Σ e_i (z_j − c_j), c_j a fixed offset per seed
and position (its max over the first chunk), rescaling them by e^{m_old − m_new} as m_i grows; with
u_i = (c_i − m_i) − log s_i,

    KL(p_i‖p_j) = (X_ii − X_ij)/s_i + u_i − u_j                   (clamped at 0; diagonal exactly 0)
    −H_i = X_ii/s_i + u_i,   KL to uniform = log V_r − H_i,   KL to unigram = −H_i − R_i/s_i

~2 flops per (i, j, v), no per-pair exp, masking by an additive −1e30 on the logits instead of
selects. Its rounding differs from pair's (a difference of O(1) numbers instead of a sum of
non-negative terms); tests hold every form to 1e-5 of float64, and `default_form` says which form
each backend runs by default (the CPU default: "onepass"). Every form is plain XLA: nothing is
compiled outside JAX or loaded at run time.
`divergence_naive` materialises [S,P,V_r] log-probs and applies the pair term math in one go: the
benchmark's baseline and a cross-check in tests.

Opt-in outputs (`metrics`, `topk`; kernels/metrics.py has their math): top1_agree [*B,S,S] and
topk_ids / topk_prob [*B,S,K] ride along in the pass that finds the max (pass 1, or the one pass),
js [*B,S,S] in the pass that has normalised log-probs (pass 2; the one-pass form adds a second pass
over the chunks for it, recomputing the logits).

Everything is float32 with `Precision.HIGHEST` matmuls.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from seedkl_jax.errors import SeedKLError
from seedkl_jax.kernels.defaults import (
    FORMS,
    ONEPASS_FORMS,
    chunking,
    default_blocks,
    default_cache_logits,
    default_form,
)
from seedkl_jax.kernels.metrics import best_init, best_outputs, best_update, check_metrics, js_finish, js_terms

HIGHEST = jax.lax.Precision.HIGHEST
# Positions per pair reduction in the XLA one-pass form: small enough that both operands of the
# broadcast-and-reduce stay in cache between their S·J reads (a batched dot_general over positions
# instead ran slower on CPU: XLA transposes both operands to make positions the batch axis).
PAIR_SUBBLOCK = 32


def _terms(lp, p, q_uni, q_ref, ref, log_vr, form):
    """Sums over one vocab chunk. lp, p [S,P,C] are 0 at masked ids, and so are q_uni [C] and q_ref
    [K,C] (the K references' probabilities), so every term below is exactly 0 there without a select.

    Returns kl [S,S,P], neg_entropy [S,P], kl_uniform [S,P], kl_unigram [S,K,P] or None.
    """
    relu_sum = lambda t: jnp.sum(jnp.maximum(t, 0.0), axis=-1)
    neg_ent = jnp.sum(p * lp, axis=-1)
    if form == "pair":  # one seed j at a time: temporaries stay [S,P,C], never [S,S,P,C]
        kl_j = jax.lax.map(lambda j: relu_sum(p * (lp - j[0]) - p + j[1]), (lp, p))  # [S_j,S_i,P]
        kl = jnp.swapaxes(kl_j, 0, 1)
    else:  # "einsum": cross entropy as a batched matmul; clamped once the chunks are summed
        kl = neg_ent[:, None] - jnp.einsum("ipc,jpc->ijp", p, lp, precision=HIGHEST)
    ku = relu_sum(p * (lp + log_vr) - p + q_uni)
    kg = None if ref is None else relu_sum(p[:, None] * (lp[:, None] - ref[:, None]) - p[:, None] + q_ref[:, None])
    return kl, neg_ent, ku, kg


def _raw(kl, neg_ent, ku, kg, m, logs, h, w, targets, extra: dict) -> dict:
    """Outputs with the position axis last (plus `extra`: the opt-in metrics, already [..,P]);
    surprisal by gathering the P target columns of W."""
    w_t = jnp.take(w, targets, axis=2)  # [S,D,P]
    z_t = jnp.einsum("spd,sdp->sp", h, w_t, precision=HIGHEST, preferred_element_type=jnp.float32)
    out = {"kl": kl, "surprisal": logs - (z_t - m), "entropy": -neg_ent, "kl_uniform": ku}
    if kg is not None:
        out["kl_unigram"] = kg
    return out | extra


def _references(reference_logprobs):
    """[V_r] or [K,V_r] reference log-probs -> float32 [K,V_r] (None stays None)."""
    return None if reference_logprobs is None else jnp.atleast_2d(jnp.asarray(reference_logprobs, jnp.float32))


def _finish(raw: dict, form: str, pos_shape: tuple, reference_logprobs) -> dict:
    """[..,P] -> position-major [*B,..]; the einsum form's KL is clamped (and its diagonal zeroed)
    here; kl_unigram [*B,S,K] loses its K axis when one reference came as [V_r]."""
    if form == "einsum":
        S = raw["kl"].shape[0]
        raw = dict(raw, kl=jnp.maximum(raw["kl"], 0.0) * (1.0 - jnp.eye(S, dtype=jnp.float32))[:, :, None])
    out = {k: jnp.moveaxis(a, -1, 0).reshape(pos_shape + a.shape[:-1]) for k, a in raw.items()}
    if reference_logprobs is not None and jnp.ndim(reference_logprobs) == 1:
        out["kl_unigram"] = out["kl_unigram"][..., 0]
    return out


def _flatten(h, w, targets, vocab_size, form):
    if form not in FORMS:
        raise SeedKLError(f"form: {form!r} is not one of {FORMS}")
    if not 1 <= vocab_size <= w.shape[-1]:
        raise SeedKLError(f"vocab_size: {vocab_size} must be in [1, {w.shape[-1]}] (the model's vocab rows)")
    pos_shape = tuple(h.shape[1:-1])
    if tuple(targets.shape) != pos_shape:
        raise SeedKLError(f"targets: shape {tuple(targets.shape)} does not match positions {pos_shape}")
    h = h.reshape(h.shape[0], -1, h.shape[-1]).astype(jnp.float32)
    return h, w.astype(jnp.float32), targets.reshape(-1), pos_shape


def _chunks(h, w, C: int, vocab_size: int):
    """(window, logits) for vocab chunk k of width C: `window(k)` -> (first id, [C] bool of the
    columns that count), `logits(start)` -> z [S,Pb,C].

    The slice start is clamped so it stays inside V; columns an earlier chunk already covered
    (id < k·C) or beyond the real vocab (id ≥ V_r) are masked instead of padding W. Every chunk
    k < n has at least one valid column (n = ⌈V_r/C⌉), so its max is finite.
    """
    cols = jnp.arange(C)

    def window(k):
        start = jnp.minimum(k * C, w.shape[-1] - C)
        ids = start + cols
        return start, (ids >= k * C) & (ids < vocab_size)

    def logits(start):
        wc = jax.lax.dynamic_slice_in_dim(w, start, C, axis=2)
        return jnp.einsum("spd,sdc->spc", h, wc, precision=HIGHEST, preferred_element_type=jnp.float32)

    return window, logits


def _logprobs(z, valid, m, logs):
    """lp, p [S,Pb,C] of one chunk's logits z under the final normaliser m, logs [S,Pb]; 0 at masked ids."""
    lp = jnp.where(valid, (z - m[..., None]) - logs[..., None], 0.0)
    return lp, jnp.where(valid, jnp.exp(lp), 0.0)


def _block(h, targets, w, ref, *, vocab_size: int, n: int, C: int, form: str, cache: bool,
           top1: bool = False, js: bool = False, topk: int = 0) -> dict:
    """Both vocab passes for one block of positions: h [S,Pb,D], targets [Pb] -> raw outputs [..,Pb].

    cache=True: pass 1 also emits each chunk's logits (scan output, [n,S,Pb,C] = S·Pb·V' floats,
    V' = n·C) and pass 2 reads them back instead of repeating the matmul. top1/topk ride along in
    pass 1 (they need the running max), js in pass 2 (it needs the normaliser).
    """
    S, P, _ = h.shape
    log_vr = math.log(vocab_size)
    window, logits = _chunks(h, w, C, vocab_size)

    def lse_step(carry, k):  # online logsumexp: rescale the running sum when the max grows
        m, s, best = carry
        start, valid = window(k)
        z = logits(start)
        zm = jnp.where(valid, z, -jnp.inf)
        m_new = jnp.maximum(m, zm.max(-1))
        s = s * jnp.exp(m - m_new) + jnp.exp(zm - m_new[..., None]).sum(-1)
        best = best_update(best, zm, start, m, m_new)
        return (m_new, s, best), (z if cache else None)  # unmasked: pass 2 masks it exactly as when recomputed

    init = (jnp.full((S, P), -jnp.inf, jnp.float32), jnp.zeros((S, P), jnp.float32), best_init(S, P, top1, topk))
    (m, s, best), zs = jax.lax.scan(lse_step, init, jnp.arange(n))  # chunk 0 always has a valid column
    logs = jnp.log(s)

    def acc_step(acc, x):
        k, z = x
        start, valid = window(k)
        z = logits(start) if z is None else z  # the same values either way: one matmul, same operands
        lp, p = _logprobs(z, valid, m, logs)
        r = None if ref is None else jnp.where(valid, jax.lax.dynamic_slice_in_dim(ref, start, C, axis=1), 0.0)
        q_ref = None if ref is None else jnp.where(valid, jnp.exp(r), 0.0)
        new = _terms(lp, p, jnp.where(valid, 1.0 / vocab_size, 0.0), q_ref, r, log_vr, form)
        new += (js_terms(lp, p) if js else None,)
        return tuple(a if b is None else a + b for a, b in zip(acc, new)), None

    zeros, pairs = jnp.zeros((S, P), jnp.float32), jnp.zeros((S, S, P), jnp.float32)
    acc = (pairs, zeros, zeros, None if ref is None else jnp.zeros((S, len(ref), P)), pairs if js else None)
    (kl, neg_ent, ku, kg, js_sum), _ = jax.lax.scan(acc_step, acc, (jnp.arange(n), zs))
    extra = best_outputs(best, m, logs, top1) | ({"js": js_finish(js_sum)} if js else {})
    return _raw(kl, neg_ent, ku, kg, m, logs, h, w, targets, extra)


def _js_pass(window, logits, m, logs, n: int):
    """JS [S,S,Pb] for the one-pass form: a second pass over the n chunks, recomputing each chunk's
    logits, once the normaliser m, logs [S,Pb] is known."""
    def step(acc, k):
        start, valid = window(k)
        return acc + js_terms(*_logprobs(logits(start), valid, m, logs)), None

    S, P = m.shape
    js, _ = jax.lax.scan(step, jnp.zeros((S, S, P), jnp.float32), jnp.arange(n))
    return js_finish(js)


def _block_onepass(h, targets, w, ref, *, vocab_size: int, n: int, C: int, top1: bool = False, js: bool = False,
                   topk: int = 0) -> dict:
    """One pass over the vocab chunks for one block of positions (form "onepass"; see the module
    docstring): h [S,Pb,D], targets [Pb] -> raw outputs [..,Pb]. Carries, per seed i and position,
    relative to the running max m_i (rescaled by a_i = e^{m_old − m_new} when m_i grows):

        s_i = Σ e_i,  e_i = e^{z_i − m_i}     X_ij = Σ e_i·(z_j − c_j)  [S,S,Pb]     R_ik = Σ e_i·r_k

    c_j is a fixed per-position offset (seed j's max over the first chunk, set at k = 0), so the
    factors z_j − c_j stay O(logit spread) even when all logits sit far from 0. Then
    Σ e_i (z_i − z_j) = X_ii − X_ij + s_i (c_i − c_j), which the final formulas use. One
    broadcast product-and-sum per chunk gives every X_ij at once (the diagonal is Σ e_i (z_i − c_i),
    the entropy's term), ~2 flops per (i, j, v).

    Masking is additive: columns outside the chunk's window get logit −1e30 (finite), so e = 0
    there and e·(z − c) = 0·(−1e30) = 0 without a select per array. The carry starts at
    m = −1e30, s = X = R = 0; the first chunk always has a valid column, so a = 0 exactly once.
    top1/topk ride along (the argmax reuses m); js takes a second pass (`_js_pass`).
    """
    S, P, _ = h.shape
    window, logits = _chunks(h, w, C, vocab_size)

    def step(carry, k):
        m, c, s, X, best = carry
        start, valid = window(k)
        z = logits(start) + jnp.where(valid, 0.0, -1e30)
        m_new = jnp.maximum(m, z.max(-1))
        best = best_update(best, z, start, m, m_new)
        c = jnp.where(k == 0, m_new, c)
        a = jnp.exp(m - m_new)
        e = jnp.exp(z - m_new[..., None])  # [S,Pb,C], 0 at masked ids
        zc = z - c[..., None]
        if ref is not None:  # the K references ride along as extra columns j: X[:, S+k] = Σ e_i·r_k
            r = jax.lax.dynamic_slice_in_dim(ref, start, C, axis=1)  # [K,C]
            zc = jnp.concatenate([zc, jnp.broadcast_to(r[:, None, :], (len(ref),) + zc.shape[1:])])
        # Σ_v e_i·zc_j for all (i, j) per sub-block of positions: the reduction reads e and zc once
        # per column j, and 32 positions' worth (2·S·32·C floats) stays in cache between the reads.
        x = [jnp.sum(e[:, None, p0:p0 + PAIR_SUBBLOCK] * zc[None, :, p0:p0 + PAIR_SUBBLOCK], axis=-1)
             for p0 in range(0, P, PAIR_SUBBLOCK)]
        X = a[:, None] * X + jnp.concatenate(x, axis=-1)
        return (m_new, c, a * s + e.sum(-1), X, best), None

    zeros = jnp.zeros((S, P), jnp.float32)
    J = S + (0 if ref is None else len(ref))
    init = (jnp.full((S, P), -1e30, jnp.float32), zeros, zeros, jnp.zeros((S, J, P), jnp.float32),
            best_init(S, P, top1, topk))
    (m, c, s, X, best), _ = jax.lax.scan(step, init, jnp.arange(n))
    X, R = X[:, :S], X[:, S:]  # [S,S,Pb], [S,K,Pb]
    logs = jnp.log(s)
    x_ii = jnp.diagonal(X, 0, 0, 1).T  # [S,Pb]
    u = (c - m) - logs  # per seed: (c_i − m_i) − log s_i
    neg_ent = x_ii / s + u  # Σ p·lp
    kl = jnp.maximum((x_ii[:, None] - X) / s[:, None] + (u[:, None] - u[None]), 0.0)
    kl = kl * (1.0 - jnp.eye(S, dtype=kl.dtype))[:, :, None]  # the diagonal is 0 up to rounding: make it exact
    ku = jnp.maximum(neg_ent + math.log(vocab_size), 0.0)
    kg = None if ref is None else jnp.maximum(neg_ent[:, None] - R / s[:, None], 0.0)  # [S,K,Pb]
    extra = best_outputs(best, m, logs, top1) | ({"js": _js_pass(window, logits, m, logs, n)} if js else {})
    return _raw(kl, neg_ent, ku, kg, m, logs, h, w, targets, extra)


def divergence(h, w, targets, *, vocab_size: int, reference_logprobs=None, vocab_chunk: int | None = None,
               position_block: int | None = None, form: str | None = None, cache_logits: bool | None = None,
               metrics: tuple[str, ...] = ("kl",), topk: int = 0) -> dict[str, jax.Array]:
    """The fused, vocab-chunked kernel (traceable; call under jit).

    h [S,*B,D], w [S,D,V], targets [*B] int (< vocab_size), reference_logprobs [vocab_size],
    [K,vocab_size] (K references, one pass) or None.
    Returns kl [*B,S,S], surprisal/entropy/kl_uniform[/kl_unigram] [*B,S] (kl_unigram [*B,S,K] for
    K references), float32; with "top1" in `metrics` top1_agree [*B,S,S] (0/1, argmax_i = argmax_j),
    with "js" js [*B,S,S] (Jensen–Shannon, nats), with topk=K > 0 topk_ids [*B,S,K] int32 and
    topk_prob [*B,S,K] (each seed's K most likely real ids, descending). metrics: a subset of
    config.METRICS including "kl" (kernels/metrics.py).
    Positions run in blocks of `position_block` (Pb) so the per-chunk temporaries [S,Pb,C] stay
    cache-sized. form: "pair" | "einsum" | "onepass" (None: `default_form()`). cache_logits
    (two-pass forms): keep a block's logits Z [n,S,Pb,C] from pass 1 for pass 2 instead of
    recomputing them (None: `default_cache_logits()`). vocab_chunk / position_block None: the
    form's measured C and Pb (`default_blocks`). Peak memory is O(S·Pb·C) without the cache,
    S·Pb·V·4 bytes with it; either way independent of the number of positions.
    """
    form = form or default_form()
    h, w, targets, pos_shape = _flatten(h, w, targets, vocab_size, form)
    top1, js, topk = check_metrics(metrics, topk, vocab_size)
    S, P, D = h.shape
    cache = form not in ONEPASS_FORMS and (default_cache_logits() if cache_logits is None else bool(cache_logits))
    default_c, default_pb = default_blocks(form, cache)
    n, C = chunking(vocab_size, w.shape[-1], default_c if vocab_chunk is None else vocab_chunk)
    Pb = min(default_pb if position_block is None else int(position_block), P)
    if Pb < 1:
        raise SeedKLError(f"position_block: {position_block} must be ≥ 1")
    nb = -(-P // Pb)
    ref = _references(reference_logprobs)
    if ref is not None:  # pad to V so a chunk's dynamic slice always has C entries
        ref = jnp.pad(ref, ((0, 0), (0, w.shape[-1] - vocab_size)))
    h = jnp.pad(h, ((0, 0), (0, nb * Pb - P), (0, 0)))
    targets = jnp.pad(targets, (0, nb * Pb - P))
    # Block b holds positions i·nb + b (strided), so a position axis sharded over devices stays
    # sharded inside every block and all devices work on each block together.
    hb = jnp.moveaxis(h.reshape(S, Pb, nb, D), 2, 0)  # [nb,S,Pb,D]
    tb = targets.reshape(Pb, nb).T                    # [nb,Pb]
    kw = dict(w=w, ref=ref, vocab_size=vocab_size, n=n, C=C, top1=top1, js=js, topk=topk)
    if form in ONEPASS_FORMS:
        block = functools.partial(_block_onepass, **kw)
    else:
        block = functools.partial(_block, form=form, cache=cache, **kw)
    raw = jax.lax.map(lambda x: block(*x), (hb, tb))  # leaves [nb,..,Pb]
    raw = jax.tree.map(lambda a: jnp.moveaxis(a, 0, -1).reshape(a.shape[1:-1] + (nb * Pb,))[..., :P], raw)
    return _finish(raw, form, pos_shape, reference_logprobs)


def divergence_naive(h, w, targets, *, vocab_size: int, reference_logprobs=None, form: str | None = None,
                     metrics: tuple[str, ...] = ("kl",), topk: int = 0, **_unused) -> dict[str, jax.Array]:
    """Baseline: materialise all logits [S,P,V], slice the real vocab, log_softmax, then the same terms.

    Same inputs/outputs as `divergence`; peak memory grows with V (the benchmark shows by how much).
    """
    form = form or default_form()
    h, w, targets, pos_shape = _flatten(h, w, targets, vocab_size, form)
    top1, js, topk = check_metrics(metrics, topk, vocab_size)
    form = "pair" if form in ONEPASS_FORMS else form  # one pass or two is a chunking matter: no chunks here
    z = jnp.einsum("spd,sdv->spv", h, w, precision=HIGHEST, preferred_element_type=jnp.float32)
    z = z[..., :vocab_size]
    m = z.max(-1)
    logs = jnp.log(jnp.exp(z - m[..., None]).sum(-1))
    lp = (z - m[..., None]) - logs[..., None]
    ref = _references(reference_logprobs)
    q_uni = jnp.full((vocab_size,), 1.0 / vocab_size, jnp.float32)
    q_ref = None if ref is None else jnp.exp(ref)
    p = jnp.exp(lp)
    kl, neg_ent, ku, kg = _terms(lp, p, q_uni, q_ref, ref, math.log(vocab_size), form)
    S, P = m.shape  # the whole vocab is one chunk: one update of the running argmax / top-k
    best = best_update(best_init(S, P, top1, topk), z, 0, jnp.full_like(m, -jnp.inf), m)
    extra = best_outputs(best, m, logs, top1) | ({"js": js_finish(js_terms(lp, p))} if js else {})
    raw = _raw(kl, neg_ent, ku, kg, m, logs, h, w, targets, extra)
    return _finish(raw, form, pos_shape, reference_logprobs)


KERNELS = {"fused": divergence, "naive": divergence_naive}


@functools.partial(jax.jit, static_argnames=("vocab_size", "vocab_chunk", "position_block", "form", "kernel",
                                             "cache_logits", "metrics", "topk"))
def divergence_jit(h, w, targets, reference_logprobs=None, *, vocab_size, vocab_chunk=None,
                   position_block=None, form=None, kernel="fused", cache_logits=None, metrics=("kl",), topk=0):
    """`divergence` / `divergence_naive` under jit (for tests, benchmarks and direct use).

    cache_logits applies to the fused kernel only (the naive one holds all logits anyway and ignores it).
    """
    return KERNELS[kernel](h, w, targets, vocab_size=vocab_size, reference_logprobs=reference_logprobs,
                           vocab_chunk=vocab_chunk, position_block=position_block, form=form,
                           cache_logits=cache_logits, metrics=metrics, topk=topk)
