"""Where seedkl keeps what it caches: one root, shared by every layer (ground floor, no imports).

    <root>/models/   converted params (convert/cache.py)
    <root>/xla/      JAX's persistent compilation cache (turned on by the entry points)
    <root>/stanza/   part-of-speech tags (data/pos.py)
    <root>/demo/     the demo's trained suites

The root is `cache_dir`, else $SEEDKL_CACHE, else ~/.cache/seedkl.
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir`, else $SEEDKL_CACHE, else ~/.cache/seedkl (absolute; not created here)."""
    root = cache_dir or os.environ.get("SEEDKL_CACHE") or Path.home() / ".cache" / "seedkl"
    return Path(root).expanduser().resolve()
