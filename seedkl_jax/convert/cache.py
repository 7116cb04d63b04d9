"""On-disk cache of converted params (orbax), so a checkpoint is converted once and restored fast.

Why a cache: a study loads sizes x steps x seeds checkpoints, often several times (reruns, new
texts); reading HF weights, transposing and re-stacking them costs far more than an orbax restore.

Layout under the cache root (`cache_dir`, else $SEEDKL_CACHE, else ~/.cache/seedkl):

    models/<slug>-<ident>-<finger>/      one entry
        params/        orbax PyTreeCheckpointer tree (the params pytree, in the entry's dtype)
        config.json    the checkpoint's config.json (dtype forced to float32) -> no conversion on a hit
        entry.json     what the entry is: model, revision, dtype, fingerprint
        checksums.json crc32 of every file it serves, blake2b of every array (checksums.py)
        <tokenizer files, for hub models, so that an offline hit still has them>
        COMPLETE       marker, written last; holds the entry's name
    xla/               JAX's persistent compilation cache (kernels/xla_cache.use_compilation_cache, turned on by the
                       entry points: cli, api)

`ident` hashes (absolute path or hub id, revision, dtype); `finger` hashes the weight files'
names, sizes and mtimes for local dirs (a changed checkpoint gets a new entry and re-converts;
the stale entry of the same ident is removed) and is constant for hub ids (a revision is the
identity there, so use step/commit revisions rather than a moving branch).

Atomic writes: everything is written into `models/.tmp-<name>-<random>/`, the marker last, and only
then the directory is renamed into place. A process killed at any point leaves at most a `.tmp-*`
directory (never looked up) — never an entry that loads as valid. A directory at an entry's name
without the marker (e.g. copied by hand, or written by a crashed older tool) is treated as absent
and replaced. Each `.tmp-*` holds a WRITER file (host, pid): `sweep` (run before every store and by
`seedkl run`) removes those whose writer is dead, and any older than a day. A full disk or an
unwritable cache while storing is one SeedKLError line, and the partial entry is removed.

Verified reads: `restore` checks the entry's files against checksums.json before orbax reads them
and the restored arrays after; a mismatch is one CacheWarning line naming the entry, which is dropped
and counts as a miss (the caller converts the checkpoint again). An entry without checksums (written
before they existed) is unverified: dropped and converted again, said once per process.

Read-only or unwritable root: `store` warns once (cachedir.warn_unwritable) and stores nothing; the
run goes on converting in memory. A full disk stays one SeedKLError line (above).

`entries` / `clear` / `check` list, remove and verify entries (`seedkl cache list|clear|verify`);
`drop` removes one (a checkpoint found broken after it was cached, e.g. NaN weights).
"""
from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

from seedkl_jax.cachedir import CacheWarning, is_unwritable, warn_unwritable
from seedkl_jax.cachedir import cache_root  # noqa: F401  (re-exported: cache.cache_root(...) callers)
from seedkl_jax.convert import checksums
from seedkl_jax.errors import SeedKLError

