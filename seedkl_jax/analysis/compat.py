"""`--compat=paper`: the paper's own choices where our defaults correct them, and what each moves.

Why this file exists: a researcher must be able to redraw the paper's figures with the paper's
statistics *and* see, with this run's numbers, where our defaults differ. Three choices differ:

  choice                 paper (compat="paper")                      ours (compat="none", default)
  final-surprisal bins   surprisal under the last checkpoint of the  mean over seeds of the surprisal
                         FIRST seed of the size                      at the size's last checkpoint
  top frequency bin      every count >= 1e5 in one bin ">=1e5"       decade bins all the way up
  unigram baseline       log(count / sum), no smoothing; zero-count  add-0.5 smoothing
                         ids get log(6e-312 / sum) ~ -736 (the        (kernels.reference.unigram_logprobs)
                         denormal its counts file holds there)

The report section that quantifies each choice on a run is report/choices.py (`choice_effects`).
"""
from __future__ import annotations

import numpy as np

from seedkl_jax.config import AnalysisConfig, Compat
from seedkl_jax.data.annotate import PAPER_TOP_BIN
from seedkl_jax.errors import SeedKLError

OTHER_KL = "kl_unigram_other"  # [P,S] KL to the other choice's unigram; first-step groups only
PAPER_ZERO_COUNT = 6e-312
REPLICATES = ("final-surprisal bins from the first seed's last checkpoint; every count >= 1e5 in one "
              "frequency bin; the unsmoothed unigram with zero-count ids at log(6e-312 / total) ≈ −736")


def check(compat: str) -> Compat:
    """`compat` as the Compat enum, by the config's one rule (a named error for anything else)."""
    return AnalysisConfig(compat=compat).compat


def paper_unigram_logprobs(counts: np.ndarray, vocab_size: int | None = None) -> np.ndarray:
    """The paper's unigram log-probs [V] float64: log(c/Σc); counts < 1 become PAPER_ZERO_COUNT."""
    c = np.asarray(counts, np.float64).reshape(-1)
    V = len(c) if vocab_size is None else int(vocab_size)
    if len(c) > V:
        raise SeedKLError(f"counts: {len(c)} entries but the vocabulary has {V} ids; pass counts for the real vocabulary")
    c = np.concatenate([np.where(c < 1, 0.0, c), np.zeros(V - len(c))])
    return np.log(np.where(c > 0, c, PAPER_ZERO_COUNT)) - np.log(c.sum())


def unigram_reference(compat: str, counts: np.ndarray, vocab_size: int) -> np.ndarray:
    """The reference log-probs the kernel compares with: ours (smoothed) or the paper's."""
    from seedkl_jax.kernels.reference import unigram_logprobs
    if check(compat) == "paper":
        return paper_unigram_logprobs(counts, vocab_size)
    return unigram_logprobs(counts, vocab_size)


def other_choice(compat: str) -> str:
    """The choice a run does not use ("none" <-> "paper"): its unigram is measured at the first step too."""
    return "none" if check(compat) == "paper" else "paper"


def final_surprisal(surprisal: np.ndarray, compat: str) -> np.ndarray:
    """[P,S] surprisal at a size's last step -> [P] defining the final-surprisal bins."""
    s = np.asarray(surprisal, np.float64)
    return s[:, 0] if check(compat) == "paper" else s.mean(axis=1)


def freq_top(compat: str) -> int | None:
    return PAPER_TOP_BIN if check(compat) == "paper" else None
