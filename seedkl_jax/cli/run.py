"""`seedkl run`: the convergence study on a seed suite, configured by absl flags (flagfiles work:
`seedkl run --flagfile=study.flags`).

A suite starts from `--preset` (polypythia: EleutherAI/pythia-{size}-seed{seed} at revision
step{step}, 5 sizes x 20 steps x seeds 1,3,5,7,9) and any of --model_template, --revision_template,
--sizes, --steps, --seeds replaces that part. For local checkpoints:

  seedkl run --preset= --model_template=/data/suite/{size}/seed{seed}/step{step} --revision_template= \\
      --sizes=14m,70m --steps=0,16,256,2000 --seeds=1,2,3 --text=eval.txt --out=results/

Resume, and one writer per folder:

  seedkl run --flagfile=study.flags           # killed? rerun the same command: finished groups are kept
  seedkl run --flagfile=study.flags --wait    # queue behind another run writing the same --out

The flags are generated from seedkl_jax/config.py's StudyConfig (cli/flags.py); their names are
fixed: external scripts use them. Exit status: 0 done, 2 bad input or environment (one error line;
every checkpoint is checked before any compute), 1 a bug, 130 / 143 interrupted by SIGINT / SIGTERM
(one line; rerun the same command to resume).
"""
from __future__ import annotations

from absl import flags

from seedkl_jax.cli import flags as config_flags
from seedkl_jax.config import StudyConfig
from seedkl_jax.errors import SeedKLError


def _preset_help() -> str:
    from seedkl_jax.study.suite import describe_presets

    return " Presets:\n" + describe_presets()


config_flags.define(StudyConfig, module_name=__name__, extra_help={"preset": _preset_help()})


def build_config(flag_values: flags.FlagValues = flags.FLAGS) -> StudyConfig:
    """StudyConfig from the parsed flags. The command line's one special case: `--pos=stanza` given
    explicitly makes a missing stanza an error (the default only warns). (A local --model_template
    implying --revision_template='' is config.SuiteConfig's own rule, for Python users too.)"""
    explicit_stanza = flag_values["pos"].present and flag_values["pos"].value == "stanza"
    return config_flags.build(StudyConfig, flag_values, pos_required=explicit_stanza)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise SeedKLError(f"seedkl run: unexpected argument(s) {argv[1:]}; every setting is a --flag")
    from seedkl_jax.kernels.compare import use_compilation_cache
    from seedkl_jax.study.run import run_study

    cfg = build_config()
    use_compilation_cache(cfg.output.cache_dir)  # a second process reuses this one's compiled steps
    report = run_study(cfg)
    print(f"report: {report}")
    return 0
