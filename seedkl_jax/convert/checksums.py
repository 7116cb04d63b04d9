"""Checksums of a params-cache entry: what `cache.store` records and `cache.restore` checks.

Why: orbax's zstd frames carry no checksum, so one flipped bit in a data file restores as a finite,
silently wrong weight (seen: six weights ~2e26 times too large, a KL off by 1e25). Two checks, both
recorded in `checksums.json` when the entry is written:

    files   zlib.crc32 and size of every file the entry serves (params/**, config.json, tokenizer
            files), checked BEFORE orbax reads them: a damaged file never reaches tensorstore (whose
            threads print "Event loop is closed" tracebacks after a failed read) and costs one read
            at ~5 GB/s instead of a decode.
    arrays  blake2b-128 of each restored array's dtype, shape and bytes, checked AFTER the restore:
            what is served to the model is exactly what was converted, whatever orbax did between.

An entry without checksums.json (written before checksums existed) is unverified: never served.
"""
from __future__ import annotations

import hashlib
import json
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "checksums.json"
FORMAT = 1
# Files of an entry that describe it rather than serve it (entry.json is rewritten by `cache.clone`).
NOT_SERVED = frozenset({MANIFEST, "COMPLETE", "WRITER", "entry.json"})
_CHUNK = 16 << 20


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))  # hashlib and zlib release the GIL on large buffers


def array_digest(a: Any) -> str:
    """blake2b-128 over dtype name, shape and the bytes (C order) of one array."""
    a = np.ascontiguousarray(np.asarray(a))
    h = hashlib.blake2b(f"{a.dtype.name}{a.shape}".encode(), digest_size=16)
    h.update(a.reshape(-1).view(np.uint8).data)
    return h.hexdigest()


def array_digests(params: Any) -> dict[str, str]:
    """{key path: digest} of every leaf of a params pytree."""
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    with ThreadPoolExecutor(_workers()) as pool:
        digests = list(pool.map(lambda kv: array_digest(kv[1]), leaves))
    return {jax.tree_util.keystr(k): d for (k, _), d in zip(leaves, digests)}


def _file_crc(path: Path) -> list[int]:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return [path.stat().st_size, crc]


def file_sums(entry: Path) -> dict[str, list[int]]:
    """{relative path: [size, crc32]} of every file the entry serves."""
    files = sorted(p for p in entry.rglob("*") if p.is_file() and p.relative_to(entry).as_posix() not in NOT_SERVED)
    with ThreadPoolExecutor(_workers()) as pool:
        sums = list(pool.map(_file_crc, files))
    return {p.relative_to(entry).as_posix(): s for p, s in zip(files, sums)}


def write(entry: Path, params: Any) -> None:
    """Record the checksums of the entry being written (its files are all in place)."""
    body = {"format": FORMAT, "files": file_sums(entry), "arrays": array_digests(params)}
    (entry / MANIFEST).write_text(json.dumps(body, indent=1, sort_keys=True))


def read(entry: Path) -> dict | None:
    """The entry's recorded checksums, or None when it has none (unverified) or they do not parse."""
    try:
        body = json.loads((entry / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(body, dict) and body.get("format") == FORMAT and isinstance(body.get("files"), dict) \
        and isinstance(body.get("arrays"), dict)
    return body if ok else None


def files_problem(entry: Path, manifest: dict) -> str | None:
    """What differs between the entry's files and their recorded checksums (first difference), else None."""
    recorded = sorted(manifest["files"].items())
    missing = [rel for rel, _ in recorded if not (entry / rel).is_file()]
    if missing:
        return f"{missing[0]} is missing"
    with ThreadPoolExecutor(_workers()) as pool:
        got = list(pool.map(lambda kv: _file_crc(entry / kv[0]), recorded))
    for (rel, want), have in zip(recorded, got):
        if have != list(want):
            return f"{rel} has changed ({'size' if have[0] != want[0] else 'crc32'} differs)"
    return None


def arrays_problem(params: Any, manifest: dict) -> str | None:
    """What differs between restored arrays and their recorded digests (first difference), else None."""
    got, want = array_digests(params), manifest["arrays"]
    if set(got) != set(want):
        return f"arrays {sorted(set(got) ^ set(want))[:3]} differ from those recorded"
    bad = [k for k in sorted(want) if got[k] != want[k]]
    return f"array {bad[0]} differs from its checksum" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "") \
        if bad else None
