"""Sliding windows over a text longer than the model's context, and stitching results back.

Why: a 2,048-token model cannot see a 4,663-token text at once. Like the paper's pipeline, the
text is cut into windows of T tokens that start every s = window − overlap tokens; each predicted
position is kept from exactly one window — the *first* window that predicts it, which is the one
giving it the most left context. So the first window keeps all its predictions and every later
window keeps only its last s slots, each of which sees ≥ overlap + 1 tokens of context.

Text t_0..t_{N−1} (predictions for positions p = 1..N−1; position p predicts t_p from t_{<p}).
With T = min(window, N−1) and s = window − overlap, window k starts at b_k = k·s and feeds the model
t_{b_k} .. t_{b_k+T−1} (right-padded with id 0 past the text; the causal mask makes padding
harmless). Its slot τ predicts position p = b_k + τ + 1 (so the last slot predicts the token right
after the window). Position p is kept from window k(p) = max(0, ⌈(p − T)/s⌉), at slot
τ = p − 1 − b_k; K = 1 + max(0, ⌈(N − 1 − T)/s⌉) windows cover the text.

A batch of texts [B,N] is windowed row by row and the windows concatenated; `dest` maps every
kept slot to its index in the flattened output [B·(N−1)]. `keep_max` = s bounds what a later window
keeps, so compare scores only those slots (the forward still sees the whole window): on a 4,663-token
text with windows 2048/1024, 5,120 slots go through the unembedding and the KL instead of 8,192.

Masked LMs (`mlm_windows`) are scored per document, not by sliding windows: each document's
wordpieces (text layout in data/text.py: ids = [CLS] + documents, position p = wordpiece p) are cut
into chunks of ≤ window − 2 pieces, each fed as [CLS] chunk [SEP] (+ [PAD], `valid` = 0 there), and
slot τ of a chunk predicts the wordpiece in that slot itself ([CLS]/[SEP] are never kept).
"unmasked" (the paper's) feeds the ids as they are: one window per chunk. "masked" feeds each chunk
in k = MASKED_PASSES interleaved passes, pass j replacing the slots τ ≡ j (mod k) by [MASK] and
keeping only those, so every wordpiece is predicted once without seeing itself: k times the forwards.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from seedkl_jax.errors import SeedKLError
from seedkl_jax.config import check_window  # noqa: F401  (the one window rule; re-exported for callers)


@dataclasses.dataclass(frozen=True)
class Windows:
    """Model inputs for all windows and the map back to text order. Shapes [W,T] unless noted."""

    ids: np.ndarray        # int32 model inputs
    targets: np.ndarray    # int32 token each slot predicts (0 where the slot predicts nothing)
    mask: np.ndarray       # bool: this slot's prediction is the one kept
    dest: np.ndarray       # int64 index into the flattened output [B·(N−1)] (−1 where not kept)
    starts: np.ndarray     # [W] text index of each window's first token (−1 for padding windows)
    out_shape: tuple       # (N−1,) for one text, (B, N−1) for a batch
    valid: np.ndarray | None = None  # int32 [W,T]: 1 = real token (bidirectional models' attention mask)
    # Slots a window keeps at most, except a text's first window (which keeps all T): the kernel's
    # width for such windows, so the slots they drop skip the unembedding and the KL. None: no bound < T.
    keep_max: int | None = None

    @property
    def num_windows(self) -> int:
        return self.ids.shape[0]

    def pad_to(self, num_windows: int) -> Windows:
        """Append empty windows (nothing kept) so the window count is `num_windows` (fixed jit shapes)."""
        extra = num_windows - self.num_windows
        if extra <= 0:
            return self
        pad = lambda a, v: np.concatenate([a, np.full((extra,) + a.shape[1:], v, a.dtype)])
        return dataclasses.replace(self, ids=pad(self.ids, 0), targets=pad(self.targets, 0),
                                   mask=pad(self.mask, False), dest=pad(self.dest, -1),
                                   starts=pad(self.starts, -1),
                                   valid=None if self.valid is None else pad(self.valid, 0))

    def last_only(self) -> Windows:
        """Keep only each text's last prediction (a probe's target, e.g. the ICL score's): the windows still
        feed the whole text as context, but one slot per text is scored, so out_shape drops the position
        axis ((B, N−1) -> (B,), (N−1,) -> ())."""
        n = self.out_shape[-1]
        mask = self.mask & (self.dest % n == n - 1)
        return dataclasses.replace(self, mask=mask, dest=np.where(mask, self.dest // n, -1),
                                   out_shape=self.out_shape[:-1], keep_max=1)

    def stitch(self, values: np.ndarray) -> np.ndarray:
        """values [W,T,...] per slot -> out_shape + [...] in text order (kept slots only)."""
        values = np.asarray(values)
        out = np.empty((int(np.prod(self.out_shape)),) + values.shape[2:], values.dtype)
        out[self.dest[self.mask]] = values[self.mask]
        return out.reshape(self.out_shape + values.shape[2:])


def window_starts(n_tokens: int, window: int, overlap: int) -> tuple[np.ndarray, int]:
    """(starts b_k [K], window length T) for one text of `n_tokens` tokens."""
    check_window(window, overlap)
    if n_tokens < 2:
        raise SeedKLError(f"input_ids: a text of {n_tokens} token(s) has nothing to predict; pass ≥ 2 tokens")
    T, s = min(window, n_tokens - 1), window - overlap
    K = 1 + max(0, -(-(n_tokens - 1 - T) // s))
    return np.arange(K, dtype=np.int64) * s, T


def make_windows(input_ids: np.ndarray, window: int = 2048, overlap: int = 1024) -> Windows:
    """Windows for one text [N] or a batch of texts [B,N] (each row its own text)."""
    ids = np.asarray(input_ids)
    if ids.ndim not in (1, 2):
        raise SeedKLError(f"input_ids: shape {ids.shape}; pass one text [N] or a batch [B,N]")
    rows = ids[None] if ids.ndim == 1 else ids
    N = rows.shape[1]
    starts, T = window_starts(N, window, overlap)
    tau = np.arange(T)
    pos = starts[:, None] + tau[None, :] + 1                      # [K,T] predicted position
    first = np.maximum(0, -(-(pos - T) // (window - overlap)))    # window that keeps each position
    keep = (pos <= N - 1) & (first == np.arange(len(starts))[:, None])
    src = np.minimum(pos - 1, N - 1)                              # input token index at each slot
    parts = []
    for b, row in enumerate(rows):
        row = row.astype(np.int32)
        parts.append((np.where(pos - 1 <= N - 2, row[src], 0), np.where(pos <= N - 1, row[np.minimum(pos, N - 1)], 0),
                      keep, np.where(keep, b * (N - 1) + pos - 1, -1), starts))
    cat = lambda i: np.concatenate([p[i] for p in parts])
    s = window - overlap  # a later window keeps only its last s slots
    win = Windows(ids=cat(0).astype(np.int32), targets=cat(1).astype(np.int32), mask=cat(2),
                  dest=cat(3).astype(np.int64), starts=cat(4),
                  out_shape=(N - 1,) if ids.ndim == 1 else (rows.shape[0], N - 1), keep_max=s if s < T else None)
    kept = np.sort(win.dest[win.mask])
    assert np.array_equal(kept, np.arange(rows.shape[0] * (N - 1))), "every position exactly once"
    return win


MLM_SCORING = ("unmasked", "masked")
# Passes of --mlm_scoring=masked: each masks every 7th wordpiece (~14%, near BERT's 15% pre-training rate).
MASKED_PASSES = 7


@dataclasses.dataclass(frozen=True)
class MLMSpec:
    """How a masked LM scores a text: mode (MLM_SCORING) and its tokenizer's special ids."""

    mode: str
    cls_id: int
    sep_id: int
    mask_id: int
    pad_id: int
    passes: int = MASKED_PASSES

    def __post_init__(self):
        if self.mode not in MLM_SCORING:
            raise SeedKLError(f"--mlm_scoring={self.mode!r}: use one of {list(MLM_SCORING)}")


