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
kept slot to its index in the flattened output [B·(N−1)].
"""
from __future__ import annotations

import dataclasses

import numpy as np

from seedkl_jax.errors import SeedKLError


@dataclasses.dataclass(frozen=True)
class Windows:
    """Model inputs for all windows and the map back to text order. Shapes [W,T] unless noted."""

    ids: np.ndarray        # int32 model inputs
    targets: np.ndarray    # int32 token each slot predicts (0 where the slot predicts nothing)
    mask: np.ndarray       # bool: this slot's prediction is the one kept
    dest: np.ndarray       # int64 index into the flattened output [B·(N−1)] (−1 where not kept)
    starts: np.ndarray     # [W] text index of each window's first token (−1 for padding windows)
    out_shape: tuple       # (N−1,) for one text, (B, N−1) for a batch

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
                                   starts=pad(self.starts, -1))

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


def check_window(window: int, overlap: int) -> None:
    if window < 1 or not 0 <= overlap < window:
        raise SeedKLError(f"window/overlap: need window ≥ 1 and 0 ≤ overlap < window, got window={window}, "
                          f"overlap={overlap}; e.g. --window=2048 --overlap=1024")


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
    win = Windows(ids=cat(0).astype(np.int32), targets=cat(1).astype(np.int32), mask=cat(2),
                  dest=cat(3).astype(np.int64), starts=cat(4),
                  out_shape=(N - 1,) if ids.ndim == 1 else (rows.shape[0], N - 1))
    kept = np.sort(win.dest[win.mask])
    assert np.array_equal(kept, np.arange(rows.shape[0] * (N - 1))), "every position exactly once"
    return win
