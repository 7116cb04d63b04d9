"""Multi-host runs: one process per host (or per GPU), all JAX processes joined into one runtime.

A study is many independent (size, step) groups, each a single fused kernel call over that group's
S seeds and all the text's windows. Two ways to spread it over the processes (`mode`):

"groups" (default): groups are dealt round-robin to processes (`share`); each runs the kernel for its
groups on a mesh of its *local* devices (windows split over them) and writes their arrays into the
shared `--out` (`groups/<size>/step<step>.npz`, atomically); after a barrier process 0 runs the
aggregation — the same resume path a single-process rerun takes. No cross-host traffic but two tiny
all-gathers and the barriers; every device is busy while groups >= processes (a polypythia sweep has
5 sizes x 20 steps = 100 groups), and each checkpoint is loaded by one process only.

"global": every process runs every group together on one mesh over `jax.devices()` (all processes'
devices, axis "data"): a group's windows are split over every device of the job, so all are busy
whenever a group has >= as many windows as there are devices (long texts; few or a single group).
Each process loads each group's params itself (no param traffic); each batch's per-position results
are all-gathered to every process. Process 0 alone writes into `--out` (study.json, groups, outputs);
which groups remain (resume) is process 0's view, broadcast, so every process enters the same
collectives in the same order.

Either way the output contract is that of `seedkl run`.

    initialize(coordinator=None, num_processes=None, process_id=None) -> bool   multi-process?
    process_index(), process_count(), barrier(name), share(items), local_mesh(), global_mesh()
    run_study_distributed(cfg, mode="groups"|"global") -> report path on process 0, None elsewhere
        (composed from study/run.py's public steps: prepare, claim, compute_groups, write_outputs)

`initialize` must run before anything touches a JAX device. Where the arguments come from, first
match wins: the arguments; $SEEDKL_COORDINATOR / $SEEDKL_NUM_PROCESSES / $SEEDKL_PROCESS_ID;
SLURM (`srun`: SLURM_NTASKS > 1) or Open MPI (OMPI_COMM_WORLD_SIZE > 1), detected by JAX; a Cloud TPU
VM (JAX reads the workers from the TPU metadata). Otherwise the run is single-process and nothing is
initialised. CPU processes talk through gloo (`jax_cpu_collectives_implementation`), which is what
the localhost test and a CPU cluster use.
"""
from __future__ import annotations

import glob
import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Any, Sequence, TypeVar

from seedkl_jax.errors import SeedKLError

T = TypeVar("T")
_barrier_ids = itertools.count()


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise SeedKLError(f"${name}={value!r}: not an integer; set it to a whole number or unset it")


