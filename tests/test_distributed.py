"""Multi-host: initialize() wiring, the round-robin split, and real two-process runs on localhost.

The two-process tests start launch/multihost.py twice (process 0 and 1, each a CPU JAX with 2
emulated devices, joined by jax.distributed over a free localhost port with gloo collectives) on a
small local suite, and check that the results equal a single-process run's to 1e-6 and that the
final outputs were written once, by process 0. "groups" mode: the two processes split the groups
between them. "global" mode: every group's windows are split over all 4 devices of both processes,
and process 1 runs under an audit hook that fails it on any write into --out. The single-process
runs read the params cache the two processes wrote, so an entry that a process of a multi-process
job left unreadable fails them too. Every wait is bounded (init/barrier timeouts, subprocess
timeout), so a hang fails the test instead of blocking CI.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import link_suite, tiny_tokenizer
from seedkl_jax import distributed
from seedkl_jax.errors import SeedKLError

ROOT = Path(__file__).resolve().parents[1]
# 3 sizes x 3 steps = 9 groups: an uneven split (5 + 4), so no step of one process can pair up by
# accident with the same step of the other (e.g. the k-th checkpoint each converts and caches).
SIZES = {"a": dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32),
         "b": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
         "c": dict(hidden_size=24, num_hidden_layers=1, num_attention_heads=3, intermediate_size=48)}
STEPS = (0, 8, 64)
SEEDS = (1, 2, 3)
TEXT = ["the cat sat on the mat . the dog ran under the log and the cat sat .",
        "a dog sat on a log , a cat ran under a mat . the dog and the cat ran on .",
        "the mat , the log and the dog . a cat sat under the mat and ran ."]
CLUSTER_ENV = ("SEEDKL_COORDINATOR", "SEEDKL_NUM_PROCESSES", "SEEDKL_PROCESS_ID", "SLURM_NTASKS",
               "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES")


@pytest.fixture
def no_cluster(monkeypatch):
    for name in CLUSTER_ENV:
        monkeypatch.delenv(name, raising=False)


def test_single_process_without_cluster_is_a_no_op(no_cluster):
    assert distributed.initialize() is False
    assert distributed.initialize(num_processes=1) is False
    assert (distributed.process_index(), distributed.process_count()) == (0, 1)
    distributed.barrier("alone")  # returns at once


@pytest.mark.parametrize("kwargs, match", [
    (dict(coordinator="127.0.0.1:1234"), "also give --num_processes and --process_id"),
    (dict(coordinator="127.0.0.1:1234", num_processes=2, process_id=2), r"must be in \[0, 2\)"),
    (dict(num_processes=2, process_id=0), "give --coordinator"),
])
def test_incomplete_arguments_are_refused(no_cluster, kwargs, match):
    with pytest.raises(SeedKLError, match=match):
        distributed.initialize(**kwargs)


def test_env_arguments_are_read(no_cluster, monkeypatch):
    monkeypatch.setenv("SEEDKL_COORDINATOR", "127.0.0.1:1234")
    monkeypatch.setenv("SEEDKL_PROCESS_ID", "0")
    with pytest.raises(SeedKLError, match="also give --num_processes"):
        distributed.initialize()
    monkeypatch.setenv("SEEDKL_NUM_PROCESSES", "two")
    with pytest.raises(SeedKLError, match=r"\$SEEDKL_NUM_PROCESSES='two': not an integer"):
        distributed.initialize()


def test_initialize_after_jax_was_used_says_so():
    code = ("import jax.numpy as jnp; jnp.ones(2).block_until_ready()\n"
            "from seedkl_jax import distributed\n"
            "distributed.initialize('127.0.0.1:1', 2, 0, timeout_s=5)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert r.returncode != 0 and "JAX was already used in this process" in r.stderr, r.stderr[-2000:]


def test_share_is_a_round_robin_partition():
    items = [(s, t) for s in "abc" for t in (0, 1, 2, 3)]
    shares = [distributed.share(items, i, 5) for i in range(5)]
    assert sorted(x for sh in shares for x in sh) == sorted(items)
    assert all(len(sh) in (2, 3) for sh in shares)  # balanced: 12 groups over 5 processes
    assert shares[1] == [items[1], items[6], items[11]]


# ------------------------------------------------------------------ two processes on localhost


@pytest.fixture(scope="module")
def lab(tmp_path_factory, hf_checkpoint):
    root = tmp_path_factory.mktemp("dist")
    tok = tiny_tokenizer(root / "tokenizer.json")
    link_suite(root, hf_checkpoint, SIZES, STEPS, SEEDS, base=5000, tokenizer=tok, vocab_size=48,
               max_position_embeddings=64, initializer_range=0.5)
    text = root / "eval.txt"
    text.write_text("<|endoftext|>".join(TEXT), encoding="utf-8")
    flags = ["--preset=", f"--model_template={root}/suite/{{size}}/seed{{seed}}/step{{step}}",
             "--revision_template=", f"--sizes={','.join(SIZES)}", f"--steps={','.join(map(str, STEPS))}",
             f"--seeds={','.join(map(str, SEEDS))}", f"--text={text}", "--pos=none", "--n_boot=20",
             "--window=16", "--overlap=8"]  # ~50-token text -> several windows, split over devices
    return dict(root=root, flags=flags)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Runs a script with an audit hook that fails the process on any write below a folder (argv[1]).
READ_ONLY = r"""
import os, runpy, sys
root, script = os.path.realpath(sys.argv[1]), sys.argv[2]
WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
CHANGES = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.link", "os.symlink",
           "os.truncate", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile"}
