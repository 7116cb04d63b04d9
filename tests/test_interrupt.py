"""SIGINT / SIGTERM end a `seedkl` command with one line and exit 130 / 143; the run resumes.

The child is `seedkl run` on the lab suite (tests/test_study.py) whose on_group pauses after the first
group (wrapped from the outside, so the signal lands in a run still computing); the test waits for
that group's file, sends the signal, and checks the exit, stderr and that a rerun ends with the
outputs of an uninterrupted run."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from conftest import lock_holder
from seedkl_jax.study import publish, store
from seedkl_jax.study.run import run_study
from test_study import STEPS, _cfg, _flagfile, full, lab  # noqa: F401  (module fixtures)

ROOT = Path(__file__).resolve().parents[1]
# `seedkl run --flagfile=argv[1]`, pausing 300 s after its first persisted group
PAUSED_RUN = """
import sys, time
import seedkl_jax.study.run as study_run
real = study_run.run_study
def paused(cfg, **kw):
    return real(cfg, on_group=lambda size, step: time.sleep(300), **kw)
study_run.run_study = paused
from seedkl_jax.cli import main
sys.exit(main(["seedkl", "run", sys.argv[1]]))
"""


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_ends_the_run_in_one_line_and_the_rerun_resumes(lab, full, tmp_path, sig, code):
    full_out, _ = full
    out = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-c", PAUSED_RUN, f"--flagfile={_flagfile(lab, out)}"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = store.group_path(out, "s1", STEPS[0])
    deadline = time.monotonic() + 600
    while not first.is_file() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first.is_file(), child.communicate(timeout=60)[1][-3000:] if child.poll() is not None else "timeout"
    child.send_signal(sig)
    _, err = child.communicate(timeout=300)
    assert child.returncode == code, err[-3000:]
    assert "Traceback" not in err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert last == f"seedkl run: interrupted ({sig.name}); rerun the same command to resume"
    assert [p for p in out.rglob("*.npz")] == [first] and not list(out.glob(".staging*"))

    run_study(_cfg(lab, out, save_pair_positions=True), progress=False)  # the lock was released
    assert publish.verify(out) == []
    for name in ["tokens.parquet", "pairs.parquet", "token_meta.parquet", "summary.parquet", "pair_positions.parquet"]:
        assert pl.read_parquet(out / name).equals(pl.read_parquet(full_out / name)), name
    assert (out / "phases.json").read_text() == (full_out / "phases.json").read_text()
    assert publish.read_manifest(out)["files"].keys() == publish.read_manifest(full_out)["files"].keys()


def test_an_interrupt_while_waiting_for_the_lock_is_one_line(tmp_path):
    """SIGINT while `seedkl analyze` reads its inputs (here: it waits on a held lock): exit 130, one line."""
    out = tmp_path / "held"
    out.mkdir()
    holder = lock_holder(out, 120)
    try:
        pairs, meta = tmp_path / "p.parquet", tmp_path / "m.parquet"
        pl.DataFrame({"size": ["a"] * 2, "step": [0, 0], "seed_a": [1, 2], "seed_b": [2, 1], "position": [0, 0],
                      "kl": [0.1, 0.2]}).write_parquet(pairs)
        pl.DataFrame({"position": [0], "token_id": [3], "doc_id": [0]}).write_parquet(meta)
        code = "import sys; from seedkl_jax.cli import main; sys.exit(main(['seedkl', 'analyze', *sys.argv[1:]]))"
        child = subprocess.Popen([sys.executable, "-c", code, f"--pairs={pairs}", f"--meta={meta}", f"--out={out}",
                                  "--wait", "--n_boot=5"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        err = ""
        deadline = time.monotonic() + 300
        while "waiting for the other run" not in err and time.monotonic() < deadline and child.poll() is None:
            err += child.stderr.readline()
        child.send_signal(signal.SIGINT)
        rest = child.communicate(timeout=120)[1]
        assert child.returncode == 130, err + rest
        assert holder.poll() is None  # it ended while the lock was still held, not once the other run let go
        assert "Traceback" not in rest
        assert rest.strip().splitlines() == ["seedkl analyze: interrupted (SIGINT); rerun the same command to resume"]
    finally:
        holder.kill()
        holder.wait()
