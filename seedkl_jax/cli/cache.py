"""`seedkl cache list|clear`: the converted-params cache that `seedkl run` and `seedkl convert` fill.

    seedkl cache list                          # every entry: model, revision, dtype, size on disk
    seedkl cache clear                         # remove every entry (and unfinished ones)
    seedkl cache clear --match=pythia-70m      # only entries whose model[@revision] contains this
    seedkl cache list --cache_dir=/scratch/seedkl

The cache lives in --cache_dir, else $SEEDKL_CACHE, else ~/.cache/seedkl (entries under models/).
Both commands first remove unfinished entries (.tmp-*) whose writer died or that are over a day old.
"""
from __future__ import annotations

from absl import flags

from seedkl_jax.errors import SeedKLError

_CACHE_DIR = flags.DEFINE_string("cache_dir", None, "Cache root (default $SEEDKL_CACHE or ~/.cache/seedkl).")
_MATCH = flags.DEFINE_string("match", None, "clear: only entries whose model id (or model@revision) contains "
                             "this text; default: all.")
ACTIONS = ("list", "clear")


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} B"


def main(argv: list[str]) -> int:
    from seedkl_jax.convert import cache

    if len(argv) != 2 or argv[1] not in ACTIONS:
        raise SeedKLError(f"seedkl cache: give one action, list or clear (got {argv[1:]}); "
                          "e.g. seedkl cache list")
    root = cache.cache_root(_CACHE_DIR.value)
    if root.exists() and not root.is_dir():
        raise SeedKLError(f"params cache {root}: a file, not a folder; point --cache_dir or $SEEDKL_CACHE at a folder")
    swept = cache.sweep(root)
    if swept:
        print(f"removed {len(swept)} unfinished entr{'y' if len(swept) == 1 else 'ies'} of dead writers")
    if argv[1] == "clear":
        n, freed = cache.clear(root, _MATCH.value)
        print(f"{root}: removed {n} entr{'y' if n == 1 else 'ies'}, {_human(freed)}")
        return 0
    rows = cache.entries(root)
    if not rows:
        print(f"{root}: no entries")
        return 0
    width = max(len(str(r["model"])) for r in rows)
    print(f"{'model':<{width}}  {'revision':<12}  {'dtype':<9}  {'size':>10}")
    for r in rows:
        print(f"{r['model']:<{width}}  {str(r['revision'] or '-'):<12}  {r['dtype']:<9}  {_human(r['bytes']):>10}")
    print(f"{root}: {len(rows)} entr{'y' if len(rows) == 1 else 'ies'}, {_human(sum(r['bytes'] for r in rows))}")
    return 0
