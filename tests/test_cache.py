"""The caches verify what they serve: params-cache checksums (a flipped bit is caught, the entry dropped and
reconverted, the numbers those of a clean run), unverified (pre-checksum) entries, `seedkl cache verify`,
`seedkl cache list` deleting nothing, a read-only cache, the XLA compile cache's seals, the PoS cache's
checksum. Commands and compile-cache runs go in subprocesses (fresh JAX config, real exit codes)."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest
from test_study import _cfg, _flagfile, lab  # noqa: F401  (lab: the module fixture of a tiny suite)

from seedkl_jax.cachedir import CacheWarning
from seedkl_jax.convert import cache, checksums
from seedkl_jax.convert.loader import load

ROOT = Path(__file__).resolve().parents[1]
CLI = "import sys\nfrom seedkl_jax.cli import main\nsys.exit(main(['seedkl', *sys.argv[1:]]))"


def _py(code: str, *args: str, env: dict | None = None, prefix: tuple = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def seedkl(*args: str, **kw) -> subprocess.CompletedProcess:
    return _py(CLI, *args, **kw)


def _same(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _data_file(entry: Path) -> Path:
    """The entry's largest params file (an ocdbt data file holding the arrays)."""
    return max((p for p in (entry / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _flip(path: Path, at: int, bit: int = 0) -> None:
    b = bytearray(path.read_bytes())
    b[at] ^= 1 << bit
    path.write_bytes(bytes(b))


def _finite_silent_flip(entry: Path, clean) -> None:
    """Flip one bit of the data file at a place where orbax still restores finite, different weights (the
    issue's case: no error, no NaN), so that only a checksum can tell. Leaves that flip in place."""
    f = _data_file(entry)
    original = f.read_bytes()
    for at in range(len(original) // 3, len(original), max(1, len(original) // 97)):
        _flip(f, at, 5)
        try:
            got = cache._checkpointer().restore(entry / "params")
            if all(np.isfinite(x).all() for x in jax.tree.leaves(got)) and not _same(got, clean):
                return
        except Exception:  # noqa: BLE001 - that flip broke the decode; try another place
            pass
        f.write_bytes(original)
    pytest.fail("no single-bit flip restored finite, different weights")


# ---------------------------------------------------------------- params cache: checksums


def test_a_flipped_bit_is_caught_by_the_file_check_and_the_entry_reconverted(hf_checkpoint, tmp_path):
    ckpt, root = hf_checkpoint(seed=4), tmp_path / "c"
    clean = load(str(ckpt), cache_dir=root)
    entry = Path(clean.cache_entry)
    _finite_silent_flip(entry, clean.params)
    assert "crc32 differs" in cache.check(entry)
    with pytest.warns(CacheWarning, match=rf"params cache entry {entry.name} is corrupt \(params/.* has changed "
                                          r"\(crc32 differs\)\): dropped, converting its checkpoint again"):
        again = load(str(ckpt), cache_dir=root)
    assert again.source == "convert" and _same(again.params, clean.params)
    ids = np.arange(24).reshape(2, 12)
    np.testing.assert_array_equal(again.logits(ids), clean.logits(ids))
    assert cache.check(entry) is None and load(str(ckpt), cache_dir=root).source == "cache"


def test_a_truncated_entry_is_one_warning_line_and_no_traceback(hf_checkpoint, tmp_path):
    """Was: a stray "Event loop is closed" traceback from tensorstore's threads after orbax failed on the
    truncated file. Now the file check stops it before orbax reads anything."""
    ckpt, root = hf_checkpoint(seed=4), tmp_path / "c"
    entry = Path(load(str(ckpt), cache_dir=root).cache_entry)
    f = _data_file(entry)
    os.truncate(f, f.stat().st_size // 2)
    r = seedkl("convert", f"--model={ckpt}", f"--cache_dir={root}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "Event loop is closed" not in r.stderr, r.stderr
    warned = [ln for ln in r.stderr.splitlines() if "warning" in ln]
    assert warned == [f"seedkl: warning: params cache entry {entry.name} is corrupt "
                      f"({f.relative_to(entry).as_posix()} has changed (size differs)): dropped, converting its "
                      "checkpoint again"], r.stderr
    assert "converted" in r.stdout and cache.check(entry) is None


def test_the_array_check_catches_what_the_file_check_would_miss(hf_checkpoint, tmp_path, monkeypatch):
    """Whatever reaches the restored arrays (here: the file check switched off) fails their blake2b."""
    ckpt, root = hf_checkpoint(seed=4), tmp_path / "c"
    clean = load(str(ckpt), cache_dir=root)
    entry = Path(clean.cache_entry)
    _finite_silent_flip(entry, clean.params)
    monkeypatch.setattr(checksums, "files_problem", lambda *a: None)
    assert "differs from its checksum" in cache.check(entry)
    with pytest.warns(CacheWarning, match=r"is corrupt \(array .* differs from its checksum\)"):
        again = load(str(ckpt), cache_dir=root)
    assert again.source == "convert" and _same(again.params, clean.params)


def test_digests_cover_dtype_and_shape():
    a = np.arange(6, dtype=np.float32)
    assert checksums.array_digest(a) != checksums.array_digest(a.reshape(2, 3))
    assert checksums.array_digest(a) != checksums.array_digest(a.view(np.int32))
    assert checksums.array_digest(a) == checksums.array_digest(a.copy())


def test_entries_without_checksums_are_unverified_reconverted_and_said_once(hf_checkpoint, tmp_path):
    root = tmp_path / "c"
    ckpts = [hf_checkpoint(seed=4), hf_checkpoint(seed=5)]
    for c in ckpts:
        (Path(load(str(c), cache_dir=root).cache_entry) / checksums.MANIFEST).unlink()  # as an older seedkl wrote it
    code = ("import sys; from seedkl_jax.convert.loader import load\n"
            "print([load(c, cache_dir=sys.argv[1]).source for c in sys.argv[2:]])")
    r = _py(code, str(root), *map(str, ckpts))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "['convert', 'convert']"
    assert r.stderr.count("unverified") == 1, r.stderr  # once, not per entry
    assert all(row["checksums"] for row in cache.entries(root)) and len(cache.entries(root)) == 2


# ---------------------------------------------------------------- a study over a corrupted cache


def _group_arrays(out: Path) -> dict:
    files = sorted((out / "groups").rglob("*.npz"))
    assert files
    return {f"{f.parent.name}/{f.name}/{k}": v for f in files for k, v in np.load(f).items()}


def test_a_run_over_a_corrupted_cache_gives_a_clean_runs_numbers(lab, tmp_path, monkeypatch):  # noqa: F811
    one = dataclasses.replace(lab["suite"], sizes=(lab["suite"].sizes[0],), steps=(lab["suite"].steps[0],))
    root = tmp_path / "cache"
    from seedkl_jax.study.run import run_study

    run_study(_cfg(lab, tmp_path / "clean", suite=one, cache_dir=str(root)), progress=False)
    clean = _group_arrays(tmp_path / "clean")
    entries = [r["path"] for r in cache.entries(root)]
    first = load(one.checkpoint(*one.groups()[0], one.seeds[0])[0], cache_dir=root)
    _finite_silent_flip(Path(first.cache_entry), first.params)
    with pytest.warns(CacheWarning, match="is corrupt"):
        run_study(_cfg(lab, tmp_path / "again", suite=one, cache_dir=str(root)), progress=False)
    got = _group_arrays(tmp_path / "again")
    assert got.keys() == clean.keys() and all(np.array_equal(got[k], clean[k]) for k in clean)
    assert [r["path"] for r in cache.entries(root)] == entries and all(cache.check(e) is None for e in entries)

    # NaN weights served by the cache (however they got there) are reconverted, not blamed on the checkpoint
    real, served = cache.restore, []

    def nan_once(entry):
        hit = real(entry)
        if hit is not None and entry == entries[0]:
            served.append(entry)
            params, config = hit
            params = jax.tree.map(lambda x: x, params)
            jax.tree.leaves(params)[0][...] = np.nan
            monkeypatch.setattr(cache, "restore", real)
            return params, config
        return hit

    monkeypatch.setattr(cache, "restore", nan_once)
    run_study(_cfg(lab, tmp_path / "nan", suite=one, cache_dir=str(root)), progress=False)
    got = _group_arrays(tmp_path / "nan")
    assert served == [entries[0]] and all(np.array_equal(got[k], clean[k]) for k in clean)


# ---------------------------------------------------------------- seedkl cache verify / list


def test_cache_verify_names_the_corrupt_entry_and_drop_removes_it(hf_checkpoint, tmp_path):
    root = tmp_path / "c"
    good = load(str(hf_checkpoint(seed=4)), cache_dir=root)
    bad = load(str(hf_checkpoint(seed=5)), cache_dir=root)
    _flip(_data_file(Path(bad.cache_entry)), 100)
    r = seedkl("cache", "verify", f"--cache_dir={root}")
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert any(ln.startswith("ok ") and Path(good.cache_entry).name in ln for ln in lines), r.stdout
    assert any(ln.startswith("BAD ") and Path(bad.cache_entry).name in ln and "crc32 differs" in ln for ln in lines)
    assert r.stderr.strip().splitlines() == [f"seedkl cache: error: params cache {root}: 1 entry fails verification "
                                             "(listed above); `seedkl cache verify --drop` removes them (each is "
                                             "converted again when used)"]
    d = seedkl("cache", "verify", "--drop", f"--cache_dir={root}")
    assert d.returncode == 0 and "dropped 1 entry" in d.stdout, d.stdout + d.stderr
    assert [r["path"] for r in cache.entries(root)] == [Path(good.cache_entry)]
    again = seedkl("cache", "verify", f"--cache_dir={root}")
    assert again.returncode == 0 and "1 entry verified, none corrupt" in again.stdout


def test_cache_list_deletes_nothing_and_names_unfinished_entries(hf_checkpoint, tmp_path):
    root = tmp_path / "c"
    load(str(hf_checkpoint(seed=4)), cache_dir=root)
    dead = root / "models" / ".tmp-x-0000"
    (dead / "params").mkdir(parents=True)
    (dead / cache.WRITER).write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    os.utime(dead, (0, 0))  # older than a day: a store would sweep it
    r = seedkl("cache", "list", f"--cache_dir={root}")
    assert r.returncode == 0 and dead.exists(), r.stderr
    assert "1 unfinished entry (interrupted or in progress; `seedkl cache clear` removes them): .tmp-x-0000" in r.stdout
    assert r.stdout.splitlines()[-1].startswith(f"{root}: 1 entry")


def test_a_bad_action_names_every_action():
    r = seedkl("cache", "purge")
    assert r.returncode == 2
    assert r.stderr.strip() == ("seedkl cache: error: give one action: list, clear or verify (got ['purge']); "
                                "e.g. seedkl cache list")


# ---------------------------------------------------------------- a read-only cache


def _read_only(folder: Path) -> tuple:
    """A command prefix under which `folder` is read-only for the process: chmod suffices for a normal
    user; root ignores modes, so there a private read-only bind mount (unshare) is used, else skip."""
    if os.geteuid() != 0:
        for p in [folder, *folder.rglob("*")]:
            if p.is_dir():
                p.chmod(0o555)
        return ()
    if not shutil.which("unshare"):
        pytest.skip("running as root (modes do not stop writes) and no `unshare` for a read-only mount")
    mount = f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && exec \"$0\" \"$@\""
    probe = subprocess.run(["unshare", "-m", "sh", "-c", mount, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"running as root and no read-only bind mount possible here: {probe.stderr.strip()[:200]}")
    return ("unshare", "-m", "sh", "-c", mount)


def test_a_read_only_cache_runs_without_caching_with_one_warning_line(hf_checkpoint, tmp_path):
    root = tmp_path / "ro"
    root.mkdir()
    prefix = _read_only(root)
    ckpt = hf_checkpoint(seed=4)
    code = ("import sys\nfrom seedkl_jax.cli import quiet_process\nquiet_process()\n"
            "from seedkl_jax.kernels.compare import use_compilation_cache\nfrom seedkl_jax.convert.loader import load\n"
            "print(use_compilation_cache(sys.argv[1]))\n"
            "m = load(sys.argv[2], cache_dir=sys.argv[1]); print(m.source, m.cache_entry)\n"
            "print(load(sys.argv[2], cache_dir=sys.argv[1]).source)\n")
    r = _py(code, str(root), str(ckpt), prefix=prefix)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["None", "convert", "None", "convert"]
    warned = [ln for ln in r.stderr.splitlines() if "warning" in ln.lower() or "Traceback" in ln]
    assert warned == [f"seedkl: warning: cache {root} is not writable (Read-only file system): running without "
                      "caching (converted params, compiled programs and PoS tags are recomputed; point --cache_dir "
                      "or $SEEDKL_CACHE at a writable folder to keep them)"] or "Permission denied" in warned[0]
    assert len(warned) == 1 and list(root.iterdir()) == []

    c = _py(CLI, "cache", "clear", f"--cache_dir={root}", prefix=prefix)
    assert c.returncode == 0 and "removed 0 entries" in c.stdout  # nothing to remove: fine


def test_seedkl_run_on_a_read_only_empty_cache_exits_0_with_one_warning_line(lab, tmp_path):  # noqa: F811
    """The issue's case: SEEDKL_CACHE on a read-only mount, empty: was exit 1 with a 29-line traceback."""
    root = tmp_path / "ro"
    root.mkdir()
    prefix = _read_only(root)
    suite = lab["suite"]
    flags = _flagfile(lab, tmp_path / "out").read_text().replace(f"--cache_dir={lab['cache']}", f"--cache_dir={root}")
    flags = flags.replace(f"--sizes={','.join(suite.sizes)}", f"--sizes={suite.sizes[0]}")
    flags = flags.replace(f"--steps={','.join(map(str, suite.steps))}", f"--steps={suite.steps[0]}")
    (tmp_path / "ro.flags").write_text(flags)
    r = _py(CLI, "run", f"--flagfile={tmp_path / 'ro.flags'}", prefix=prefix)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert [ln for ln in r.stderr.splitlines() if "warning" in ln.lower()] == [
        f"seedkl: warning: cache {root} is not writable ({'Read-only file system' if prefix else 'Permission denied'}"
        "): running without caching (converted params, compiled programs and PoS tags are recomputed; point "
        "--cache_dir or $SEEDKL_CACHE at a writable folder to keep them)"]
    assert list(root.iterdir()) == [] and list((tmp_path / "out" / "groups").rglob("*.npz"))


def test_clear_on_a_read_only_cache_is_one_line_exit_2(hf_checkpoint, tmp_path):
    root = tmp_path / "ro"
    load(str(hf_checkpoint(seed=4)), cache_dir=root)
    prefix = _read_only(root / "models")
    r = _py(CLI, "cache", "clear", f"--cache_dir={root}", prefix=prefix)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines() == [
        f"seedkl cache: error: params cache {root}: cannot remove entries "
        f"({'Read-only file system' if prefix else 'Permission denied'}); the cache is read-only or not yours: "
        "clear it where it is writable, or point --cache_dir elsewhere"]
    assert len(cache.entries(root)) == 1


# ---------------------------------------------------------------- the XLA compile cache

XLA = ("import sys, json\nimport jax, jax.numpy as jnp\n"
       "from seedkl_jax.kernels.compare import use_compilation_cache\n"
       "print(use_compilation_cache(sys.argv[1]))\n"
       "f = jax.jit(lambda v: jnp.sin(v) * 3.0 + jnp.cos(v) ** 2)\n"
       "print(json.dumps(f(jnp.arange(8, dtype=jnp.float32)).tolist()))\n")


def test_a_corrupt_or_foreign_compile_cache_entry_is_never_handed_to_jax(tmp_path):
    env = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PLATFORMS": "cpu"}
    first = _py(XLA, str(tmp_path), env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    xla = tmp_path / "xla"
    entries = sorted(xla.glob("*-cache"))
    assert entries and all((xla / (e.name + ".sum")).is_file() for e in entries)  # sealed at exit
    expected = first.stdout.splitlines()[1]
    for e in entries:
        _flip(e, len(e.read_bytes()) // 2)
    foreign = xla / "jit_other-0123abcd-cache"
    foreign.write_bytes(b"not ours")
    again = _py(XLA, str(tmp_path), env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.splitlines()[1] == expected
    assert f"compile cache {xla}: {len(entries)} corrupt entr" in again.stderr
    assert "Error reading persistent compilation cache" not in again.stderr  # JAX never saw them
    assert not foreign.exists()  # unsealed: dropped silently
    assert all((xla / (e.name + ".sum")).is_file() for e in sorted(xla.glob("*-cache")))  # recompiled, resealed
    quiet = _py(XLA, str(tmp_path), env=env)
    assert quiet.returncode == 0 and "corrupt" not in quiet.stderr and quiet.stdout.splitlines()[1] == expected


# ---------------------------------------------------------------- the PoS (stanza) cache


def test_pos_cache_checksum_and_unwritable_cache(tmp_path, monkeypatch):
    from seedkl_jax.data import pos

    path = tmp_path / "stanza" / "k.json"
    words = [(0, 3, "DET", "DT"), (4, 7, "NOUN", "NN")]
    pos._write_tags(tmp_path, path, {"words": words})
    assert pos._read_tags(path) == words
    path.write_text(path.read_text().replace("[4, 7", "[4, 8"))  # parses, but a wrong span
    assert pos._read_tags(path) is None

    def read_only(*a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(pos.tempfile, "mkstemp", read_only)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        pos._write_tags(tmp_path, tmp_path / "stanza" / "other.json", {"words": words})
    assert [str(x.message).split(":")[0] for x in w] == [f"cache {tmp_path} is not writable (Read-only file system)"]


def test_what_plain_jax_does_with_a_flipped_entry(tmp_path):
    """The finding behind kernels/xla_cache.py: JAX itself catches a flipped bit only through its codec's
    checksum (zlib's Adler-32; a zstd frame has none), then warns in two lines and recompiles."""
    from jax._src import compilation_cache as cc

    if getattr(cc, "zstd", None) is not None or getattr(cc, "zstandard", None) is not None:
        pytest.skip("JAX compresses its cache with zstd here: no checksum of its own to demonstrate")
    env = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PLATFORMS": "cpu"}
    plain = XLA.replace("print(use_compilation_cache(sys.argv[1]))",
                        "jax.config.update('jax_compilation_cache_dir', sys.argv[1] + '/xla'); print(0)")
    first = _py(plain, str(tmp_path), env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    entries = sorted((tmp_path / "xla").glob("*-cache"))
    assert entries and not list((tmp_path / "xla").glob("*.sum"))  # plain JAX: no seals
    for e in entries:
        _flip(e, len(e.read_bytes()) // 2)
    again = _py(plain, str(tmp_path), env=env)
    assert again.returncode == 0 and again.stdout == first.stdout
    assert "Error reading persistent compilation cache entry" in again.stderr and "incorrect data check" in again.stderr
