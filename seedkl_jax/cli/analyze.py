"""`seedkl analyze`: the whole analysis and report from per-pair KLs computed anywhere.

  seedkl analyze --pairs=pairs.parquet --meta=meta.parquet [--seed_metrics=seeds.parquet] \\
      [--sizes=14m,70m,160m] [--phase_steps=16,256,2000] --out=results/

PAIRS: size, step, seed_a, seed_b, position, kl (nats, KL(p_a ‖ p_b)), every ordered pair a ≠ b of
each (size, step) at every position. META: position, token_id, doc_id, optional size, count, xpos,
upos, token_str. SEEDS: size, step, seed, position with any of surprisal, entropy, kl_uniform,
kl_unigram. The full schema is in docs/analyze.md. A `seedkl run --save_pair_positions` folder's
pair_positions.parquet and token_meta.parquet are valid inputs (same findings as the run).

Exit status: 0 done, 2 bad input (one error line naming the file and the column), 1 a bug, 130 / 143
interrupted by SIGINT / SIGTERM (one line).
"""
from __future__ import annotations

from absl import flags

from seedkl_jax.cli import flags as config_flags
from seedkl_jax.config import AnalysisConfig
from seedkl_jax.errors import SeedKLError

_PAIRS = flags.DEFINE_string("pairs", None, "Per-pair KL table (parquet): size, step, seed_a, seed_b, position, kl.")
_META = flags.DEFINE_string("meta", None, "Token table (parquet): position, token_id, doc_id; optional size, count, "
                            "xpos, upos, token_str, context_xpos, context_upos, final_surprisal.")
_SEED_METRICS = flags.DEFINE_string("seed_metrics", None, "Optional per-seed table (parquet): size, step, seed, "
                                    "position with any of surprisal, entropy, kl_uniform, kl_unigram.")
_SIZES = flags.DEFINE_list("sizes", None, "Comma list: the sizes' order, smallest first (a subset selects); "
                           "default: by the parameter count in their names (14m < 70m < 1.4b).")
_OUT = flags.DEFINE_string("out", "seedkl-analysis", "Output folder (tables, phases.json, findings.json, figures/, "
                           "report.md).")
_WAIT = flags.DEFINE_boolean("wait", False, "If another seedkl process is writing to --out, wait for it to end.")
_PHASE_STEPS = flags.DEFINE_list("phase_steps", None, "The suite's reference phase boundaries on its step axis "
                                 "(convergence, divergence, reconvergence start), e.g. 16,256,2000 for PolyPythia "
                                 "(the paper's); default none: no phase lines and no phase verdict.")
# --compat, --n_boot, --surprisal_seed: generated from AnalysisConfig, as seedkl run's are
config_flags.define(AnalysisConfig, module_name=__name__)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise SeedKLError(f"seedkl analyze: unexpected argument(s) {argv[1:]}; every setting is a --flag")
    for flag in (_PAIRS, _META):
        if not flag.value:
            raise SeedKLError(f"--{flag.name}: required; give a parquet file (schema: docs/analyze.md)")
    from seedkl_jax.study.analyze import analyze

    cfg = AnalysisConfig(**config_flags.values(AnalysisConfig))  # its flag names are its field names
    report = analyze(_PAIRS.value, _META.value, _SEED_METRICS.value or None, out=_OUT.value, sizes=_SIZES.value,
                     n_boot=cfg.n_boot, compat=cfg.compat, phase_steps=_PHASE_STEPS.value or None,
                     surprisal_seed=cfg.surprisal_seed, wait=_WAIT.value)
    print(f"report: {report}")
    return 0
