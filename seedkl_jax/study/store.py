"""What the study keeps on disk in `--out`, always written atomically (tmp file in the same folder + os.replace).

Why atomic: a study over 100 groups runs for hours; a crash or kill must leave every file either complete
or absent, so a rerun can trust whatever it finds. Layout:

  .seedkl.lock                    held by the one run writing here (study/lock.py)
  study.json                      the settings the results depend on; a rerun with other settings is refused
  groups/<size>/step<step>.npz    one finished (size, step) group: compare() arrays + seeds (the first
                                  step's also kl_unigram_other, analysis/compat.py; per --metrics and
                                  --save_topk top1_agree, js [P,S,S], topk_ids, topk_prob [P,S,K])
  tokens.parquet, ... report.md   final outputs, rewritten from the group files at the end of every run
  manifest.json                   the final outputs that belong together (size, sha256), written last
  .staging-<pid>/                 the final outputs of the run with that pid, while they are written
                                  (a killed run's is removed by the next)
  .publish/, .publish.json        while the staged set replaces the old one: the swap and its journal;
                                  an interrupted swap is finished by the next writer (study/publish.py)

A full disk or another filesystem failure while writing is one SeedKLError line (seedkl_jax/disk.py);
the file being written keeps its previous version.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from seedkl_jax.disk import disk_errors
from seedkl_jax.errors import SeedKLError

SETTINGS_FILE = "study.json"
# study.json's layout: 2 = "results" nested as config.StudyConfig's tree (study/run.py: _settings);
# an --out written with another layout is refused while it holds finished groups (no silent mix).
SETTINGS_FORMAT = 2


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename, else it is removed."""
    path, tmp = Path(path), None
    try:
        with disk_errors(str(path), "nothing was written (a previous version of the file is intact)"):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp, mode = _create_plain(path.parent, f".{path.name}.")
            yield Path(tmp)
            with open(tmp, "rb+") as f:  # the data must be on disk before the rename makes it visible
                os.fsync(f.fileno())
            os.chmod(tmp, mode)  # a writer that replaced the tmp file (0600 tempfiles) gets it back
            os.replace(tmp, path)
    finally:
        if tmp and os.path.exists(tmp):
            os.remove(tmp)


