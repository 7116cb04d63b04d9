"""The opt-in compiled CPU kernel (form "native", kernels/native.py): it is never the default, it
runs only what this user built in a private folder, and it checks every buffer it is handed.

The compile itself happens once per session (conftest.py's SEEDKL_NATIVE_DIR); the safety checks
run against a stand-in compiler script, so they need no compiler and can fail on their own.
"""
from __future__ import annotations

import os
import shutil
import stat

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seedkl_jax.errors import SeedKLError
from seedkl_jax.kernels import native
from seedkl_jax.kernels.defaults import default_form, forms
from seedkl_jax.kernels.divergence import divergence_jit

HAS_CXX = bool(os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++"))
FAKE_CXX = """#!/bin/sh
echo run >> "{count}"
while [ $# -gt 0 ]; do [ "$1" = "-o" ] && out="$2"; shift; done
[ -n "$FAKE_CXX_FAIL" ] && {{ echo "fake compiler: boom" >&2; exit 1; }}
: > "$out"
"""


@pytest.fixture
def fake_cxx(tmp_path, monkeypatch):
    """A stand-in compiler that records each run and writes an empty 'binary'; a fresh build folder."""
    script, count = tmp_path / "fake-cxx", tmp_path / "runs"
    script.write_text(FAKE_CXX.format(count=count))
    script.chmod(0o755)
    monkeypatch.setenv("CXX", str(script))
    monkeypatch.setenv("SEEDKL_NATIVE_DIR", str(tmp_path / "native"))
    return lambda: len(count.read_text().split()) if count.exists() else 0


def test_build_folder_is_private_and_published_once(fake_cxx):
    so = native._build()
    folder = so.parent
    assert folder == native.build_dir() and folder.name == f"u{os.getuid()}"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert not so.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    assert native._build() == so and fake_cxx() == 1  # the published file is reused, not rebuilt
    assert "-march=native" not in native.FLAGS and native._march().startswith("-march=")


def test_refuses_a_binary_others_can_write_or_do_not_own(fake_cxx, monkeypatch):
    so = native._build()
    so.chmod(0o666)
    with pytest.raises(RuntimeError, match="writable by group/others"):
        native._build()
    so.chmod(0o500)
    uid = os.getuid()
    monkeypatch.setattr(native.os, "getuid", lambda: uid + 1)  # as if another user owned the folder
    with pytest.raises(RuntimeError, match="not owned by this user"):
        native._build()


def test_refuses_a_shared_build_folder(fake_cxx):
    folder = native.build_dir()
    folder.chmod(0o777)
    with pytest.raises(RuntimeError, match="refusing to use it"):
        native._build()
    assert fake_cxx() == 0  # nothing was built into it


def test_a_failed_build_is_remembered(fake_cxx, monkeypatch):
    monkeypatch.setenv("FAKE_CXX_FAIL", "1")
    with pytest.raises(RuntimeError, match="fake compiler: boom"):
        native._build()
    with pytest.raises(RuntimeError, match="(?s)an earlier build failed.*boom"):
        native._build()
    assert fake_cxx() == 1


def test_never_the_default_and_cpu_only():
    assert default_form("cpu") == "onepass" and default_form("gpu") == "pair"
    assert "native" in forms("cpu") and forms("gpu") == ("pair", "einsum", "onepass")
    with pytest.raises(SeedKLError, match="'native' is a CPU kernel.*kernel_form='pair'"):
        native.require("gpu")


def test_without_a_compiler_is_a_named_error(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("SEEDKL_NATIVE_DIR", str(tmp_path / "native"))
    native._load.cache_clear()
    try:
        h, w = np.ones((2, 3, 4), np.float32), np.ones((2, 4, 10), np.float32)
        with pytest.raises(SeedKLError, match="kernel_form: 'native'.*kernel_form='onepass'"):
            divergence_jit(h, w, np.zeros(3, np.int32), vocab_size=10, form="native")
    finally:
        native._load.cache_clear()  # the session's real build folder again for the tests below


@pytest.mark.skipif(not HAS_CXX, reason="no C++ compiler: the native kernel cannot be built here")
def test_many_seeds_match_the_xla_form():
    """S = 65 (past the old fixed-size scratch) gives the XLA one-pass form's numbers."""
    native.require()
    rng = np.random.RandomState(0)
    S, P, D, V, Vr = 65, 5, 8, 300, 297
    h = rng.randn(S, P, D).astype(np.float32)
    w = (rng.randn(S, D, V) * 0.8).astype(np.float32)
    t = rng.randint(0, Vr, P)
    a = divergence_jit(h, w, t, vocab_size=Vr, vocab_chunk=128, form="native")
    b = divergence_jit(h, w, t, vocab_size=Vr, vocab_chunk=128, form="onepass")
    for k in b:
        np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not HAS_CXX, reason="no C++ compiler: the native kernel cannot be built here")
def test_mismatched_buffers_are_refused():
    native.require()
    S, P, C = 3, 4, 16
    z, ref = jnp.zeros((S, P, C)), jnp.zeros((0, C))
    m = c = s = jnp.zeros((S, P))
    with pytest.raises(Exception, match="X must be"):
        jax.block_until_ready(native.chunk_update(z, ref, 0, C, True, m, c, s, jnp.zeros((S, S + 1, P))))
    with pytest.raises(Exception, match="must be \\[S,P\\]"):
        jax.block_until_ready(native.chunk_update(z, ref, 0, C, True, m, c, jnp.zeros((S, P + 1)),
                                                  jnp.zeros((S, S, P))))
