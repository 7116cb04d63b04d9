"""Where seedkl keeps what it caches: one root, shared by every layer (ground floor, no imports).

    <root>/models/   converted params (convert/cache.py), each entry checksummed (convert/checksums.py)
    <root>/xla/      JAX's persistent compilation cache (turned on by the entry points; kernels/xla_cache.py)
    <root>/stanza/   part-of-speech tags (data/pos.py)
    <root>/demo/     the demo's trained suites

The root is `cache_dir`, else $SEEDKL_CACHE, else ~/.cache/seedkl.

A cache is an optimisation, never a requirement: when the root cannot be written (a read-only mount,
no permission, a file in the way) every cache runs without storing and `warn_unwritable` says so in
one line per process (the same text from every cache, so Python's warning registry shows it once).
"""
from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path

# errno of a cache root that cannot be written: run without caching. A full disk, or a file where the
# root should be (a wrong --cache_dir), stays an error: the user asked for something that cannot work.
UNWRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


class CacheWarning(UserWarning):
    """A cache entry was corrupt or the cache cannot be written: the run goes on, recomputing.
    The CLI prints these as one line (cli.quiet_process)."""


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir`, else $SEEDKL_CACHE, else ~/.cache/seedkl (absolute; not created here)."""
    root = cache_dir or os.environ.get("SEEDKL_CACHE") or Path.home() / ".cache" / "seedkl"
    return Path(root).expanduser().resolve()


def is_unwritable(e: BaseException) -> bool:
    """`e` says a cache folder cannot be created or written (not: the disk is full)."""
    return isinstance(e, OSError) and e.errno in UNWRITABLE


def warn_unwritable(root: Path, e: OSError) -> None:
    """One line, once per process and root, whichever cache (params, XLA, PoS) meets it first."""
    warnings.warn(f"cache {root} is not writable ({e.strerror or e}): running without caching "
                  "(converted params, compiled programs and PoS tags are recomputed; point --cache_dir or "
                  "$SEEDKL_CACHE at a writable folder to keep them)", CacheWarning, stacklevel=1)
