"""Learning-rate schedules of seed suites, for the paper's learning-rate overlay figure.

Why: the paper draws the phase boundaries next to the learning rate (its convergence phase ends
around the end of warm-up). A suite that knows its schedule carries an `LRSchedule`:

  * Pythia / PolyPythias (PYTHIA): linear warm-up over 1% of 143,000 steps (1,430), then cosine decay
    to 10% of the peak at step 143,000; peak 1e-3 for 14m/31m/70m, 6e-4 for 160m, 3e-4 for 410m.
  * `seedkl demo`'s trainer (`from_train_config`): lr*(t+1)/warmup during warm-up (its +1 makes the
    first update nonzero), cosine to final_lr_frac*lr at its last step; one peak for every size.

lr(t) = peak * (t + offset) / warmup for t < warmup, else
        peak * (final_frac + (1 - final_frac) * (1 + cos(pi * (t - warmup) / (total - warmup))) / 2).
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class LRSchedule:
    peak: tuple[tuple[str, float], ...]   # (size, peak lr) pairs; a size not listed has no curve
    warmup: int
    total: int
    final_frac: float
    offset: int = 0
    source: str = ""

    def peak_of(self, size: str) -> float | None:
        return dict(self.peak).get(str(size))

    def at(self, size: str, steps) -> np.ndarray | None:
        """Learning rate of `size` at training steps [n] (None when the size has no known peak)."""
        peak = self.peak_of(size)
        if peak is None:
            return None
        t = np.asarray(steps, np.float64)
        warm = peak * (t + self.offset) / max(self.warmup, 1)
        frac = np.clip((t - self.warmup) / max(self.total - self.warmup, 1), 0.0, 1.0)
        decay = peak * (self.final_frac + (1 - self.final_frac) * 0.5 * (1 + np.cos(np.pi * frac)))
        return np.where(t < self.warmup, warm, decay)


PYTHIA = LRSchedule(peak=(("14m", 1e-3), ("31m", 1e-3), ("70m", 1e-3), ("160m", 6e-4), ("410m", 3e-4)),
                    warmup=1430, total=143_000, final_frac=0.1,
                    source="Pythia: linear warm-up over 1,430 steps, cosine to 10% of the peak at 143,000")


def from_train_config(cfg, sizes) -> LRSchedule:
    """The schedule of seedkl_jax.lab.trainer.lr_schedule for a TrainConfig, the same for all sizes."""
    return LRSchedule(peak=tuple((str(s), float(cfg.lr)) for s in sizes), warmup=int(cfg.warmup),
                      total=int(cfg.steps), final_frac=float(cfg.final_lr_frac), offset=1,
                      source=f"demo trainer: lr {cfg.lr:g}, warm-up {cfg.warmup} steps, cosine to "
                             f"{cfg.final_lr_frac:g} x lr at step {cfg.steps}")