def default_window(context: int, causal: bool, window: int | None = None,
                   overlap: int | None = None) -> tuple[int, int]:
    """(window, overlap) for a model of `context` positions, filling what is not given (None): the whole
    context, half the window overlapping (GPT-NeoX 2048/1024, GPT-2 1024/512); masked LMs score
    documents in chunks: window = the context (≤ 512), never an overlap."""
    if window is None:
        window = context if causal else min(context, 512)
    if not causal:
        return int(window), 0
    return int(window), int(window) // 2 if overlap is None else int(overlap)


def mlm_windows(input_ids: np.ndarray, doc_ids: np.ndarray, spec: MLMSpec, window: int = 512) -> Windows:
    """Windows of a masked-LM text [N] (see the module docstring); out_shape (N−1,)."""
    ids, docs = np.asarray(input_ids), np.asarray(doc_ids)
    if ids.ndim != 1 or docs.shape != ids.shape:
        raise SeedKLError(f"input_ids/doc_ids: a masked LM scores one text [N] with a document id per token, got "
                          f"{ids.shape} and {docs.shape}")
    if window < 3:
        raise SeedKLError(f"window: {window} leaves no room for a wordpiece between [CLS] and [SEP]; use ≥ 3")
    chunks = []  # (first position, length) of each chunk, positions 1..N-1
    starts = np.flatnonzero(np.diff(docs[1:], prepend=-1)) + 1
    for a, b in zip(starts, [*starts[1:], len(ids)]):
        chunks += [(c, min(b, c + window - 2) - c) for c in range(a, b, window - 2)]
    T = max(n for _, n in chunks) + 2
    passes = spec.passes if spec.mode == "masked" else 1
    W = len(chunks) * passes
    win = {k: np.zeros((W, T), np.int32) for k in ("ids", "targets", "valid")}
    win["ids"][:] = spec.pad_id
    mask, dest = np.zeros((W, T), bool), np.full((W, T), -1, np.int64)
    tau = np.arange(T)
    for c, (a, n) in enumerate(chunks):
        for j in range(passes):
            w = c * passes + j
            win["ids"][w, 0], win["ids"][w, 1:n + 1], win["ids"][w, n + 1] = spec.cls_id, ids[a:a + n], spec.sep_id
            win["targets"][w, 1:n + 1] = ids[a:a + n]
            win["valid"][w, :n + 2] = 1
            keep = (tau >= 1) & (tau <= n) & ((tau - 1) % passes == j)
            if spec.mode == "masked":
                win["ids"][w, keep] = spec.mask_id
            mask[w], dest[w] = keep, np.where(keep, a + tau - 2, -1)
    used = mask.any(1)  # a masked pass past a short chunk's end keeps nothing: drop it
    out = Windows(ids=win["ids"][used], targets=win["targets"][used], mask=mask[used], dest=dest[used],
                  starts=np.repeat([a for a, _ in chunks], passes).astype(np.int64)[used], out_shape=(len(ids) - 1,),
                  valid=win["valid"][used], keep_max=-(-(T - 2) // passes) if passes > 1 else None)
    assert np.array_equal(np.sort(out.dest[out.mask]), np.arange(len(ids) - 1)), "every wordpiece exactly once"
    return out
