"""Disk and filesystem failures (full disk, file-size limit, read-only or unwritable folder) as one
SeedKLError line that names the path and what to do, instead of a library's traceback.

Why here: the params cache (orbax/tensorstore), the study's `--out` (numpy, polars, matplotlib) and
the lock all write files, and each library reports the same five conditions differently: an OSError
with an errno, or a ValueError / polars ComputeError whose text carries "os error 28" or
"os_error_code='27'". `disk_errors` recognises all of them; anything else passes through unchanged.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
from typing import Iterator

from seedkl_jax.errors import SeedKLError

# errno -> what the user can do about it
HINTS = {
    errno.ENOSPC: "the disk is full: free space or use a folder on another disk",
    errno.EDQUOT: "the disk quota is used up: free space or use a folder on another disk",
    errno.EFBIG: "a file grew past the file-size limit (ulimit -f) or the filesystem's maximum: "
                 "raise the limit or use a folder on another filesystem",
    errno.EROFS: "the filesystem is read-only: use a writable folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder: use another path",
    errno.EACCES: "permission denied: use a folder you can write to",
    errno.EPERM: "operation not permitted: use a folder you can write to",
}
_CODE = re.compile(r"os[ _]error(?:_code)?[ =]'?(\d+)")


def disk_errno(e: BaseException) -> int | None:
    """The errno of a disk/filesystem failure anywhere in `e`'s chain, else None."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in HINTS:
            return e.errno
        m = _CODE.search(str(e))
        if m and int(m.group(1)) in HINTS:
            return int(m.group(1))
        e = e.__cause__ or e.__context__
    return None


def describe(code: int) -> str:
    return f"{os.strerror(code)} ({HINTS[code]})"


@contextlib.contextmanager
def disk_errors(where: str, fix: str) -> Iterator[None]:
    """Turn a disk/filesystem failure inside the block into `SeedKLError("{where}: {why}; {fix}")`.

    where: names the path (e.g. "--out=/runs/x" or "params cache /home/u/.cache/seedkl");
    fix: what was kept and what to do next. Cleaning up partial files is the caller's job (finally).
    """
    try:
        yield
    except SeedKLError:
        raise
    except Exception as e:
        code = disk_errno(e)
        if code is None:
            raise
        raise SeedKLError(f"{where}: {describe(code)}; {fix}") from None
