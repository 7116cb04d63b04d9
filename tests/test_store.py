"""The study store's file modes, and that importing the library changes nothing in the process (umask)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from seedkl_jax.study import store

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def umask_027():
    """Run the test under umask 027 (not the usual 022, so a hard-coded 0644 would fail)."""
    old = os.umask(0o027)
    try:
        yield 0o640
    finally:
        os.umask(old)


def test_atomic_files_get_the_mode_a_plain_open_gives(tmp_path, umask_027):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert plain.stat().st_mode & 0o777 == umask_027
    store.write_text_atomic(tmp_path / "a.txt", "a")

    def replaces_with_a_0600_file(tmp):  # a writer that does its own tempfile + rename
        fd, other = tempfile.mkstemp(dir=Path(tmp).parent)
        os.write(fd, b"b")
        os.close(fd)
        os.replace(other, tmp)

    store.write_atomic(tmp_path / "b.bin", replaces_with_a_0600_file)
    for name in ("a.txt", "b.bin"):
        assert (tmp_path / name).stat().st_mode & 0o777 == umask_027, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "plain.txt"]


_NO_UMASK = """
import os, pkgutil, importlib
def refuse(*a):
    raise AssertionError("os.umask called while importing")
os.umask = refuse
import seedkl_jax
for m in pkgutil.walk_packages(seedkl_jax.__path__, "seedkl_jax."):
    if not m.name.startswith("seedkl_jax.cli."):  # the CLI entry point may set process state; its
        importlib.import_module(m.name)           # command modules also define clashing absl flags
print("ok")
"""


def test_importing_the_library_does_not_touch_the_umask():
    r = subprocess.run([sys.executable, "-c", _NO_UMASK], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]
