"""On-disk cache of converted params (orbax), so a checkpoint is converted once and restored fast.

Why a cache: a study loads sizes x steps x seeds checkpoints, often several times (reruns, new
texts); reading HF weights, transposing and re-stacking them costs far more than an orbax restore.

Layout under the cache root (`cache_dir`, else $SEEDKL_CACHE, else ~/.cache/seedkl):

    models/<slug>-<ident>-<finger>/      one entry
        params/        orbax PyTreeCheckpointer tree (the params pytree, in the entry's dtype)
        config.json    the checkpoint's config.json (dtype forced to float32) -> no conversion on a hit
        entry.json     what the entry is: model, revision, dtype, fingerprint
        <tokenizer files, for hub models, so that an offline hit still has them>
        COMPLETE       marker, written last; holds the entry's name

`ident` hashes (absolute path or hub id, revision, dtype); `finger` hashes the weight files'
names, sizes and mtimes for local dirs (a changed checkpoint gets a new entry and re-converts;
the stale entry of the same ident is removed) and is constant for hub ids (a revision is the
identity there, so use step/commit revisions rather than a moving branch).

Atomic writes: everything is written into `models/.tmp-<name>-<random>/`, the marker last, and only
then the directory is renamed into place. A process killed at any point leaves at most a `.tmp-*`
directory (never looked up) — never an entry that loads as valid. A directory at an entry's name
without the marker (e.g. copied by hand, or written by a crashed older tool) is treated as absent
and replaced.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

MARKER = "COMPLETE"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir`, else $SEEDKL_CACHE, else ~/.cache/seedkl (absolute; not created here)."""
    root = cache_dir or os.environ.get("SEEDKL_CACHE") or Path.home() / ".cache" / "seedkl"
    return Path(root).expanduser().resolve()


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def entry_dir(root: Path, model: str, revision: str | None, dtype: str, fingerprint: Any) -> Path:
    """Where the entry for (model, revision, dtype, fingerprint) lives (existing or not)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "--", Path(model).name if os.path.isabs(model) else model)
    slug = f"{slug.strip('-')[:60]}{'@' + revision if revision else ''}-{dtype}"
    return root / "models" / f"{slug}-{_hash(model, revision, dtype)[:12]}-{_hash(fingerprint)[:8]}"


def is_complete(entry: Path) -> bool:
    marker = entry / MARKER
    return marker.is_file() and marker.read_text().strip() == entry.name


def restore(entry: Path) -> tuple[dict, dict] | None:
    """(params, config.json dict) of a complete entry, else None. Leaves are numpy arrays.

    A complete entry that no longer reads (files damaged later) is removed and counts as a miss.
    """
    if not is_complete(entry):
        return None
    try:
        params = _checkpointer().restore(entry / "params")
        return params, json.loads((entry / "config.json").read_text())
    except Exception as e:  # orbax/tensorstore raise many types; a cache that cannot be read is a miss
        warnings.warn(f"{entry}: unreadable cache entry ({type(e).__name__}); converting again")
        shutil.rmtree(entry, ignore_errors=True)
        return None


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

    if jax.process_index() != 0:  # orbax writes numpy leaves from process 0 only: no entry elsewhere
        return None
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = entry.parent / f".tmp-{entry.name}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        _checkpointer().save(tmp / "params", params)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        (tmp / "entry.json").write_text(json.dumps(info, indent=2, sort_keys=True))
        for f in extra_files:
            shutil.copy2(f, tmp / Path(f).name)
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
