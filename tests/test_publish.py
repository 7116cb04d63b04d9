"""Outputs change as one set (study/publish.py): a kill at every point of the swap leaves --out either
the old complete set, the new complete set, or an interrupted swap that the next writer finishes;
manifest.json lists the set; a run that fails before writing anything leaves no new --out.

The kill is injected from the outside: a child process replaces os.replace with one that SIGKILLs
the process before its k-th call (no hook in library code)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from seedkl_jax.errors import SeedKLError
from seedkl_jax.study import lock, publish, store
from seedkl_jax.study.run import run_study
from test_study import _cfg, _flagfile, full, lab  # noqa: F401  (module fixtures)

ROOT = Path(__file__).resolve().parents[1]

# Runs argv[3] as python code (its sys.argv: argv[4:]) after making os.replace SIGKILL the process
# before its argv[1]-th call whose source path contains argv[2] ('' = every call).
KILL_AT = """
import os, signal, sys
k, where, code = int(sys.argv[1]), sys.argv[2], sys.argv[3]
real, calls = os.replace, []
def dying(src, dst):
    if where in str(src):
        if len(calls) == k:
            os.kill(os.getpid(), signal.SIGKILL)
        calls.append(dst)
    return real(src, dst)
os.replace = dying
sys.argv = [sys.argv[0], *sys.argv[4:]]
exec(code)
"""
MOVES = "/.publish/"  # the swap's moves of single files into --out
PUBLISH = ("from pathlib import Path\nfrom seedkl_jax.study import publish\n"
           "publish.publish(Path(sys.argv[1]), Path(sys.argv[2]), settings={'run': 'new'})")


def _killed_at(k: int, code: str, *args, where: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", KILL_AT, str(k), where, code, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)


def _stage(out: Path, files: dict[str, str]) -> Path:
    stage = store.new_staging(out)
    for rel, text in files.items():
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage / rel).write_text(text)
    return stage


def _contents(out: Path) -> dict[str, str]:
    """What a reader sees: the visible files (dot-files and folders are the writer's) but the manifest."""
    files = (p.relative_to(out) for p in sorted(out.rglob("*")) if p.is_file())
    return {r.as_posix(): (out / r).read_text() for r in files
            if not any(part.startswith(".") for part in r.parts) and r.name != publish.MANIFEST}


OLD = {"summary.parquet": "old summary", "report.md": "old report", "figures/kl_baselines.png": "old fig",
       "figures/gone.png": "a size no longer in the study"}
NEW = {"summary.parquet": "new summary", "report.md": "new report", "figures/kl_baselines.png": "new fig",
       "findings.json": "new findings"}


def test_publish_writes_a_manifest_of_the_set_and_drops_the_old_sets_extra_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    publish.publish(_stage(out, OLD), out, settings={"run": "old"})
    assert _contents(out) == OLD and publish.verify(out) == []
    publish.publish(_stage(out, NEW), out, settings={"run": "new"})
    assert _contents(out) == NEW and publish.verify(out) == []
    manifest = json.loads((out / publish.MANIFEST).read_text())
    assert sorted(manifest["files"]) == sorted(NEW)
    for rel, entry in manifest["files"].items():
        data = (out / rel).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert manifest["settings_sha256"] == publish.settings_digest({"run": "new"}) != publish.settings_digest(
        {"run": "old"})
    assert not list(out.glob(".staging*")) and not (out / publish.SWAP_DIR).exists()
    (out / "report.md").write_text("edited")  # verify() sees a file that is not the published one
    assert publish.verify(out) == ["report.md: differs from the manifest"]


def test_a_kill_at_every_point_of_the_swap_leaves_old_new_or_a_swap_the_next_writer_finishes(tmp_path):
    # os.replace calls of one publish: stage -> .publish/, the journal, one per file, manifest.json
    n_calls = 2 + len(NEW) + 1
    for k in range(n_calls + 1):
        out = tmp_path / f"k{k}"
        out.mkdir()
        publish.publish(_stage(out, OLD), out, settings={"run": "old"})
        r = _killed_at(k, PUBLISH, _stage(out, NEW), out)
        if k == n_calls:  # never reached: the swap completed
            assert r.returncode == 0, r.stderr[-2000:]
        else:
            assert r.returncode == -9, (k, r.stderr[-2000:])
        problems = publish.verify(out)
        if problems:  # a reader is told, never shown a mix as a set
            assert problems == [f"{publish.JOURNAL}: a swap of the outputs was interrupted; rerun the "
                                "command to finish it"], (k, problems)
        else:
            assert _contents(out) in (OLD, NEW), k
        publish.recover(out)  # what the next run does first, under the lock
        assert publish.verify(out) == [], k
        assert _contents(out) == (OLD if k < 2 else NEW), k  # before the journal: the old set stays
        assert not (out / publish.SWAP_DIR).exists() and not (out / publish.JOURNAL).exists()


def test_a_fresh_out_killed_in_the_swap_is_never_a_set_of_one_file(tmp_path):
    out = tmp_path / "fresh"
    out.mkdir()
    r = _killed_at(3, PUBLISH, _stage(out, NEW), out)  # after the journal and the first move
    assert r.returncode == -9
    assert len(_contents(out)) == 1 and publish.verify(out) != []  # one file, but no set claimed
    publish.recover(out)
    assert _contents(out) == NEW and publish.verify(out) == []


# `seedkl run` on the lab suite (flags from argv[1]), SIGKILLed after the journal and two moves of its outputs
RUN = ("from absl import flags\nfrom seedkl_jax.cli import run as cli_run\nfrom seedkl_jax.study.run import run_study\n"
       "flags.FLAGS([sys.argv[0], sys.argv[1]])\nrun_study(cli_run.build_config(), progress=False)")


def test_a_run_killed_in_the_swap_is_repaired_by_the_next_runs_start(lab, full, tmp_path):
    full_out, _ = full
    out = tmp_path / "out"
    r = _killed_at(2, RUN, f"--flagfile={_flagfile(lab, out)}", where=MOVES)  # after two files of the new set moved in
    assert r.returncode == -9, r.stderr[-3000:]
    assert (out / publish.JOURNAL).is_file() and not (out / publish.MANIFEST).exists()
    # the next run's start (here one that then fails on its input) finishes the swap first
    with pytest.raises(SeedKLError, match="--text"):
        run_study(_cfg(lab, out, save_pair_positions=True, text=str(tmp_path / "missing.txt")), progress=False)
    assert publish.verify(out) == []
    for name in ["tokens.parquet", "pairs.parquet", "summary.parquet", "pair_positions.parquet"]:
        assert pl.read_parquet(out / name).equals(pl.read_parquet(full_out / name)), name
    assert sorted(publish.read_manifest(out)["files"]) == sorted(publish.read_manifest(full_out)["files"])


def test_analyze_publishes_the_same_way(lab, full, tmp_path):
    full_out, _ = full
    out = tmp_path / "an"
    code = ("from seedkl_jax.study.analyze import analyze\n"
            "analyze(sys.argv[1], sys.argv[2], out=sys.argv[3], n_boot=20)")
    args = (full_out / "pair_positions.parquet", full_out / "token_meta.parquet", out)
    r = _killed_at(2, code, *args, where=MOVES)
    assert r.returncode == -9, r.stderr[-3000:]
    assert publish.verify(out) != []
    from seedkl_jax.study.analyze import analyze

    analyze(*args[:2], out=out, n_boot=20)
    assert publish.verify(out) == [] and (out / "report.md").is_file()


def test_a_run_that_fails_before_writing_leaves_no_new_out(lab, tmp_path):
    out = tmp_path / "new" / "out"
    with pytest.raises(SeedKLError, match="--text"):
        run_study(_cfg(lab, out, text=str(tmp_path / "missing.txt")), progress=False)
    assert not out.exists() and (tmp_path / "new").is_dir()  # only what this run created goes
    # a folder that existed before stays, even empty; one holding anything else stays as it is
    out.mkdir()
    with pytest.raises(SeedKLError, match="--text"):
        run_study(_cfg(lab, out, text=str(tmp_path / "missing.txt")), progress=False)
    assert out.is_dir()
    assert [p.name for p in out.iterdir()] == [lock.LOCK_FILE]


def test_a_new_out_holding_anything_besides_the_lock_is_kept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RuntimeError):
        with lock.hold(out, new=True):
            (out / "something").write_text("x")
            raise RuntimeError("late failure")
    assert (out / "something").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KeyboardInterrupt):  # an interrupt before any write: removed too
        with lock.hold(empty, new=True):
            raise KeyboardInterrupt
    assert not empty.exists()
