"""One writer per `--out`: an exclusive lock on `<out>/.seedkl.lock`, held for the whole run.

Why: two runs into one folder would both compute everything and then replace each other's files
(a report.md pointing at figures the other run deleted). The lock is `flock`, so the kernel drops it
when its holder dies for any reason (kill -9 included): a stale lock file never blocks a later run.
The file stays (deleting a lock file races with the next locker) and holds the holder's pid and host
for the message a second run prints. On a filesystem without locks (some FUSE mounts) the run goes
on with a warning. The one exception: a folder created for this run (`hold(..., new=True)`) whose run
fails before writing anything is removed with its lock file, so a failed first attempt (a typo in a
flag, a missing checkpoint) leaves no empty --out behind; a folder that existed before, or that holds
anything besides the lock file, is never removed.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Iterator

from seedkl_jax.errors import SeedKLError

LOCK_FILE = ".seedkl.lock"


def _holder(fd: int, patience_s: float = 2.0) -> str:
    """"pid N" of the run holding the lock. It writes its pid just after taking the lock, so an empty
    or half-written file gets a moment before we give up on it."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
            where = "" if info.get("host") in (None, socket.gethostname()) else f" on {info['host']}"
            return f"pid {info['pid']}{where}"
        except (OSError, ValueError, KeyError, TypeError):
            if time.monotonic() > deadline:
                return "pid unknown"
            time.sleep(0.05)


def _wait_for(fd: int, poll_s: float = 0.2) -> None:
    """Take the lock once its holder lets go. Polled, not one blocking flock: the kernel may deliver a
    Ctrl-C to any of the process's threads (JAX and tensorstore start some), and then nothing interrupts
    a blocking flock in the main thread, so the interrupt would wait for the other run to end."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            time.sleep(poll_s)


@contextlib.contextmanager
def hold(out: Path, *, wait: bool = False, new: bool = False) -> Iterator[Path]:
    """Hold the lock of the existing folder `out` inside the block (yields the lock file's path).

    Busy: SeedKLError "another seedkl run (pid N) is writing to --out=...", or with `wait` block
    until the other run ends (saying so once on stderr). new: `out` was created for this run; if
    the block raises (an interrupt too) while `out` holds only the lock file, both are removed.
    """
    path = Path(out) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise SeedKLError(f"--out={out}: cannot create its lock file ({e.strerror or e}); "
                          "choose a folder you can write to") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if not wait:
                raise SeedKLError(f"--out={out}: another seedkl run ({holder}) is writing to it; wait "
                                  "for it to end, pass --wait to queue behind it, or use another --out") from None
            print(f"seedkl: waiting for the other run ({holder}) writing to {out}", file=sys.stderr, flush=True)
            _wait_for(fd)
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            warnings.warn(f"--out={out}: this filesystem has no file locks ({e.strerror}); make sure no "
                          "other seedkl run writes to the same folder")
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, me, 0)
        try:
            yield path
        except BaseException:
            if new:
                _remove_if_untouched(Path(out))
            raise
    finally:
        os.close(fd)  # releases the lock


def _remove_if_untouched(out: Path) -> None:
    """Remove `out` and its lock file if nothing else is in it (called while holding the lock)."""
    try:
        if [p.name for p in out.iterdir()] != [LOCK_FILE]:
            return
        (out / LOCK_FILE).unlink()
        out.rmdir()
    except OSError:
        pass  # a file appeared meanwhile, or no permission: the folder stays as it is
