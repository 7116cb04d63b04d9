"""`seedkl run` on many hosts: run this same command on every host (or every GPU) of a job.

    python launch/multihost.py [--coordinator=HOST:PORT --num_processes=N --process_id=I]
                               [--multihost_mode=groups|global] <seedkl run flags>

Every `seedkl run` flag works unchanged (they are the same absl flags); `--out` must be a folder that
all processes see (NFS, Lustre, a GCS FUSE mount...). Without --coordinator the cluster is detected
(SLURM `srun`, Open MPI, Cloud TPU VM pods; see seedkl_jax/distributed.py); with none found it is a
plain one-process `seedkl run`. --multihost_mode picks the work split (launch/README.md says which
to use): "groups" deals whole groups to processes, "global" runs each group over every device of the
job; both in `distributed.run_study_distributed`.
Exit status: 0 done, 2 bad input or environment (a bad flag, a broken checkpoint, a busy --out: one
line), 1 anything else.
"""
from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's seedkl_jax, installed or not
from seedkl_jax import distributed  # noqa: E402
from seedkl_jax.cli import quiet_process  # noqa: E402
from seedkl_jax.cli import run as run_cli  # noqa: E402  (registers the `seedkl run` flags)
from seedkl_jax.errors import SeedKLError  # noqa: E402
from seedkl_jax.kernels.compare import use_compilation_cache  # noqa: E402

_COORDINATOR = flags.DEFINE_string("coordinator", None, "HOST:PORT of process 0's coordinator "
                                   "(default: $SEEDKL_COORDINATOR, else detected from the cluster)")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "processes in the job (with --coordinator)")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's index 0..N-1 (with --coordinator)")
_INIT_TIMEOUT = flags.DEFINE_integer("init_timeout", 300, "seconds to wait for every process to connect")
_MODE = flags.DEFINE_enum("multihost_mode", "groups", list(distributed.MODES),
                          "groups: (size, step) groups dealt round-robin to processes, each on its local "
                          "devices; global: every group on one mesh over all processes' devices")
_BARRIER_TIMEOUT = flags.DEFINE_float("barrier_timeout", 24 * 3600.0,
                                      "seconds a process waits for the others to finish their groups")


def main(argv):
    try:
        if len(argv) > 1:
            raise SeedKLError(f"unexpected arguments {argv[1:]}; every setting is a --flag")
        distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                               timeout_s=_INIT_TIMEOUT.value)
        cfg = run_cli.build_config()
        use_compilation_cache(cfg.output.cache_dir)  # a second process reuses the compiled steps
        report = distributed.run_study_distributed(cfg, mode=_MODE.value,
                                                   barrier_timeout_s=_BARRIER_TIMEOUT.value)
    except SeedKLError as e:
        print(f"multihost (process {_PROCESS_ID.value}): error: {e}", file=sys.stderr)
        sys.exit(2)
    if report is not None:
        print(report)


def _parse(argv):
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:  # a bad flag is bad input: exit 2, like `seedkl run`
        print(f"multihost: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    quiet_process()
    app.run(main, flags_parser=_parse)
