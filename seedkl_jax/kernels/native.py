"""The one-pass form's per-chunk update as a compiled CPU kernel (form "native", opt-in).

Why: see onepass_cpu.cc (XLA:CPU's own loops for the update are the one-pass form's overhead over its
unembedding matmul). Same math and outputs as `_block_onepass`'s XLA step, different rounding (its
own vectorised exp, another summation order): tests hold both to float64.

Why opt-in: it is compiled on first use, with the system C++ compiler ($CXX, else g++, c++ or
clang++), against jaxlib's XLA FFI headers, and the shared object is then loaded into the process.
A default must not need a compiler at run time nor load code from a place others can write, so
nothing builds unless form "native" is asked for, and then:
- the build folder is per user: <$SEEDKL_NATIVE_DIR or <seedkl cache root>/native>/u<uid>, created
  0700; a folder or binary that is not owned by this user, or that group or others can write, is
  refused (never loaded, never built into);
- a build is published with an exclusive create (a hard link of the finished file: a name that
  exists already is never replaced), so concurrent builders and later readers see a whole file;
- the ISA is a portable baseline (x86-64-v3 where the CPU has AVX2 and FMA, else x86-64-v2; armv8-a),
  part of the build key with the source, compiler, flags and jax versions, never -march=native;
- a failed build is remembered (<key>.failed holds the compiler's reason): later processes report it
  instead of rebuilding; delete that file to try again.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib

from seedkl_jax.errors import SeedKLError

SOURCE = Path(__file__).with_name("onepass_cpu.cc")
TARGET = "seedkl_onepass_chunk"
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC")


def _march() -> str:
    """The portable ISA baseline this CPU runs (what the binary is compiled for and keyed by)."""
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return "-march=armv8-a"
    try:
        flags = next((ln.split(":", 1)[1].split() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("flags")), [])
    except OSError:
        flags = []
    return "-march=x86-64-v3" if {"avx2", "fma", "bmi2"} <= set(flags) else "-march=x86-64-v2"


def _check_private(path: Path) -> None:
    """Raise unless `path` is owned by this user and not writable by group or others."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise RuntimeError(f"{path} is a link, not owned by this user (uid {os.getuid()}) or writable by group/others "
                           f"(mode {stat.filemode(st.st_mode)}); refusing to use it — remove it, or set "
                           "$SEEDKL_NATIVE_DIR to a folder of your own")


def build_dir() -> Path:
    """This user's build folder (created 0700; checked private)."""
    base = os.environ.get("SEEDKL_NATIVE_DIR")
    if not base:
        from seedkl_jax.cachedir import cache_root

        base = cache_root() / "native"
    path = Path(base) / f"u{os.getuid()}"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    _check_private(path)
    return path


def _build() -> Path:
    """The checked shared object for this build key: an existing one, or compiled and published now."""
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if not cxx:
        raise RuntimeError("no C++ compiler found (set $CXX or install g++)")
    flags = (*FLAGS, _march())
    key = hashlib.sha256("\n".join([SOURCE.read_text(), cxx, " ".join(flags), jax.__version__,
                                    jaxlib.__version__]).encode()).hexdigest()[:16]
    folder = build_dir()
    out, failed = folder / f"onepass_cpu-{key}.so", folder / f"onepass_cpu-{key}.failed"
    if failed.exists():
        _check_private(failed)
        raise RuntimeError(f"an earlier build failed (delete {failed} to retry): {failed.read_text()[-1500:]}")
    if not out.exists():
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            so = Path(tmp) / out.name
            cmd = [cxx, *flags, "-isystem", jax.ffi.include_dir(), str(SOURCE), "-o", str(so)]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if done.returncode:
                reason = f"{' '.join(cmd)} failed:\n{done.stderr.strip()[-2000:]}"
                try:  # remembered, so later processes do not rebuild (a concurrent failure wrote it first)
                    with os.fdopen(os.open(failed, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                        f.write(reason)
                except FileExistsError:
                    pass
                raise RuntimeError(reason)
            os.chmod(so, 0o500)
            try:
                os.link(so, out)  # exclusive create: an existing name (another builder's) is kept
            except FileExistsError:
                pass
    _check_private(out)
    return out


@functools.cache
def _load() -> tuple[bool, str]:
    """(available, reason): build, check and register the FFI target once per process."""
    try:
        import ctypes

        lib = ctypes.CDLL(str(_build()))
        jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.SeedklOnepassChunk), platform="cpu")
    except (OSError, RuntimeError, AttributeError, subprocess.SubprocessError) as e:
        return False, str(e)
    return True, ""


def require(backend: str | None = None) -> None:
    """Build and register the kernel for form "native", or a named error saying why it cannot run
    (off CPU: backend, default JAX's; no compiler; a failed or refused build)."""
    backend = backend or jax.default_backend()
    if backend != "cpu":
        raise SeedKLError(f"kernel_form: 'native' is a CPU kernel and this runs on {backend}; pass "
                          "kernel_form='pair' (or None: the backend's default)")
    ok, why = _load()
    if not ok:
        raise SeedKLError(f"kernel_form: 'native' needs the compiled CPU kernel, which is not available ({why}); "
                          "install a C++ compiler (or set $CXX), or pass kernel_form='onepass' (the same math "
                          "in XLA, the CPU default)")


def chunk_update(z, ref, lo, hi, first, m, c, s, X):
    """One chunk of the one-pass update (see onepass_cpu.cc): z [S,Pb,C], ref [K,C] (K may be 0),
    valid columns [lo, hi) of the chunk, first (bool: set the offsets c), carry m, c, s [S,Pb],
    X [S,S+K,Pb] -> the new carry. CPU only; call `require()` first."""
    win = jnp.stack([jnp.asarray(lo, jnp.int32), jnp.asarray(hi, jnp.int32), jnp.asarray(first, jnp.int32)])
    shapes = tuple(jax.ShapeDtypeStruct(a.shape, jnp.float32) for a in (m, c, s, X))
    call = jax.ffi.ffi_call(TARGET, shapes, input_output_aliases={3: 0, 4: 1, 5: 2, 6: 3},
                            vmap_method="sequential")
    return call(z, ref, win, m, c, s, X)
