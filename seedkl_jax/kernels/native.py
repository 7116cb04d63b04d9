"""The one-pass form's per-chunk update as a compiled CPU kernel (form "native", the CPU default).

Why: see onepass_cpu.cc. XLA:CPU's own loops for the update (max, exp, the S·J pair products) cost
0.6 s of the 1.4 s one-pass kernel at the pythia-14m shape; the compiled update runs them on each
position's rows in cache with explicit vectors. Same math and outputs as `_block_onepass`'s XLA
step, different rounding (its own vectorised exp, another summation order): tests hold both to
float64.

Built on first use with the system C++ compiler ($CXX, else g++, c++ or clang++) against jaxlib's
XLA FFI headers, `-O3 -march=native`, into $SEEDKL_NATIVE_DIR, else <seedkl cache root>/native,
under a name keyed by the source, compiler, flags, jaxlib version and this CPU's features (a cache
shared between different machines never loads a binary built for another CPU). A failed build is
not an error: `available()` says False with the reason and the default form falls back to the XLA
one-pass form.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib

from seedkl_jax.errors import SeedKLError

SOURCE = Path(__file__).with_name("onepass_cpu.cc")
TARGET = "seedkl_onepass_chunk"
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC")


def _cpu_features() -> str:
    """The CPU's feature flags (what -march=native compiles for), or the machine name if unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def _build_dir() -> Path:
    env = os.environ.get("SEEDKL_NATIVE_DIR")
    if env:
        return Path(env)
    from seedkl_jax.cachedir import cache_root

    return cache_root() / "native"


def _build() -> Path:
    """Compile onepass_cpu.cc once per key (atomic rename, so concurrent processes are safe)."""
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if not cxx:
        raise RuntimeError("no C++ compiler found (set $CXX or install g++)")
    include = jax.ffi.include_dir()
    key = hashlib.sha256("\n".join([SOURCE.read_text(), cxx, " ".join(FLAGS), jax.__version__, jaxlib.__version__,
                                    _cpu_features()]).encode()).hexdigest()[:16]
    out = _build_dir() / f"onepass_cpu-{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        so = Path(tmp) / out.name
        cmd = [cxx, *FLAGS, "-isystem", include, str(SOURCE), "-o", str(so)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr.strip()[-2000:]}")
        os.replace(so, out)
    return out


@functools.cache
def _load() -> tuple[bool, str]:
    """(available, reason): build and register the FFI target once per process."""
    try:
        import ctypes

        lib = ctypes.CDLL(str(_build()))
        jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.SeedklOnepassChunk), platform="cpu")
    except (OSError, RuntimeError, AttributeError, subprocess.SubprocessError) as e:
        warnings.warn(f"seedkl: the native CPU kernel could not be built ({str(e)[:500]}); the CPU default "
                      "is the XLA one-pass form instead (same math, ~1.4x the kernel time at pythia-14m)")
        return False, str(e)
    return True, ""


def available() -> bool:
    """Whether the native kernel is built and registered (building it on the first call)."""
    return _load()[0]


def require(backend: str | None = None) -> None:
    """A named error if form "native" was asked for off CPU (backend, default JAX's) or where it
    cannot be built."""
    backend = backend or jax.default_backend()
    if backend != "cpu":
        raise SeedKLError(f"form: 'native' is a CPU kernel and this runs on {backend}; pass form='pair' "
                          "(or None: the backend's default)")
    ok, why = _load()
    if not ok:
        raise SeedKLError(f"form: 'native' needs the compiled CPU kernel, which could not be built ({why}); "
                          "install a C++ compiler (or set $CXX), or pass form='onepass' (the same math in XLA)")


def chunk_update(z, ref, lo, hi, first, m, c, s, X):
    """One chunk of the one-pass update (see onepass_cpu.cc): z [S,Pb,C], ref [K,C] (K may be 0),
    valid columns [lo, hi) of the chunk, first (bool: set the offsets c), carry m, c, s [S,Pb],
    X [S,S+K,Pb] -> the new carry. CPU only; call `require()` first."""
    win = jnp.stack([jnp.asarray(lo, jnp.int32), jnp.asarray(hi, jnp.int32), jnp.asarray(first, jnp.int32)])
    shapes = tuple(jax.ShapeDtypeStruct(a.shape, jnp.float32) for a in (m, c, s, X))
    call = jax.ffi.ffi_call(TARGET, shapes, input_output_aliases={3: 0, 4: 1, 5: 2, 6: 3},
                            vmap_method="sequential")
    return call(z, ref, win, m, c, s, X)