def _on_cloud_tpu_vm() -> bool:
    """A TPU VM exposes its chips as /dev/accel* (v2-v4) or /dev/vfio/<n> (v5+); GKE sets TPU_* env."""
    return bool(glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*")
                or os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("TPU_PROCESS_ADDRESSES"))


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, local_device_ids: Sequence[int] | None = None,
               timeout_s: int = 300, heartbeat_s: int = 100) -> bool:
    """Join the JAX distributed runtime; returns True if this is a multi-process run.

    coordinator: "host:port" of process 0 (any free port, the same on every process).
    timeout_s bounds the wait for all processes to connect (and for shutdown); heartbeat_s is how
    long a silent process is taken for dead — then every other process fails instead of hanging.
    """
    import jax

    coordinator = coordinator or os.environ.get("SEEDKL_COORDINATOR") or None
    num_processes = num_processes if num_processes is not None else _env_int("SEEDKL_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("SEEDKL_PROCESS_ID")
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    kwargs: dict[str, Any] = dict(initialization_timeout=timeout_s, heartbeat_timeout_seconds=heartbeat_s,
                                  shutdown_timeout_seconds=timeout_s, local_device_ids=local_device_ids)
    if coordinator is not None:
        if num_processes is None or process_id is None:
            raise SeedKLError(f"--coordinator={coordinator}: also give --num_processes and --process_id "
                              "(or $SEEDKL_NUM_PROCESSES / $SEEDKL_PROCESS_ID)")
        if not 0 <= process_id < num_processes:
            raise SeedKLError(f"--process_id={process_id}: must be in [0, {num_processes}) for "
                              f"--num_processes={num_processes}")
        if num_processes == 1:
            return False
        kwargs.update(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
    elif num_processes == 1:
        return False
    elif _env_int("SLURM_NTASKS") and _env_int("SLURM_NTASKS") > 1:
        pass  # JAX's SlurmCluster reads SLURM_STEP_NODELIST / SLURM_PROCID / SLURM_LOCALID
    elif _env_int("OMPI_COMM_WORLD_SIZE") and _env_int("OMPI_COMM_WORLD_SIZE") > 1:
        pass  # JAX's OmpiCluster
    elif _on_cloud_tpu_vm():
        pass  # JAX's Gce/GkeTpuCluster: workers from the TPU metadata server
    else:
        if num_processes is not None or process_id is not None:
            raise SeedKLError(f"--num_processes={num_processes} --process_id={process_id}: no cluster "
                              "environment found to take the coordinator from; give --coordinator=HOST:PORT")
        return False
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU cross-process collectives
    try:
        jax.distributed.initialize(**kwargs)
    except RuntimeError as e:
        if "backend" in str(e).lower():
            raise SeedKLError("seedkl_jax.distributed.initialize: JAX was already used in this process; "
                              "call initialize() first, before any jax computation") from e
        raise
    return jax.process_count() > 1


def process_index() -> int:
    import jax

    return jax.process_index()


def process_count() -> int:
    import jax

    return jax.process_count()


def barrier(name: str, timeout_s: float = 24 * 3600) -> None:
    """Wait until every process reaches the barrier `name` (no-op for one process).

    Uses the coordination service's barrier (no device work, so it also holds between phases where
    processes ran different jitted programs); a process that died makes it fail, and timeout_s
    bounds the wait otherwise. Names get a per-process call counter, so a name can be reused.
    """
    import jax

    if jax.process_count() == 1:
        return
    from jax._src import distributed as _dist  # the client has the only timeout-bounded barrier

    client = _dist.global_state.client
    key = f"seedkl/{name}/{next(_barrier_ids)}"
    if client is None:  # pragma: no cover - other runtimes: a device all-reduce as barrier
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(key)
        return
    try:
        client.wait_at_barrier(key, int(timeout_s * 1000))
    except Exception as e:  # JaxRuntimeError: DEADLINE_EXCEEDED or a peer gone
        raise RuntimeError(f"barrier {name!r} on process {jax.process_index()}: {e}; another process "
                           "failed or is still working (see its log)") from e


def share(items: Sequence[T], index: int | None = None, count: int | None = None) -> list[T]:
    """This process's round-robin share: items[index::count] (keeps the items' order)."""
    index = process_index() if index is None else index
    count = process_count() if count is None else count
    return list(items)[index::count]


def local_mesh(axis: str = "data"):
    """A 1-axis mesh of this process's own devices: what each process runs its groups on."""
    import jax
    import numpy as np
    from jax.sharding import Mesh

    return Mesh(np.array(jax.local_devices()), (axis,))


def global_mesh(axis: str = "data"):
    """A 1-axis mesh of every process's devices (same order on all): what "global" mode runs on."""
    import jax
    import numpy as np
    from jax.sharding import Mesh

    return Mesh(np.array(jax.devices()), (axis,))


def agree_with_process_0(values):
    """Process 0's `values` (a numpy array, same shape and dtype on every process), on every process.

    A collective (`broadcast_one_to_all`): each process must call it at the same point."""
    import numpy as np
    from jax.experimental import multihost_utils

    values = np.asarray(values)
    return np.asarray(multihost_utils.broadcast_one_to_all(values.astype(np.int32))).astype(values.dtype)


MODES = ("groups", "global")


def run_study_distributed(cfg: Any, *, mode: str = "groups", progress: bool = True,
                          barrier_timeout_s: float = 24 * 3600) -> Path | None:
    """The study over all processes, split by `mode` (see the module docstring), composed from the
    public steps of seedkl_jax.study.run: `prepare` (every process reads and checks the inputs),
    `claim`, `compute_groups`, `write_outputs`.

    Process 0 holds `--out`'s lock (study/lock.py) from before anything is written until the outputs
    are; whether it got it is broadcast, so a busy --out stops every process with the same error.

    "groups": every process claims and computes its round-robin share (`share`; with --overwrite it
    clears only those groups) on a mesh of its local devices (cfg.mesh, when unset); after a barrier
    process 0 writes the outputs from every group file. Logs one line per process naming its groups.

    "global": every process computes every group on `global_mesh()` (cfg.mesh, when unset), process 0
    alone persists; which groups remain is process 0's view (`agree_with_process_0`); progress bars on
    process 0 only. Logs one line per process.
    """
    import contextlib
    import dataclasses

    import jax

    from seedkl_jax.study import lock
    from seedkl_jax.study import run as study_run

    if mode not in MODES:
        raise SeedKLError(f"--multihost_mode={mode!r}: use one of {', '.join(MODES)}")
    index, count = process_index(), process_count()
    if count == 1:
        return study_run.run_study(cfg, progress=progress)
    if jax.device_count() != count * jax.local_device_count():  # the all-gathers below need equal counts
        raise SeedKLError(f"process {index} has {jax.local_device_count()} of the job's {jax.device_count()} "
                          f"devices, not 1/{count} of them; give every process the same number of devices "
                          "(e.g. one GPU per process, or the same --xla_force_host_platform_device_count)")
    if cfg.mesh is None:
        cfg = dataclasses.replace(cfg, mesh=local_mesh() if mode == "groups" else global_mesh())
    _check_same_flags(cfg, mode)
    with contextlib.ExitStack() as held:
        _lock_out_on_process_0(cfg, index, held, lock, study_run)
        prep = study_run.prepare(cfg, check_out=mode == "groups" or index == 0)
        if mode == "global":
            print(f"seedkl process {index} of {count}: {jax.local_device_count()} local / {jax.device_count()} "
                  f"devices; every group on the global mesh {dict(cfg.mesh.shape)}; "
                  + ("writes --out" if index == 0 else "process 0 writes --out"), flush=True)
            if index == 0:
                study_run.claim(prep)
            study_run.compute_groups(prep, write=index == 0, agree=agree_with_process_0,
                                     progress=progress and index == 0)
        else:
            mine = share(prep.suite.groups(), index, count)
            print(f"seedkl process {index} of {count}: {jax.local_device_count()} local / {jax.device_count()} "
                  f"devices; groups {[f'{size}@{step}' for size, step in mine]}", flush=True)
            study_run.claim(prep, mine)
            study_run.compute_groups(prep, mine, progress=progress)
            barrier("groups-done", barrier_timeout_s)
        out = study_run.write_outputs(prep) if index == 0 else None
        barrier("outputs-written", barrier_timeout_s)
    return out


def flags_digest(cfg: Any, mode: str) -> int:
    """A 63-bit digest of everything the processes of one run must share: `mode` and every setting of
    `cfg` but the per-process ones (config.agreement_values: --wait, which only process 0's lock uses;
    --cache_dir, each host's own disk; the mesh, each process's own devices). Derived from the config's
    metadata, so a new setting is covered without touching this check."""
    from seedkl_jax.config import agreement_values

    key = json.dumps({"mode": mode, **agreement_values(cfg)}, sort_keys=True, default=repr)
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1


def _check_same_flags(cfg: Any, mode: str) -> None:
    """Same study everywhere? A host started with other flags would split a different group list or
    compute other numbers into the shared --out."""
    import numpy as np
    from jax.experimental import multihost_utils

    digest = np.array([flags_digest(cfg, mode)], np.int64)
    digests = multihost_utils.process_allgather(digest).reshape(-1)  # a cross-process collective
    if len(set(digests.tolist())) > 1:
        differ = [i for i, d in enumerate(digests.tolist()) if d != digests[0]]
        raise SeedKLError(f"processes {differ} were started with other study flags than process 0; "
                          "start every process with the same seedkl run flags")


def _lock_out_on_process_0(cfg: Any, index: int, held, lock, study_run) -> None:
    """Process 0 creates --out and takes its lock (kept in `held`); every process learns whether it
    did (a collective), so all stop together when --out is busy or unwritable."""
    import numpy as np

    error = None
    if index == 0:
        try:
            held.enter_context(lock.hold(study_run.open_out(cfg), wait=cfg.output.wait))
        except SeedKLError as e:
            error = e
    ok = agree_with_process_0(np.array([error is None]))
    if error is not None:
        raise error
    if not bool(ok[0]):
        raise SeedKLError(f"--out={cfg.output.out}: process 0 could not take it (another seedkl run is writing "
                          "to it, or it is not writable); see process 0's error")
