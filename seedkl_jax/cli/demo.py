"""`seedkl demo`: train a mini seed suite offline and run the whole study on it (README's first command).

    seedkl demo                      # 3 sizes x 4 seeds x 19 checkpoints (minutes on 2 CPU cores)
    seedkl demo --quick              # 2 sizes x 3 seeds x 9 checkpoints, < 1 min (CI)
    seedkl demo --warmup=10 --lr=3e-3 --workdir=/tmp/lab1 --out=lab1   # a lab variant

What it does, with nothing to download: writes a toy language's corpus (a training sample and a
held-out evaluation sample with gold part-of-speech tags) under --workdir, trains the sizes x seeds
on it (checkpoints at log-spaced steps), runs the normal `seedkl run` study on that suite into --out
(report.md, figures/, tables, findings.json: docs/outputs.md) and prints each finding's verdict.

A second run with the same settings reuses the trained suite (and the study's finished groups);
interrupted (Ctrl-C), it resumes the same way. Trainer flags left unset take the default (or
--quick) suite's value. Exit status: 0 done, 2 bad input (one error line), 130/143 interrupted.
"""
from __future__ import annotations

import dataclasses

from absl import flags

_WORKDIR = flags.DEFINE_string("workdir", None, "Trained suite + corpus; default $SEEDKL_CACHE/demo/default "
                               "(or .../quick), else ~/.cache/seedkl/demo/...")
_OUT = flags.DEFINE_string("out", "seedkl-demo", "Study outputs (report.md, figures/, parquet tables, "
                           "findings.json).")
_QUICK = flags.DEFINE_boolean("quick", False, "Small suite (2 sizes x 3 seeds, 128 steps): a first look / CI.")
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Recompute the study in --out (the suite is retrained "
                                  "only when its settings change).")
_WIDTHS = flags.DEFINE_list("widths", None, "Model widths, one size each (multiples of 8*heads); "
                            "default suite 32,64,128, --quick 32,64.")
_LAYERS = flags.DEFINE_integer("layers", None, "Layers of every size (default 2).")
_HEADS = flags.DEFINE_integer("heads", None, "Attention heads of every size (default 4).")
_SEEDS = flags.DEFINE_list("seeds", None, "Seeds (each sets init and data order), at least 2; "
                           "default 1,2,3,4, --quick 1,2,3.")
_STEPS = flags.DEFINE_integer("steps", None, "Training steps (default 1024, --quick 128).")
_WARMUP = flags.DEFINE_integer("warmup", None, "Linear warm-up steps, then cosine decay to lr*final_lr_frac "
                               "(default 100, --quick 16).")
_LR = flags.DEFINE_float("lr", None, "Peak learning rate of AdamW (default 0.001).")
_FINAL_LR_FRAC = flags.DEFINE_float("final_lr_frac", None, "Final learning rate as a fraction of --lr "
                                    "(default 0.1).")
_BATCH = flags.DEFINE_integer("batch", None, "Sequences per seed per step (default 12, --quick 8).")
_CONTEXT = flags.DEFINE_integer("context", None, "Training context in tokens, also the study's window "
                                "(default 64, --quick 32).")
_CKPT_EVERY = flags.DEFINE_integer("ckpt_every", None, "Regular checkpoints every N steps besides the "
                                   "log-spaced ones; 0 = none (default 0).")
_CKPT_PER_OCTAVE = flags.DEFINE_integer("ckpt_per_octave", None, "Log-spaced checkpoints per doubling of the "
                                        "step from step 8 on; 1 = powers of two only (default 2, --quick 1).")
_TRAIN_SENTENCES = flags.DEFINE_integer("train_sentences", None, "Sentences in the training sample "
                                        "(default 60000, --quick 6000).")
_EVAL_SENTENCES = flags.DEFINE_integer("eval_sentences", None, "Sentences in the held-out evaluation sample "
                                       "(default 500, --quick 150).")
_N_BOOT = flags.DEFINE_integer("n_boot", 1000, "Bootstrap replicates for the summary's 95% intervals.")


def build_config():
    """DemoConfig from the parsed flags (unset trainer flags keep the chosen preset's values)."""
    from seedkl_jax.lab.demo import DEFAULT_TRAIN, QUICK_TRAIN, DemoConfig
    from seedkl_jax.errors import SeedKLError

    base = QUICK_TRAIN if _QUICK.value else DEFAULT_TRAIN
    changes = {"layers": _LAYERS.value, "heads": _HEADS.value, "steps": _STEPS.value,
               "warmup": _WARMUP.value, "lr": _LR.value, "final_lr_frac": _FINAL_LR_FRAC.value,
               "batch": _BATCH.value, "context": _CONTEXT.value, "ckpt_every": _CKPT_EVERY.value,
               "ckpt_per_octave": _CKPT_PER_OCTAVE.value}
    for name, flag in (("widths", _WIDTHS), ("seeds", _SEEDS)):
        if flag.value is not None:
            try:
                changes[name] = tuple(int(v) for v in flag.value)
            except ValueError:
                raise SeedKLError(f"--{name}={','.join(flag.value)}: not a comma list of integers; "
                                  f"e.g. --{name}=1,2,3") from None
    if changes.get("seeds") is not None and len(changes["seeds"]) < 2:
        raise SeedKLError(f"--seeds={','.join(_SEEDS.value)}: needs at least 2 seeds to compare")
    if _WARMUP.value is None and _STEPS.value is not None:  # keep the preset's warm-up fraction
        changes["warmup"] = min(base.warmup, _STEPS.value)
    train = dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})
    train.validate()
    return DemoConfig(workdir=_WORKDIR.value, out=_OUT.value, quick=_QUICK.value, train=train,
                      train_sentences=_TRAIN_SENTENCES.value, eval_sentences=_EVAL_SENTENCES.value,
                      overwrite=_OVERWRITE.value, n_boot=_N_BOOT.value)


def main(argv):
    from seedkl_jax.errors import SeedKLError

    if len(argv) > 1:
        raise SeedKLError(f"unexpected arguments {argv[1:]}; seedkl demo takes only --flags")
    from seedkl_jax.kernels.compare import use_compilation_cache
    from seedkl_jax.lab.demo import demo

    use_compilation_cache()  # a second process reuses this one's compiled steps
    demo(build_config())
    return 0
