"""`seedkl cache list|clear|verify`: the converted-params cache that `seedkl run` and `seedkl convert` fill.

    seedkl cache list                          # every entry: model, revision, dtype, size on disk
    seedkl cache clear                         # remove every entry (and unfinished ones)
    seedkl cache clear --match=pythia-70m      # only entries whose model[@revision] contains this
    seedkl cache verify                        # check every entry against its checksums
    seedkl cache verify --drop                 # ... and remove the corrupt or unverified ones
    seedkl cache list --cache_dir=/scratch/seedkl

The cache lives in --cache_dir, else $SEEDKL_CACHE, else ~/.cache/seedkl (entries under models/).
`list` and `verify` only read: they name unfinished entries (.tmp-*) and leave them to `clear` (or to
the next store, which removes those whose writer died). `verify` exits 2 when an entry is corrupt or
unverified (written before checksums existed) and --drop was not given; with --drop it removes them
(each is converted again when next used) and exits 0. A cache that cannot be written: `clear` and
`verify --drop` are one error line, exit 2.
"""
from __future__ import annotations

from absl import flags

from seedkl_jax.errors import SeedKLError

_CACHE_DIR = flags.DEFINE_string("cache_dir", None, "Cache root (default $SEEDKL_CACHE or ~/.cache/seedkl).")
_MATCH = flags.DEFINE_string("match", None, "clear, verify: only entries whose model id (or model@revision) "
                             "contains this text; default: all.")
_DROP = flags.DEFINE_bool("drop", False, "verify: remove the entries that fail (they are converted again when used).")
ACTIONS = ("list", "clear", "verify")


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def main(argv: list[str]) -> int:
    from seedkl_jax.convert import cache

    if len(argv) != 2 or argv[1] not in ACTIONS:
        raise SeedKLError(f"give one action: {', '.join(ACTIONS[:-1])} or {ACTIONS[-1]} (got {argv[1:]}); "
                          "e.g. seedkl cache list")
    root = cache.cache_root(_CACHE_DIR.value)
    if root.exists() and not root.is_dir():
        raise SeedKLError(f"params cache {root}: a file, not a folder; point --cache_dir or $SEEDKL_CACHE at a folder")
    if argv[1] == "clear":
        n, freed = cache.clear(root, _MATCH.value)
        print(f"{root}: removed {_plural(n, 'entry', 'entries')}, {_human(freed)}")
        return 0
    rows = cache.entries(root)
    if argv[1] == "verify":
        return _verify(root, [r for r in rows if not _MATCH.value or _MATCH.value in cache.entry_ref(r)])
    if rows:
        width = max(len(str(r["model"])) for r in rows)
        print(f"{'model':<{width}}  {'revision':<12}  {'dtype':<9}  {'size':>10}")
        for r in rows:
            note = "" if r["checksums"] else "  (no checksums: converted again when used)"
            print(f"{r['model']:<{width}}  {str(r['revision'] or '-'):<12}  {r['dtype']:<9}  "
                  f"{_human(r['bytes']):>10}{note}")
    _unfinished_note(root)
    size = _human(sum(r["bytes"] for r in rows))
    print(f"{root}: {_plural(len(rows), 'entry', 'entries')}, {size}" if rows else f"{root}: no entries")
    return 0


def _unfinished_note(root) -> None:
    from seedkl_jax.convert import cache

    left = cache.unfinished(root)
    if left:
        names = ", ".join(p.name for p in left[:3]) + (" ..." if len(left) > 3 else "")
        print(f"{_plural(len(left), 'unfinished entry', 'unfinished entries')} (interrupted or in progress; "
              f"`seedkl cache clear` removes them): {names}")


def _verify(root, rows: list[dict]) -> int:
    """Check each entry (its files' crc32, its arrays' blake2b): one line per entry, then a summary."""
    from seedkl_jax.convert import cache

    bad = []
    for r in rows:
        problem = cache.check(r["path"])
        print(f"{'ok' if problem is None else 'BAD':<4} {cache.entry_ref(r)} {r['dtype']}  {r['path'].name}"
              + ("" if problem is None else f": {problem}"))
        if problem is not None:
            bad.append(r)
    _unfinished_note(root)
    if not bad:
        print(f"{root}: {_plural(len(rows), 'entry', 'entries')} verified, none corrupt")
        return 0
    if not _DROP.value:
        raise SeedKLError(f"params cache {root}: {_plural(len(bad), 'entry fails', 'entries fail')} verification "
                          "(listed above); `seedkl cache verify --drop` removes them "
                          "(each is converted again when used)")
    for r in bad:
        cache.drop(r["path"])
    kept = [r["path"].name for r in bad if r["path"].exists()]
    if kept:
        raise SeedKLError(f"params cache {root}: cannot remove {', '.join(kept[:3])} (read-only or not yours); "
                          "drop them where the cache is writable, or point --cache_dir elsewhere")
    print(f"{root}: dropped {_plural(len(bad), 'entry', 'entries')}; each is converted again when used")
    return 0