def inside(p):
    if not isinstance(p, (str, bytes, os.PathLike)):
        return False
    p = os.path.realpath(os.fsdecode(p))
    return p == root or p.startswith(root + os.sep)
def guard(event, args):
    if (event == "open" and isinstance(args[2], int) and args[2] & WRITES and inside(args[0])) or (
            event in CHANGES and any(inside(a) for a in args)):
        print(f"WRITE-GUARD: {event} {args}", file=sys.stderr, flush=True)
        raise PermissionError(f"write into {root}: {event} {args}")
sys.addaudithook(guard)
sys.argv = [script, *sys.argv[3:]]
runpy.run_path(script, run_name="__main__")
"""


def _run_processes(flags: list[str], n: int, devices: int, timeout: float = 420,
                   read_only: Path | None = None) -> list[str]:
    """launch/multihost.py as n localhost processes; returns their outputs (fails on error/hang).

    read_only: processes 1..n-1 fail on any write below this folder (see READ_ONLY)."""
    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    script = str(ROOT / "launch" / "multihost.py")
    procs = [subprocess.Popen([sys.executable, *(["-c", READ_ONLY, str(read_only)] if read_only and i else []),
                               script, f"--coordinator=127.0.0.1:{port}", f"--num_processes={n}",
                               f"--process_id={i}", "--init_timeout=60", "--barrier_timeout=240", *flags],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(n)]
    logs = []
    try:
        for i, p in enumerate(procs):
            try:
                logs.append(p.communicate(timeout=timeout)[0])
            except subprocess.TimeoutExpired:
                for q in procs:
                    q.kill()
                tails = [(q.communicate()[0] or "")[-2000:] for q in procs]
                pytest.fail(f"process {i} still running after {timeout} s (a hang):\n"
                            + "\n".join(f"--- process {j}:\n{t}" for j, t in enumerate(tails)))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    failed = [i for i, p in enumerate(procs) if p.returncode != 0]
    assert not failed, "\n".join(f"--- process {i} exited {procs[i].returncode}:\n{logs[i][-4000:]}" for i in failed)
    return logs


@pytest.mark.slow
def test_two_processes_equal_one_process(lab, tmp_path):
    out2, cache = tmp_path / "two", tmp_path / "cache"
    logs = _run_processes(lab["flags"] + [f"--out={out2}", f"--cache_dir={cache}"], n=2, devices=2)

    # the split: each process names its groups; together they are all groups, each once
    owned = []
    for i, log in enumerate(logs):
        m = re.search(rf"seedkl process {i} of 2: 2 local / 4 devices; groups \[(.*)\]", log)
        assert m, f"process {i} did not report its share:\n{log[-3000:]}"
        owned.append(re.findall(r"'([^']+)'", m.group(1)))
    every = [f"{size}@{step}" for size in SIZES for step in STEPS]
    assert owned[0] and owned[1] and sorted(owned[0] + owned[1]) == sorted(every)
    assert "report.md" in logs[0] and "report.md" not in logs[1]  # outputs written once, by process 0
    _assert_equals_one_process(lab["flags"], out2, cache)


@pytest.mark.slow
def test_two_processes_on_one_global_mesh_equal_one_process(lab, tmp_path):
    out2, cache = tmp_path / "two", tmp_path / "cache"
    logs = _run_processes(lab["flags"] + ["--multihost_mode=global", f"--out={out2}", f"--cache_dir={cache}"],
                          n=2, devices=2, read_only=out2)
    for i, log in enumerate(logs):
        assert f"seedkl process {i} of 2: 2 local / 4 devices; every group on the global mesh {{'data': 4}}" \
            in log, f"process {i} did not report the global mesh:\n{log[-3000:]}"
        assert "WRITE-GUARD" not in log, log[-3000:]
    assert "report.md" in logs[0] and "report.md" not in logs[1]  # outputs written once, by process 0
    assert "tok/s" in logs[0] and "tok/s" not in logs[1]  # progress bars: process 0 only
    _assert_equals_one_process(lab["flags"], out2, cache)


def _assert_equals_one_process(flags: list[str], out2: Path, cache: Path) -> None:
    """Run the reference (one process, one device, same flags, restoring the params the two processes
    cached) beside out2 and check every group file and final table equal out2's to float32 rounding
    (1e-6, relative for large values: the processes' window batches have another size, so XLA may
    order a reduction differently; the paper-compat unigram KLs reach ~600 nats)."""
    import polars as pl

    from seedkl_jax.study import store

    out1 = out2.parent / "one"
    ref_log = _run_processes(flags + [f"--out={out1}", f"--cache_dir={cache}"], n=1, devices=1)[0]
    assert "unreadable cache entry" not in ref_log, ref_log[-3000:]
    for size in SIZES:
        for step in STEPS:
            a = dict(np.load(store.group_path(out1, size, step)))
            b = dict(np.load(store.group_path(out2, size, step)))
            assert a.keys() == b.keys()
            for k in a:
                np.testing.assert_allclose(b[k], a[k], rtol=1e-6, atol=1e-6, err_msg=f"{size} step {step} {k}")
    for name in ("tokens.parquet", "pairs.parquet", "summary.parquet"):
        a, b = pl.read_parquet(out1 / name), pl.read_parquet(out2 / name)
        assert a.columns == b.columns and a.height == b.height, name
        for col, dtype in a.schema.items():
            if dtype.is_float():
                np.testing.assert_allclose(b[col].to_numpy(), a[col].to_numpy(), rtol=1e-6, atol=1e-6,
                                           err_msg=f"{name}:{col}")
            else:
                assert a[col].equals(b[col]), f"{name}:{col}"


def test_a_busy_out_stops_every_process_before_any_write(lab, tmp_path):
    """Process 0 cannot take --out's lock (this test holds it): both processes exit 2 at once."""
    from seedkl_jax.study import lock

    out = tmp_path / "busy"
    out.mkdir()
    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    with lock.hold(out):
        procs = [subprocess.Popen([sys.executable, str(ROOT / "launch" / "multihost.py"), f"--coordinator=127.0.0.1:{port}",
                                   "--num_processes=2", f"--process_id={i}", "--init_timeout=60", *lab["flags"],
                                   f"--out={out}", f"--cache_dir={tmp_path / 'cache'}"],
                                  cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for i in range(2)]
        try:
            logs = [p.communicate(timeout=300)[0] for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
    assert [p.returncode for p in procs] == [2, 2], logs
    assert f"another seedkl run (pid {os.getpid()}) is writing to it" in logs[0]
    assert "process 0 could not take it" in logs[1]
    assert sorted(p.name for p in out.iterdir()) == [lock.LOCK_FILE]