def _create_plain(folder: Path, prefix: str) -> tuple[str, int]:
    """Create an empty, uniquely named file in `folder` as open() would, 0666 less the umask: the kernel
    applies the umask, so nobody has to read it (os.umask reads only by changing it, for the whole
    process). Returns its path and that mode. Not mkstemp: its files are 0600."""
    tmp = os.path.join(folder, f"{prefix}{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        return tmp, os.fstat(fd).st_mode & 0o777
    finally:
        os.close(fd)


def write_atomic(path: Path, writer: Callable[[Path], Any]) -> Path:
    """`writer(tmp_path)` writes the content; the result appears at `path` complete or not at all."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_text_atomic(path: Path, text: str) -> Path:
    return write_atomic(path, lambda t: Path(t).write_text(text, encoding="utf-8"))


def check_writable(out: Path) -> Path:
    """Create `out` and prove a file can be written there; SeedKLError otherwise (before any compute)."""
    out = Path(out).expanduser()
    existed = out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out, prefix=".write-test.")
        os.close(fd)
        os.remove(tmp)
    except OSError as e:
        if not existed:  # created just now and unusable: leave nothing behind
            with contextlib.suppress(OSError):
                out.rmdir()
        raise SeedKLError(f"--out={out}: not writable ({e.strerror or e}); choose a folder you can write to") from None
    return out.resolve()


def staging_dir(out: Path) -> Path:
    """This run's staging folder for the final outputs (per run: a killed run's cannot be mistaken)."""
    return Path(out) / f".staging-{os.getpid()}"


def new_staging(out: Path) -> Path:
    """An empty staging folder (with figures/) for this run; earlier runs' leftovers are removed
    (the caller holds --out's lock, so no other run is writing one)."""
    for old in Path(out).glob(".staging*"):
        shutil.rmtree(old, ignore_errors=True)
    stage = staging_dir(out)
    (stage / "figures").mkdir(parents=True)
    return stage


def group_path(out: Path, size: str, step: int) -> Path:
    return Path(out) / "groups" / str(size) / f"step{int(step)}.npz"


def save_group(out: Path, size: str, step: int, seeds: list[int], arrays: dict[str, np.ndarray]) -> Path:
    """Persist one group's compare() arrays (+ seeds) as groups/<size>/step<step>.npz, atomically."""
    def writer(tmp: Path):
        with open(tmp, "wb") as f:  # a file object: np.savez would otherwise append ".npz" to the tmp name
            named = any(isinstance(s, str) for s in seeds)  # named seeds (study/suite.py) are stored as text
            np.savez(f, seeds=np.asarray([str(s) for s in seeds]) if named else np.asarray(seeds, np.int64),
                     **{k: np.asarray(v) for k, v in arrays.items()})
    return write_atomic(group_path(out, size, step), writer)


def load_group(out: Path, size: str, step: int, seeds: list[int], n_positions: int,
               require: tuple[str, ...] = ()) -> dict[str, np.ndarray] | None:
    """The arrays of a finished group, or None if absent, not from these settings or without one of the
    `require`d arrays (e.g. a first-step group saved before `kl_unigram_other` existed): then it is recomputed."""
    path = group_path(out, size, step)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception:  # unreadable: cannot come from our atomic writes, but never trust it
        return None
    got_seeds = arrays.pop("seeds", None)
    if got_seeds is None or list(got_seeds) != list(seeds) or arrays.get("kl", np.empty((0,))).shape[:1] != (n_positions,):
        return None
    if any(k not in arrays for k in require):
        return None
    return arrays


def read_settings(out: Path) -> dict[str, Any] | None:
    path = Path(out) / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise SeedKLError(f"--out={out}: {SETTINGS_FILE} is unreadable; use --overwrite or another --out") from None


def settings_difference(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable 'key: old -> new' for every differing (nested) setting."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{key}.{d}" for d in settings_difference(a, b)]
        elif a != b:
            diffs.append(f"{key}: {_short(a)} -> {_short(b)}")
    return diffs


def _short(v: Any) -> str:
    s = json.dumps(v)
    return s if len(s) <= 80 else s[:77] + "..."


def claim(out: Path, settings: dict[str, Any], overwrite: bool, write: bool = True,
          groups: list[tuple[str, int]] | None = None) -> None:
    """Bind `out` to `settings`: refuse a rerun whose `settings["results"]` differ (while finished groups
    exist) unless `overwrite`.

    write=False only checks (called before slow work); write=True also records the settings and, with
    `overwrite`, deletes the finished groups (only `groups` when given: a multi-host shard). Other keys
    (annotation choices) may change between runs: the final files are always rebuilt from the groups.
    """
    old = read_settings(out)
    finished = any((Path(out) / "groups").rglob("*.npz"))  # no finished group: nothing to protect
    if (old is not None and finished and not overwrite and "format" in settings
            and old.get("format") != settings["format"]):
        raise SeedKLError(f"--out={out}: its {SETTINGS_FILE} was written by another seedkl version (settings "
                          f"format {old.get('format', 1)}, this one writes {settings['format']}), so its groups "
                          "cannot be matched to these settings; use --overwrite to recompute in it, or another --out")
    if old is not None and old.get("results") != settings.get("results") and finished and not overwrite:
        diff = settings_difference(old.get("results") or {}, settings.get("results") or {})
        raise SeedKLError(f"--out={out}: holds a study with other settings ({'; '.join(diff)}); "
                          "rerun with the same settings to resume, or use --overwrite or another --out")
    if not write:
        return
    if overwrite:
        clear_groups(out, groups)
    write_text_atomic(Path(out) / SETTINGS_FILE, json.dumps(settings, indent=2, sort_keys=True) + "\n")


def clear_groups(out: Path, groups: list[tuple[str, int]] | None = None) -> None:
    """Delete finished group files: all of them, or those of `groups` [(size, step)]."""
    if groups is None:
        files = sorted((Path(out) / "groups").rglob("*.npz"))
    else:
        files = [group_path(out, size, step) for size, step in groups]
    for f in files:
        if f.is_file():
            f.unlink()
