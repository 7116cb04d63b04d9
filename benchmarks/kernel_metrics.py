"""What the kernel's opt-in outputs cost: kl alone vs kl+top1 vs kl+top1+top-k vs kl+top1+js, side by side.

    python benchmarks/kernel_metrics.py [--sizes=14m,70m] [--seeds=5] [--positions=256]
                                        [--forms=onepass] [--topk=5] [--repeats=3]

The fused kernel alone (`divergence_jit`, the backend's default C and Pb) on Pythia shapes: width D
of the size, V = 50,304 rows of which V_r = 50,277 are real, S seeds, P positions. h is unit-normal
(what a final layer norm gives) and W normal with sd 2.5/sqrt(D), so the logits spread like a
trained model's (sd ~2.5); the kernel's cost does not depend on the values. Every configuration of
a size is compiled first, then all are timed interleaved (best of --repeats) so load drift on a
shared machine hits them alike. Prints time, the ratio to kl alone, the added ms per 1,000
positions, and XLA's compiled temp memory (the opt-in outputs must not add an [S,P,V] buffer).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from absl import app, flags

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
import common  # noqa: E402

_SIZES = flags.DEFINE_list("sizes", ["14m", "70m"], "Pythia sizes (their width D)")
_SEEDS = flags.DEFINE_integer("seeds", 5, "S: seeds")
_POSITIONS = flags.DEFINE_integer("positions", 256, "P: positions per call")
_FORMS = flags.DEFINE_list("forms", [], "KL forms (default: the backend's default form)")
_TOPK = flags.DEFINE_integer("topk", 5, "K of the top-k configuration")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed calls per configuration (best is reported)")


def configs(k: int) -> list[tuple[str, tuple[str, ...], int]]:
    """(label, metrics, topk) in the order they are printed; the first is the baseline."""
    return [("kl", ("kl",), 0), ("kl+top1", ("kl", "top1"), 0), (f"kl+top1+top{k}", ("kl", "top1"), k),
            ("kl+top1+js", ("kl", "top1", "js"), 0)]


def main(argv):
    del argv
    import jax
    import numpy as np

    from seedkl_jax.kernels.defaults import default_form
    from seedkl_jax.kernels.divergence import divergence_jit

    S, P, V, Vr = _SEEDS.value, _POSITIONS.value, common.PYTHIA_VOCAB, common.REAL_VOCAB
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], check=False).stdout.strip()
    forms = _FORMS.value or [default_form()]
    print(f"# kernel_metrics: S={S}, P={P}, V={V} (V_r={Vr}), device {jax.devices()[0].device_kind}, "
          f"{os.cpu_count()} CPUs, commit {commit}, forms {','.join(forms)}")
    print(f"{'size':<6}{'D':>5}{'form':>9}{'outputs':>18}{'time s':>9}{'x kl':>7}{'+ms/1k pos':>12}{'temp MB':>9}")
    rng = np.random.default_rng(0)
    for size in _SIZES.value:
        D = common.SHAPES[size][0]
        h = jax.device_put(rng.standard_normal((S, P, D), np.float32))
        w = jax.device_put((rng.standard_normal((S, D, V), np.float32) * (2.5 / np.sqrt(D))).astype(np.float32))
        t = jax.device_put(rng.integers(0, Vr, P).astype(np.int32))
        for form in forms:
            runs, temps = [], []
            for _, metrics, k in configs(_TOPK.value):
                compiled = divergence_jit.lower(h, w, t, None, vocab_size=Vr, form=form, metrics=metrics,
                                                topk=k).compile()
                runs.append(lambda c=compiled: c(h, w, t, None))
                temps.append(compiled.memory_analysis().temp_size_in_bytes)
            times = common.interleaved_best(runs, _REPEATS.value)
            for (label, _, _), secs, temp in zip(configs(_TOPK.value), times, temps):
                print(f"{size:<6}{D:>5}{form:>9}{label:>18}{secs:>9.3f}{secs / times[0]:>7.2f}"
                      f"{(secs - times[0]) / P * 1e6:>12.1f}{temp / 2 ** 20:>9.1f}", flush=True)


if __name__ == "__main__":
    app.run(main)