MARKER = "COMPLETE"
WRITER = "WRITER"  # in a .tmp-* folder: {"host", "pid"} of the process writing it
STALE_TMP_S = 24 * 3600  # a .tmp-* folder older than this is abandoned whoever wrote it
# Version of the params layout stored (2: the Flax modules' nested trees). Part of every entry's name,
# so entries of an older layout miss (and are removed as stale when the checkpoint is stored again).
LAYOUT_VERSION = 2


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def entry_dir(root: Path, model: str, revision: str | None, dtype: str, fingerprint: Any) -> Path:
    """Where the entry for (model, revision, dtype, fingerprint) lives (existing or not)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "--", Path(model).name if os.path.isabs(model) else model)
    slug = f"{slug.strip('-')[:60]}{'@' + revision if revision else ''}-{dtype}"
    return root / "models" / f"{slug}-{_hash(model, revision, dtype)[:12]}-{_hash(LAYOUT_VERSION, fingerprint)[:8]}"


def is_complete(entry: Path) -> bool:
    marker = entry / MARKER
    return marker.is_file() and marker.read_text().strip() == entry.name


def restore(entry: Path) -> tuple[dict, dict] | None:
    """(params, config.json dict) of a complete entry whose checksums hold, else None. Leaves are numpy arrays.

    A complete entry that fails its checksums or no longer reads (files damaged later) is removed with
    one CacheWarning line and counts as a miss; one without checksums likewise, said once per process.
    """
    if not is_complete(entry):
        return None
    params, config, problem = _read_checked(entry)
    if problem is None:
        return params, config
    dropped = _drop_checked(entry)
    what = "dropped" if dropped else "left in place (the cache is not writable)"
    if problem == UNVERIFIED:  # one text for every such entry: Python's warning registry shows it once
        warnings.warn(f"params cache {entry.parent.parent}: entries written before cache checksums existed "
                      "are unverified; each is converted again when used", CacheWarning, stacklevel=2)
    else:
        warnings.warn(f"params cache entry {entry.name} is corrupt ({problem}): {what}, converting its "
                      "checkpoint again", CacheWarning, stacklevel=2)
    return None


UNVERIFIED = "unverified: written before cache checksums existed"


def check(entry: Path) -> str | None:
    """What is wrong with a complete entry (`seedkl cache verify`): None when its checksums hold."""
    return _read_checked(entry)[2]


def checked_config(entry: Path) -> dict | None:
    """The config.json of a complete entry when it matches its recorded checksum (no params read), else None."""
    manifest = checksums.read(entry) if is_complete(entry) else None
    if manifest is None or "config.json" not in manifest["files"]:
        return None
    if checksums.files_problem(entry, {"files": {"config.json": manifest["files"]["config.json"]}}) is not None:
        return None
    try:
        return json.loads((entry / "config.json").read_text())
    except (OSError, ValueError):
        return None


def _read_checked(entry: Path) -> tuple[dict | None, dict | None, str | None]:
    """(params, config, None) when the entry's files and arrays match checksums.json, else (.., problem).
    Files are checked before orbax reads them: a damaged file never reaches tensorstore."""
    manifest = checksums.read(entry)
    if manifest is None:
        return None, None, UNVERIFIED
    problem = checksums.files_problem(entry, manifest)
    if problem is not None:
        return None, None, problem
    try:
        params = _checkpointer().restore(entry / "params")
        config = json.loads((entry / "config.json").read_text())
    except Exception as e:  # orbax/tensorstore raise many types; a cache that cannot be read is a miss
        return None, None, f"unreadable: {type(e).__name__}"
    return params, config, checksums.arrays_problem(params, manifest)


def _drop_checked(entry: Path) -> bool:
    """Remove a rejected entry; False when the cache is read-only (it stays, and is checked again)."""
    shutil.rmtree(entry, ignore_errors=True)
    return not entry.exists()


def _checkpointer():
    """orbax, confined to this process. In a multi-process JAX job (seedkl_jax.distributed) every
    process loads different checkpoints at different times, so orbax's default cross-process
    barriers would pair unrelated saves or hang; local options keep each call to its own process."""
    import jax
    import orbax.checkpoint as ocp
    from orbax.checkpoint import options

    if jax.process_count() == 1:
        return ocp.PyTreeCheckpointer()
    i = jax.process_index()
    mp = options.MultiprocessingOptions(primary_host=i, active_processes={i},
                                        barrier_sync_key_prefix=f"seedkl-cache-{i}")
    return ocp.Checkpointer(ocp.PyTreeCheckpointHandler(multiprocessing_options=mp), multiprocessing_options=mp)


def store(entry: Path, params: dict, config: dict, info: dict,
          extra_files: list[Path] = ()) -> Path:
    """Write an entry atomically (see module docstring); return its final directory.

    `params`: the pytree to save; `config`: config.json body; `info`: written to entry.json;
    `extra_files`: copied in (tokenizer files of hub models).
    """
    import jax

    from seedkl_jax.disk import disk_errors

    if jax.process_index() != 0:  # orbax writes numpy leaves from process 0 only: no entry elsewhere
        return None
    tmp = entry.parent / f".tmp-{entry.name}-{uuid.uuid4().hex[:8]}"
    root = entry.parent.parent
    try:
        with disk_errors(f"params cache {root}", "the partial entry was removed; free space, or point "
                                                  "--cache_dir / $SEEDKL_CACHE at a writable folder with room"):
            if not _start(root, tmp):
                return None
            sweep(root)
            _check_room(entry.parent, params)
            with _orbax_quiet():
                _checkpointer().save(tmp / "params", params)
            (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
            (tmp / "entry.json").write_text(json.dumps(info, indent=2, sort_keys=True))
            for f in extra_files:
                shutil.copy2(f, tmp / Path(f).name)
            checksums.write(tmp, params)
            _finish(tmp, entry.name)
            if entry.exists() and not is_complete(entry):
                shutil.rmtree(entry)  # an invalid leftover at our name: replace it
            try:
                os.rename(tmp, entry)
            except OSError:  # a concurrent writer got there first; its entry is as good as ours
                if not is_complete(entry):
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _remove_stale(entry)
    return entry


def _start(root: Path, tmp: Path) -> bool:
    """Create the entry's .tmp folder with its WRITER file; False (one warning per process) when the
    cache cannot be written at all (read-only mount, no permission): the caller runs without it."""
    try:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        (tmp / WRITER).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    except OSError as e:
        if not is_unwritable(e):
            raise
        warn_unwritable(root, e)
        return False
    return True


def _check_room(folder: Path, params: dict) -> None:
    """Refuse before writing when the entry cannot fit (free space, or this process's file-size
    limit): a save that fails midway makes orbax's threads print tracebacks we cannot hold back."""
    import resource

    import jax

    need = sum(int(getattr(a, "nbytes", 0)) for a in jax.tree.leaves(params))
    if shutil.disk_usage(folder).free < need:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder))
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY and soft < need:
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(folder))


