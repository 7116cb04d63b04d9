"""JAX's persistent compilation cache under <seedkl cache root>/xla, checksummed so that nothing
corrupt or foreign is ever handed to JAX.

Why: JAX trusts its cache directory. An entry is a compressed serialized executable; when JAX uses
zstd (zstandard installed, or Python >= 3.14) the frame carries no checksum, so a flipped bit that
still decompresses and deserialises runs as a different program. (With zlib, as on Python 3.11
without zstandard, the Adler-32 check catches it and JAX recompiles with a warning.) JAX also reads
whatever another process put there. So seedkl keeps its own seal per entry:

    <key>-cache          JAX's file (jax._src.lru_cache: <key>-cache, and <key>-atime with eviction)
    <key>-cache.sum      blake2b-256 of that file, written by the seedkl process that created it, at exit

`use_compilation_cache` checks the folder BEFORE pointing JAX at it: an entry whose seal does not
match is dropped (one CacheWarning line), an entry without a seal (another program's, or a seedkl
process killed before it exited) is dropped silently; JAX then recompiles those programs. Seals are
written at exit (atexit) for entries created since this process turned the cache on. A folder that
cannot be written: the persistent cache stays off (one warning line, cachedir.warn_unwritable).

Window left open: an entry written by another live process after this one's check is read unsealed
(concurrent seedkl processes sharing one root). A directory the process already chose (jax.config or
$JAX_COMPILATION_CACHE_DIR) is the user's: kept as it is, unchecked.
"""
from __future__ import annotations

import atexit
import hashlib
import os
import time
import warnings
from pathlib import Path

from seedkl_jax.cachedir import CacheWarning, cache_root, is_unwritable, warn_unwritable
from seedkl_jax.disk import describe, disk_errno
from seedkl_jax.errors import SeedKLError

SUBDIR = "xla"
ENTRY_SUFFIX = "-cache"  # JAX's LRUCache names its entries <key>-cache
SEAL_SUFFIX = ".sum"
_CHUNK = 16 << 20


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _seal_of(entry: Path) -> Path:
    return entry.with_name(entry.name + SEAL_SUFFIX)


def _remove(entry: Path) -> None:
    for p in (entry, _seal_of(entry), entry.with_name(entry.name[:-len(ENTRY_SUFFIX)] + "-atime")):
        p.unlink(missing_ok=True)


def check(path: Path) -> tuple[list[Path], list[Path]]:
    """Drop every entry of `path` that is not sealed by a seedkl process or fails its seal; -> (corrupt,
    unsealed) entries removed. Seals whose entry is gone are removed too."""
    corrupt, unsealed = [], []
    for entry in sorted(path.glob(f"*{ENTRY_SUFFIX}")):
        seal = _seal_of(entry)
        try:
            want = seal.read_text().strip() if seal.is_file() else None
            ok = want is not None and _digest(entry) == want
        except OSError:
            ok, want = False, None
        if not ok:
            (unsealed if want is None else corrupt).append(entry)
            _remove(entry)
    for seal in path.glob(f"*{ENTRY_SUFFIX}{SEAL_SUFFIX}"):
        if not seal.with_name(seal.name[:-len(SEAL_SUFFIX)]).exists():
            seal.unlink(missing_ok=True)
    return corrupt, unsealed


def seal(path: Path, since: float) -> list[Path]:
    """Seal the unsealed entries of `path` modified at or after `since` (this process's, written while
    it ran); -> the entries sealed. Run at exit by `use_compilation_cache`."""
    done = []
    for entry in sorted(Path(path).glob(f"*{ENTRY_SUFFIX}")):
        try:
            if _seal_of(entry).exists() or entry.stat().st_mtime < since:
                continue
            tmp = entry.with_name(f".{entry.name}{SEAL_SUFFIX}.{os.getpid()}")
            tmp.write_text(_digest(entry))
            os.replace(tmp, _seal_of(entry))
            done.append(entry)
        except OSError:  # gone meanwhile, or the folder turned read-only: the entry stays unsealed -> dropped later
            continue
    return done


def _writable(path: Path) -> OSError | None:
    """None when `path` exists (created here if needed) and a file can be written in it, else the error."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        return e
    return None


def use_compilation_cache(cache_dir=None) -> str | None:
    """Point JAX's persistent compilation cache at <seedkl cache root>/xla (cache_dir, else
    $SEEDKL_CACHE, else ~/.cache/seedkl) after checking its entries (module docstring), so a second
    process reuses the compiled compare steps instead of recompiling them (seconds per model size).
    A directory the process already set (by this function, `jax.config.update("jax_compilation_cache_dir",
    ...)` or $JAX_COMPILATION_CACHE_DIR) is kept: JAX reads the setting once per process. Returns the
    directory in use, or None when the folder cannot be written (one warning; compiling goes on uncached).

    JAX stores only programs whose compile took ≥ `jax_persistent_cache_min_compile_time_secs`
    (default 1 s): the compare steps of real models, not tiny test ones.
    """
    import jax

    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    root = cache_root(cache_dir)
    path = root / SUBDIR
    problem = _writable(path)
    if problem is not None:
        if not is_unwritable(problem):
            code = disk_errno(problem)
            raise SeedKLError(f"compile cache {path}: {describe(code) if code else problem}; point --cache_dir or "
                              "$SEEDKL_CACHE at a folder") from None
        warn_unwritable(root, problem)
        return None
    corrupt, _ = check(path)
    if corrupt:
        warnings.warn(f"compile cache {path}: {len(corrupt)} corrupt entr{'y' if len(corrupt) == 1 else 'ies'} "
                      "dropped (their checksums differ); those programs are compiled again", CacheWarning, stacklevel=2)
    atexit.register(seal, path, time.time() - 1.0)  # -1 s: filesystems whose mtime lags the clock a little
    jax.config.update("jax_compilation_cache_dir", str(path))
    return str(path)
