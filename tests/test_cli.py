"""The `seedkl` dispatcher: --help, exit codes (0 ok, 2 bad input or environment, 1 a bug), the
transformers torch warning, and `seedkl cache list|clear` (with the cache's .tmp-* hygiene).
Every command runs in its own subprocess (run and demo define flags of the same names)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seedkl_jax.convert import cache
from seedkl_jax.convert.loader import load

ROOT = Path(__file__).resolve().parents[1]
# Runs `seedkl <argv[1:]>`; a first argument "--no-torch" makes torch unimportable first.
CLI = ("import sys\n"
       "if sys.argv[1:2] == ['--no-torch']:\n    sys.modules['torch'] = None; del sys.argv[1]\n"
       "from seedkl_jax.cli import main\nsys.exit(main(['seedkl', *sys.argv[1:]]))")


def seedkl(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, **(env or {})))


@pytest.mark.parametrize("cmd, example", [
    ("run", "seedkl run --preset= --model_template=/data/suite/{size}/seed{seed}/step{step}"),
    ("demo", "seedkl demo --quick"),
    ("convert", "seedkl convert --model=EleutherAI/pythia-70m-seed3 --revision=step1000"),
    ("cache", "seedkl cache clear --match=pythia-70m"),
])
def test_help_exits_0_with_the_commands_docstring_and_flags(cmd, example):
    r = seedkl(cmd, "--help")
    assert r.returncode == 0, r.stderr[-2000:]
    assert example in r.stdout and f"flags of seedkl {cmd}" in r.stdout
    assert r.stdout.split(f"flags of seedkl {cmd}")[1].count("\n  --") >= 2  # the command's flags, listed
    if cmd == "run":
        assert "Must fit every model's context" in " ".join(r.stdout.split())  # --window's help


def test_exit_codes_bad_flag_and_bad_input_are_2_in_one_line(tmp_path):
    bad_flag = seedkl("convert", "--no_such_flag=1")
    assert bad_flag.returncode == 2
    assert bad_flag.stderr.strip().splitlines() == [
        "seedkl convert: error: Unknown command line flag 'no_such_flag'; see seedkl convert --help"]
    bad_value = seedkl("run", "--window=many")
    assert bad_value.returncode == 2 and bad_value.stderr.count("\n") == 1 and "--window" in bad_value.stderr
    bad_input = seedkl("convert", f"--model={tmp_path / 'nope'}")
    assert bad_input.returncode == 2 and bad_input.stderr.startswith("seedkl convert: error: ")
    assert seedkl("nonsense").returncode == 2



def test_a_bug_exits_1_with_its_traceback():
    """An unexpected exception (not a SeedKLError) is a bug: exit 1 and the traceback, not one line."""
    code = ("import sys\nimport seedkl_jax.cli.cache as c\n"
            "def broken(argv):\n    raise RuntimeError('a bug in the command')\n"
            "c.main = broken\nfrom seedkl_jax.cli import main\nsys.exit(main(['seedkl', 'cache', 'list']))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "Traceback" in r.stderr and "RuntimeError: a bug in the command" in r.stderr

def test_no_torch_warning_when_torch_is_absent(hf_checkpoint, tmp_path):
    r = seedkl("--no-torch", "convert", f"--model={hf_checkpoint(seed=2)}", f"--cache_dir={tmp_path / 'c'}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "converted" in r.stdout and "PyTorch was not found" not in r.stderr


def test_cache_list_and_clear(hf_checkpoint, tmp_path):
    root = tmp_path / "c"
    a = load(str(hf_checkpoint(seed=2)), cache_dir=root)
    load(str(hf_checkpoint(seed=3)), cache_dir=root, dtype="bfloat16")
    listed = seedkl("cache", "list", f"--cache_dir={root}")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["model", "revision", "dtype", "size"]
    rows = [ln.split() for ln in lines[1:-1]]
    assert sorted((r[0], r[1], r[2]) for r in rows) == sorted(
        [(str(hf_checkpoint(seed=2)), "-", "float32"), (str(hf_checkpoint(seed=3)), "-", "bfloat16")])
    assert all(r[-1] in ("KB", "MB") for r in rows) and lines[-1].startswith(f"{root}: 2 entries")
    one = seedkl("cache", "clear", f"--cache_dir={root}", f"--match={hf_checkpoint(seed=3).name}")
    assert one.returncode == 0 and "removed 1 entry" in one.stdout, one.stdout + one.stderr
    assert [r["path"] for r in cache.entries(root)] == [Path(a.cache_entry)]
    assert seedkl("cache", "clear", f"--cache_dir={root}").returncode == 0
    assert cache.entries(root) == [] and list((root / "models").iterdir()) == []
    assert seedkl("cache", "purge", f"--cache_dir={root}").returncode == 2


def _tmp_entry(root: Path, name: str, writer: dict | None, age_s: float = 0) -> Path:
    d = root / "models" / f".tmp-{name}-0000"
    (d / "params").mkdir(parents=True)
    if writer is not None:
        (d / cache.WRITER).write_text(json.dumps(writer))
    t = time.time() - age_s
    os.utime(d, (t, t))
    return d


def test_unfinished_entries_of_dead_writers_are_swept_on_the_next_use(hf_checkpoint, tmp_path):
    import socket

    root = tmp_path / "c"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    gone = _tmp_entry(root, "dead", {"host": host, "pid": int(dead.stdout)})
    old = _tmp_entry(root, "old", None, age_s=2 * 86400)
    live = _tmp_entry(root, "live", {"host": host, "pid": os.getpid()})
    elsewhere = _tmp_entry(root, "elsewhere", {"host": host + "-other", "pid": int(dead.stdout)})
    young = _tmp_entry(root, "young", None)
    load(str(hf_checkpoint(seed=2)), cache_dir=root)  # a store: sweeps first
    assert not gone.exists() and not old.exists()
    assert live.exists() and elsewhere.exists() and young.exists()
