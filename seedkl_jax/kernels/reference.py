"""Reference distributions for the kernel's KL-to-unigram baseline: built from token counts, checked.

Axis: V_r the real vocab (the tokenizer's ids). Both return float32 log-probs [V_r] that sum to 1
in float64 before the cast, so KL(p‖q) is finite for every model distribution p.
"""
from __future__ import annotations

import numpy as np

from seedkl_jax.errors import SeedKLError


def unigram_logprobs(counts: np.ndarray, vocab_size: int | None = None, alpha: float = 0.5) -> np.ndarray:
    """Reference log-probs [vocab_size] float32 from token counts, add-`alpha` smoothed.

    log q_v = log((c_v + α) / (Σc + α·V_r)). Every id gets mass, so KL(p‖q) is finite for any model
    (an unsmoothed zero count would make it +inf). α = 0.5 (Jeffreys / Krichevsky–Trofimov) adds
    half a pseudo-count per id: for the Pile validation counts (3.4e8 tokens, 256 zero-count ids)
    it moves < 1e-4 of the mass. Counts < 1 are treated as 0 (the shared Pile counts file stores
    denormal garbage ~6e-312 for never-seen ids). A counts array longer than `vocab_size` is refused;
    a shorter one is padded with zeros (ids the counts never saw).
    """
    c = np.asarray(counts, dtype=np.float64).reshape(-1)
    V = len(c) if vocab_size is None else int(vocab_size)
    if len(c) > V:
        raise SeedKLError(f"counts: {len(c)} entries but the vocabulary has {V} ids; "
                          "pass counts for the model's real vocabulary")
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise SeedKLError("counts: contains negative, NaN or inf entries; pass non-negative token counts")
    if alpha <= 0:
        raise SeedKLError(f"alpha: {alpha} must be > 0 so that unseen ids keep finite log-probs")
    c = np.where(c < 1, 0.0, c)
    c = np.concatenate([c, np.zeros(V - len(c))])
    return (np.log(c + alpha) - np.log(c.sum() + alpha * V)).astype(np.float32)


def check_reference(reference_logprobs, vocab_size: int) -> np.ndarray:
    """Validate reference log-probs [vocab_size] (or K of them, [K, vocab_size]: the kernel reduces
    them in the same pass) and renormalise each exactly (float64 → float32)."""
    r = np.asarray(reference_logprobs, dtype=np.float64)
    if r.ndim not in (1, 2) or r.shape[-1] != vocab_size or r.size == 0:
        raise SeedKLError(f"reference_logprobs: shape {r.shape}, expected ({vocab_size},) = one log-prob "
                          "per real vocabulary id (or [K, vocab_size] for K references); build it with "
                          "unigram_logprobs(counts, vocab_size)")
    if not np.all(np.isfinite(r)):
        raise SeedKLError("reference_logprobs: contains -inf/NaN (zero-probability ids make KL infinite); "
                          "smooth the counts, e.g. unigram_logprobs(counts, vocab_size)")
    m = r.max(-1, keepdims=True)
    return (r - (m + np.log(np.exp(r - m).sum(-1, keepdims=True)))).astype(np.float32)