@contextlib.contextmanager
def _orbax_quiet():
    """orbax logs a failed save's traceback at ERROR from each of its threads before raising it:
    the caller reports the error itself (one line for a full disk), so keep those logs back."""
    import logging

    log = logging.getLogger("absl")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def clone(source: Path, entry: Path, info: dict) -> Path | None:
    """A complete `entry` whose params are hard links to those of the complete entry `source`
    (same weight files under another path, e.g. one checkpoint hard-linked as several steps: the
    disk holds its params once). entry.json gets `info`; atomic like `store`. None when `source`
    is not complete or the filesystem refuses hard links (the caller then stores a copy)."""
    if not is_complete(source):
        return None
    tmp = entry.parent / f".tmp-{entry.name}-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(source, tmp, copy_function=os.link,
                        ignore=lambda d, names: [n for n in names if Path(d) == source and n in (MARKER, "entry.json")])
        (tmp / "entry.json").write_text(json.dumps(info, indent=2, sort_keys=True))
        _finish(tmp, entry.name)
        if entry.exists() and not is_complete(entry):
            shutil.rmtree(entry)
        try:
            os.rename(tmp, entry)
        except OSError:
            if not is_complete(entry):
                raise
    except OSError:
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _remove_stale(entry)
    return entry


def _finish(tmp: Path, name: str) -> None:
    """Write the completion marker (last step before the rename; separate so tests can fail it)."""
    with open(tmp / MARKER, "w") as f:
        f.write(name)
        f.flush()
        os.fsync(f.fileno())


def _remove_stale(entry: Path) -> None:
    """Drop other entries of the same ident (older fingerprints of a changed local checkpoint)."""
    prefix = entry.name.rsplit("-", 1)[0] + "-"
    for other in entry.parent.glob(f"{glob.escape(prefix)}*"):
        if other != entry and other.name.rsplit("-", 1)[0] + "-" == prefix:
            shutil.rmtree(other, ignore_errors=True)


# ---------------------------------------------------------------------------- hygiene, list, clear


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def sweep(root: Path, max_age_s: float = STALE_TMP_S) -> list[Path]:
    """Remove `.tmp-*` folders under root/models whose writer died (same host, pid gone) or that are
    older than `max_age_s`; returns what was removed. A folder another live process writes stays."""
    removed, now, host = [], time.time(), socket.gethostname()
    for tmp in sorted((Path(root) / "models").glob(".tmp-*")):
        try:
            age = now - tmp.stat().st_mtime
            writer = json.loads((tmp / WRITER).read_text())
        except (OSError, ValueError):
            writer = None
            if not tmp.exists():
                continue
        dead = (isinstance(writer, dict) and writer.get("host") == host
                and isinstance(writer.get("pid"), int) and not _alive(writer["pid"]))
        if dead or age > max_age_s:
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def drop(entry: Path) -> None:
    """Remove one entry (complete or not)."""
    shutil.rmtree(entry, ignore_errors=True)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def entries(root: Path) -> list[dict[str, Any]]:
    """Every complete entry under root: {path, model, revision, dtype, bytes, checksums (bool: has
    checksums.json; without, it is converted again when used)}, sorted by model."""
    rows = []
    for entry in sorted((Path(root) / "models").glob("[!.]*")):
        if not is_complete(entry):
            continue
        try:
            info = json.loads((entry / "entry.json").read_text())
        except (OSError, ValueError):
            info = {}
        rows.append({"path": entry, "model": info.get("model", "?"), "revision": info.get("revision"),
                     "dtype": info.get("dtype", "?"), "bytes": _size(entry),
                     "checksums": (entry / checksums.MANIFEST).is_file()})
    return sorted(rows, key=lambda r: (str(r["model"]), str(r["revision"]), str(r["dtype"])))


def unfinished(root: Path) -> list[Path]:
    """Folders under root/models that are not complete entries (.tmp-* of writers alive or dead, entries
    without their marker): what `clear` removes besides the entries, and `sweep` removes when dead."""
    models = Path(root) / "models"
    if not models.is_dir():
        return []
    return sorted(p for p in models.iterdir() if p.is_dir() and p.name != ".same-files" and not is_complete(p))


def entry_ref(row: dict) -> str:
    return f"{row['model']}@{row['revision']}" if row["revision"] else str(row["model"])


def clear(root: Path, match: str | None = None) -> tuple[int, int]:
    """Remove the entries whose model id (or "model@revision") contains `match` (all when None),
    and, clearing all, every folder under root/models (incomplete entries, .tmp-*); -> (entries, bytes).
    A cache that cannot be written is one SeedKLError line (nothing is half-removed silently)."""
    models = Path(root) / "models"
    if match:
        chosen = [r for r in entries(root) if match in entry_ref(r)]
        targets = [r["path"] for r in chosen]
    else:
        chosen = entries(root)
        targets = sorted(models.iterdir()) if models.is_dir() else []
    freed = sum(_size(t) if t.is_dir() else t.stat().st_size for t in targets)
    try:
        for t in targets:
            shutil.rmtree(t) if t.is_dir() else t.unlink()
    except OSError as e:
        if not is_unwritable(e):
            raise
        raise SeedKLError(f"params cache {root}: cannot remove entries ({e.strerror}); the cache is read-only or "
                          "not yours: clear it where it is writable, or point --cache_dir elsewhere") from None
    return len(chosen), freed
