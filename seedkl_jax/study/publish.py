"""Moving a run's final outputs into `--out` as one set: `publish` (study/outputs.py, study/analyze.py)
and `recover` (the next writer, once it holds --out's lock: study/run.py at start, `publish` itself).

Why: the final files are staged complete in `.staging-<pid>/` (study/store.py), but moving N files
into place is N renames, and a kill between two of them would leave a mix (a new figure beside the old
summary; on a fresh --out a single file). So the swap is journalled:

  1. the stage is renamed to `.publish/` (one rename; from then on it belongs to the swap, so the
     run's own cleanup of its staging folder cannot delete files the journal still needs)
  2. `.publish.json` (written atomically) lists every move, every file of the old set that the new
     one lacks (to delete), and the new set's manifest
  3. manifest.json is removed: while it is absent, no complete set is claimed
  4. the moves, 5. the deletions, 6. manifest.json (atomically), 7. the journal and `.publish/` go.

A kill in 2-7 leaves the journal and the not-yet-moved files in `.publish/`: `recover` redoes 3-7
(a move whose staged file is gone was done before the kill), then checks every file against the
manifest and writes manifest.json only if all match. A kill before 2 leaves the old set untouched
(the stage is discarded by the next run). manifest.json (MANIFEST) = {"format", "settings_sha256":
the run's settings digest, "files": {relative path: {"size", "sha256"}}}; it lists the final outputs,
not study.json, timings.json or groups/. Readers: trust --out's outputs when manifest.json is there
and .publish.json is not (`verify(out)` lists what disagrees).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from seedkl_jax.study import store

JOURNAL = ".publish.json"
MANIFEST = "manifest.json"
SWAP_DIR = ".publish"
MANIFEST_FORMAT = 1


def publish(stage: Path, out: Path, settings: Mapping[str, Any] | None = None) -> list[Path]:
    """Move every file of `stage` (a folder inside `out`) into `out` as one set (module docstring),
    delete the old set's files the new one lacks, write manifest.json last; the new files' paths.
    settings: what the outputs were computed from (its digest goes into the manifest)."""
    stage, out = Path(stage), Path(out)
    recover(out)  # an earlier swap's journal first: its files are the "old set" of this one
    files = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    entries = {rel: _describe(stage / rel, sync=True) for rel in files}
    manifest = {"format": MANIFEST_FORMAT, "settings_sha256": settings_digest(settings), "files": entries}
    swap = out / SWAP_DIR
    shutil.rmtree(swap, ignore_errors=True)
    os.replace(stage, swap)
    journal = {"moves": files, "delete": _old_outputs(out, set(files)), "manifest": manifest}
    store.write_text_atomic(out / JOURNAL, json.dumps(journal, indent=1, sort_keys=True) + "\n")
    _finish(out, journal, check=False)
    return [out / rel for rel in files]


def recover(out: Path) -> bool:
    """Finish a swap that a kill interrupted (its journal is there); True if there was one. The caller
    holds --out's lock. A journal that cannot be read is dropped with its manifest (the next run
    rewrites every output); a leftover `.publish/` without journal (killed before step 2) is removed."""
    out = Path(out)
    path = out / JOURNAL
    if not path.is_file():
        shutil.rmtree(out / SWAP_DIR, ignore_errors=True)
        return False
    try:
        journal = json.loads(path.read_text(encoding="utf-8"))
        moves, delete, manifest = journal["moves"], journal["delete"], journal["manifest"]
        if not all(_safe(r) for r in [*moves, *delete, *manifest["files"]]):
            raise ValueError("a path outside --out")
    except (OSError, ValueError, KeyError, TypeError):
        (out / MANIFEST).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        shutil.rmtree(out / SWAP_DIR, ignore_errors=True)
        return True
    _finish(out, journal, check=True)
    return True


def _finish(out: Path, journal: dict, *, check: bool) -> None:
    """Steps 3-7 of the module docstring; all of them may be redone after a kill. check: verify
    every file against the manifest before writing it (after a kill: the files may be anything)."""
    swap = out / SWAP_DIR
    (out / MANIFEST).unlink(missing_ok=True)
    for rel in journal["moves"]:
        src, dest = swap / rel, out / rel
        if src.is_file():  # else it was moved before the kill
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dest)
    for rel in journal["delete"]:
        (out / rel).unlink(missing_ok=True)
    _sync_dirs(out, journal["moves"])
    manifest = journal["manifest"]
    if not check or not _disagreements(out, manifest["files"]):
        store.write_text_atomic(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    (out / JOURNAL).unlink(missing_ok=True)
    shutil.rmtree(swap, ignore_errors=True)


def read_manifest(out: Path) -> dict | None:
    """--out's manifest, or None when there is none or it cannot be read."""
    try:
        manifest = json.loads((Path(out) / MANIFEST).read_text(encoding="utf-8"))
        return manifest if isinstance(manifest.get("files"), dict) else None
    except (OSError, ValueError, AttributeError):
        return None


def verify(out: Path) -> list[str]:
    """What keeps --out's outputs from being one complete set: an unfinished swap, no manifest, or a
    listed file missing or with another size or content. [] = the manifest's set, complete."""
    out = Path(out)
    if (out / JOURNAL).exists():
        return [f"{JOURNAL}: a swap of the outputs was interrupted; rerun the command to finish it"]
    manifest = read_manifest(out)
    if manifest is None:
        return [f"{MANIFEST}: missing or unreadable"]
    return _disagreements(out, manifest["files"])


def settings_digest(settings: Mapping[str, Any] | None) -> str | None:
    """sha256 of `settings` as canonical JSON (None: none given)."""
    if settings is None:
        return None
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _disagreements(out: Path, files: Mapping[str, Mapping[str, Any]]) -> list[str]:
    bad = []
    for rel, want in sorted(files.items()):
        path = out / rel
        if not _safe(rel) or not path.is_file():
            bad.append(f"{rel}: missing")
        elif _describe(path) != {"size": want.get("size"), "sha256": want.get("sha256")}:
            bad.append(f"{rel}: differs from the manifest")
    return bad


def _describe(path: Path, sync: bool = False) -> dict[str, Any]:
    """{"size", "sha256"} of a file; sync: fsync it too (its data must be on disk before the rename
    that makes it part of the set)."""
    h = hashlib.sha256()
    with open(path, "rb+" if sync else "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
        if sync:
            os.fsync(f.fileno())
        return {"size": f.tell(), "sha256": h.hexdigest()}


def _old_outputs(out: Path, new: set[str]) -> list[str]:
    """Files of --out's current set that the new set lacks: the manifest's, and figures/*.png (an
    --out written before manifests existed)."""
    manifest = read_manifest(out) or {"files": {}}
    old = {r for r in manifest["files"] if _safe(r)}
    old |= {p.relative_to(out).as_posix() for p in (out / "figures").glob("*.png")}
    return sorted(r for r in old - new if (out / r).is_file())


def _safe(rel: Any) -> bool:
    """A relative path that stays inside --out (a journal or manifest is never trusted blindly)."""
    if not isinstance(rel, str) or not rel:
        return False
    p = PurePosixPath(rel)
    return not p.is_absolute() and ".." not in p.parts and p.parts[0] not in (SWAP_DIR, JOURNAL)


def _sync_dirs(out: Path, moves: list[str]) -> None:
    """fsync --out and every folder a file moved into: the renames are durable before the manifest."""
    for folder in sorted({out} | {(out / rel).parent for rel in moves}):
        try:
            fd = os.open(folder, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
