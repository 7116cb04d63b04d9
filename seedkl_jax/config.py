"""One typed config for a study: `StudyConfig`, a tree of small frozen dataclasses.

Why one tree: every setting is named, typed, defaulted, documented and validated in exactly one
place. The CLI generates its absl flags from these fields (name, help, default: `flag` metadata), the
persisted study settings and the multi-host agreement check are derived from them, and the library
passes the sub-config a layer needs instead of loose keyword arguments.

This module is the ground floor: it imports nothing from seedkl_jax but `errors`, so every layer
(kernels, data, study, analysis, cli) can import the sub-config it consumes.

Tree (flag names in brackets; they are fixed, external scripts use them):
    StudyConfig
      suite:    SuiteConfig     [preset, model_template, revision_template, sizes, steps, seeds]
      text:     TextConfig      [text, tokenizer, counts, pos, vocab_size]
      scoring:  ScoringConfig   [window, overlap, mlm_scoring]
      kernel:   KernelConfig    [kernel, kernel_form, vocab_chunk, position_block, cache_logits]
      analysis: AnalysisConfig  [compat, n_boot, surprisal_seed]
      output:   OutputConfig    [out, overwrite, wait, cache_dir, save_pair_positions]
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any

from seedkl_jax.errors import SeedKLError


def setting(default: Any, help: str, *, flag: str | None = None, choices: tuple[str, ...] | None = None,
            cli: bool = True, results: bool = False) -> Any:
    """A config field with its CLI metadata.

    flag: the absl flag's name (default: the field's name); choices: an enum flag's values;
    cli=False: set only from Python (e.g. a mesh); results=True: the persisted groups depend on it
    (a rerun into the same --out must match it; see `results_settings`).
    """
    meta = {"help": help, "flag": flag, "choices": choices, "cli": cli, "results": results}
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults are not allowed in a config; use a tuple")
    return dataclasses.field(default=default, metadata=meta)


class Compat(str, enum.Enum):
    """Which statistical choices the analysis makes: ours (NONE) or the paper's own (PAPER)."""

    NONE = "none"
    PAPER = "paper"


class KernelForm(str, enum.Enum):
    """The fused kernel's KL form (kernels/divergence.py has the math of each)."""

    PAIR = "pair"
    EINSUM = "einsum"
    ONEPASS = "onepass"
    NATIVE = "native"


class KernelKind(str, enum.Enum):
    FUSED = "fused"
    NAIVE = "naive"


def _enum(kind: type[enum.Enum], value: Any, flag: str):
    if value is None or isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        raise SeedKLError(f"--{flag}={value!r}: must be one of {', '.join(m.value for m in kind)}") from None


def check_window(window: int, overlap: int) -> None:
    """The one rule on window/overlap numbers (the model's context is checked where it is known)."""
    if window < 1 or not 0 <= overlap < window:
        raise SeedKLError(f"window/overlap: need window ≥ 1 and 0 ≤ overlap < window, got window={window}, "
                          f"overlap={overlap}; e.g. --window=2048 --overlap=1024")


def _positive(value: int | None, flag: str) -> None:
    if value is not None and int(value) < 1:
        raise SeedKLError(f"--{flag}={value}: must be a positive integer")


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """How the divergence kernel runs. `kernels.compare.resolve_kernel(cfg, mesh, n_seeds)` fills every
    None once (the backend's measured choice) and the resolved config is passed down unchanged."""

    kernel: KernelKind = setting(KernelKind.FUSED, "Divergence kernel: fused (vocab-chunked) or naive "
                                 "(materialises all [S,P,V] log-probs; a baseline, much more memory).",
                                 choices=tuple(m.value for m in KernelKind))
    form: KernelForm | None = setting(None, "KL form of the fused kernel (see docs/method.md); default: the "
                                      "backend's measured choice.", flag="kernel_form",
                                      choices=tuple(m.value for m in KernelForm))
    vocab_chunk: int | None = setting(None, "Vocab chunk of the fused KL kernel; default: the kernel's "
                                      "benchmarked choice.")
    position_block: int | None = setting(None, "Positions per block of the fused kernel (Pb); default: the "
                                         "kernel's benchmarked choice for the form.")
    cache_logits: bool | None = setting(None, "Two-pass forms: keep each block's logits from pass 1 for pass 2 "
                                        "instead of recomputing them; default: off on CPU, on elsewhere.")

    def __post_init__(self):
        object.__setattr__(self, "kernel", _enum(KernelKind, self.kernel, "kernel"))
        object.__setattr__(self, "form", _enum(KernelForm, self.form, "kernel_form"))
        _positive(self.vocab_chunk, "vocab_chunk")
        _positive(self.position_block, "position_block")


@dataclasses.dataclass(frozen=True)
class AnalysisConfig:
    """How the persisted per-position results are summarised (analysis/, report/)."""

    compat: Compat = setting(Compat.NONE, "paper = the paper's own choices: final-surprisal bins from the first "
                             "seed, one frequency bin for counts >= 1e5, the unsmoothed unigram with the paper's "
                             "floor for zero counts; none = our corrected defaults (the report says how much each "
                             "moves the results).", choices=tuple(m.value for m in Compat))
    n_boot: int = setting(1000, "Bootstrap replicates for the summary's 95% intervals.")
    surprisal_seed: int | str | None = setting(
        None, "A seed NOT among the compared ones whose surprisal at each size's last step defines the "
        "final-surprisal bins (e.g. PolyPythia's 2: it has seeds 1..9, the paper compares 1,3,5,7,9), so the "
        "bins do not come from the seeds whose KL is measured; default: from the compared seeds (mean, or the "
        "first seed with --compat=paper). The report says which.")

    def __post_init__(self):
        object.__setattr__(self, "compat", _enum(Compat, self.compat, "compat"))
        _positive(self.n_boot, "n_boot")
