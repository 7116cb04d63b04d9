"""Per-pair KL tables computed anywhere -> the study's groups and token meta (`seedkl analyze`).

Why: the analysis and report must run on KLs that did not come from this engine (another engine, the
paper's released arrays after a conversion), with nothing else needed. Input schema (docs/analyze.md):

  PAIRS (required)  size (text), step (integer), seed_a, seed_b (integer or text, both alike),
                    position (integer), kl (float, nats, KL(p_a ‖ p_b)); every ordered pair a ≠ b of
                    each (size, step) at every position of META, once. Every (size, step) compares
                    the same seeds. Optional, beside kl (as `seedkl run --save_pair_positions` writes
                    them): top1_agree (0/1 integers or booleans: the two seeds' argmax agree) and js
                    (float, nats); a (size, step) has each for all its rows or none (nulls = none).
  META (required)   position (integer), token_id (integer), doc_id (integer or text); optional: size
                    (text; else the rows are shared by every size), count (corpus count of the target),
                    xpos (Penn tag), upos, token_str, context_xpos / context_upos (else the tag of
                    position p-1 of the same document), final_surprisal (float).
  SEEDS (optional)  size, step, seed, position, with any of surprisal, entropy, kl_uniform, kl_unigram
                    (floats); for each metric, a (size, step) has it for every compared seed and
                    position or not at all (rows with a null metric count as absent). Seeds not among
                    the compared ones are allowed: `surprisal_seed` reads its surprisal at each size's
                    last step for the final-surprisal bins (analysis/token_meta.py).

A malformed table is one SeedKLError naming the file and the column (a missing required column, a
wrong dtype, nulls, a missing or repeated ordered pair, positions not in META, ...). What an optional
column enables is in analysis/pipeline.input_notes. `analyze_frames` runs the analysis (no files);
study/analyze.py writes every output.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl

from seedkl_jax.analysis.aggregate import GroupResult, size_order
from seedkl_jax.errors import SeedKLError

PAIRS_SCHEMA = {"size": "text", "step": "integer", "seed_a": "seed", "seed_b": "seed", "position": "integer",
                "kl": "float"}
PAIRS_OPTIONAL = {"top1_agree": "flag", "js": "float"}  # the agreement metrics (analysis/aggregate.AGREEMENT)
META_SCHEMA = {"position": "integer", "token_id": "integer", "doc_id": "id"}
META_OPTIONAL = {"size": "text", "count": "number", "xpos": "text", "upos": "text", "token_str": "text",
                 "context_xpos": "text", "context_upos": "text", "final_surprisal": "float"}
SEEDS_SCHEMA = {"size": "text", "step": "integer", "seed": "seed", "position": "integer"}
SEED_METRICS = ("surprisal", "entropy", "kl_uniform", "kl_unigram")
_KINDS = {
    "text": (lambda d: d in (pl.Utf8, pl.String) or isinstance(d, (pl.Categorical, pl.Enum)), "text (e.g. '70m')"),
    "integer": (lambda d: d.is_integer(), "integers"),
    "float": (lambda d: d.is_float(), "floats"),
    "number": (lambda d: d.is_numeric(), "numbers"),
    "seed": (lambda d: d.is_integer() or d in (pl.Utf8, pl.String), "integers or text"),
    "id": (lambda d: d.is_integer() or d in (pl.Utf8, pl.String), "integers or text"),
    "flag": (lambda d: d.is_integer() or d == pl.Boolean, "0/1 integers or booleans"),
}


@dataclasses.dataclass
class Tables:
    """The validated inputs: groups (sizes in order, steps ascending), base META, held-out surprisal."""
    groups: list[GroupResult]
    meta: pl.DataFrame
    sizes: list[str]
    held_out: dict[str, np.ndarray] | None


# ---------------------------------------------------------------------------------------------- reading
def read(source, flag: str) -> tuple[pl.DataFrame, str]:
    """(frame, label for errors) of a parquet path or a polars/pandas frame given directly."""
    if isinstance(source, pl.DataFrame):
        return source, flag.lstrip("-")
    if not isinstance(source, (str, Path)):
        try:
            return pl.from_pandas(source), flag.lstrip("-")
        except Exception:
            raise SeedKLError(f"{flag}: give a parquet path or a polars DataFrame, got {type(source).__name__}") from None
    path = Path(source).expanduser()
    label = f"{flag}={source}"
    if not path.is_file():
        raise SeedKLError(f"{label}: no such file; give a parquet file (schema in docs/analyze.md)")
    try:
        return pl.read_parquet(path), label
    except Exception as e:
        raise SeedKLError(f"{label}: not a readable parquet file ({type(e).__name__}: {e}); write it with "
                          "polars' write_parquet or pandas' to_parquet") from None


def check_columns(df: pl.DataFrame, label: str, required: dict, optional: dict | None = None) -> None:
    """Required columns present, every known column of its kind, no nulls in required ones."""
    for col in required:
        if col not in df.columns:
            raise SeedKLError(f"{label}: no column {col!r}; needs {', '.join(required)} (docs/analyze.md)")
    for col, kind in {**required, **(optional or {})}.items():
        if col not in df.columns:
            continue
        ok, what = _KINDS[kind]
        if df[col].dtype != pl.Null and not ok(df[col].dtype):
            raise SeedKLError(f"{label}: column {col!r} has dtype {df[col].dtype}; it must hold {what}")
    for col in required:
        n = df[col].null_count()
        if n:
            raise SeedKLError(f"{label}: column {col!r} has {n} null value(s); every row needs one")
    for col in (c for c, k in {**required, **(optional or {})}.items() if k == "float" and c in df.columns):
        bad = df[col].drop_nulls().is_nan().sum() + df[col].drop_nulls().is_infinite().sum()
        if bad:
            raise SeedKLError(f"{label}: column {col!r} has {bad} NaN/inf value(s); give finite values")


def _as_text(df: pl.DataFrame, cols) -> pl.DataFrame:
    return df.with_columns([pl.col(c).cast(pl.Utf8) for c in cols if c in df.columns
                            and df[c].dtype not in (pl.Utf8, pl.String) and not df[c].dtype.is_integer()])


# ---------------------------------------------------------------------------------------------- META
def _meta_positions(meta: pl.DataFrame, label: str, sizes: list[str]) -> dict[str, np.ndarray]:
    """Sorted positions of each size (META's `size` rows, or all rows); repeated positions refused."""
    out = {}
    for size in sizes:
        m = meta.filter(pl.col("size") == size) if "size" in meta.columns else meta
        if not m.height:
            raise SeedKLError(f"{label}: column 'size' has no rows for size {size!r} (PAIRS has it); give its "
                              "rows or drop the column to share one META by every size")
        pos = np.sort(m["position"].to_numpy())
        dup = pos[1:][pos[1:] == pos[:-1]]
        if dup.size:
            raise SeedKLError(f"{label}: column 'position' repeats position {int(dup[0])}"
                              + (f" for size {size!r}" if "size" in meta.columns else "") + "; one row per position")
        out[size] = pos
    return out


# ---------------------------------------------------------------------------------------------- PAIRS
def _seed_order(pairs: pl.DataFrame, label: str) -> list:
    if pairs["seed_a"].dtype.is_integer() != pairs["seed_b"].dtype.is_integer():
        raise SeedKLError(f"{label}: columns 'seed_a' ({pairs['seed_a'].dtype}) and 'seed_b' "
                          f"({pairs['seed_b'].dtype}) differ; both integers or both text")
    both = pl.concat([pairs["seed_a"], pairs["seed_b"].rename("seed_a")]).unique(maintain_order=True)
    return both.to_list()


def _index(col: pl.Series, values: list) -> np.ndarray:
    """Index of every entry of `col` in `values`, -1 where absent."""
    mapping = {v: i for i, v in enumerate(values)}
    return col.replace_strict(mapping, default=-1, return_dtype=pl.Int64).to_numpy()


def _where(part: pl.DataFrame, i: int) -> str:
    r = part.row(i, named=True)
    return f"seed_a={r['seed_a']!r}, seed_b={r['seed_b']!r}, position={r['position']}"


def _group_kl(part: pl.DataFrame, label: str, size: str, step: int, seeds: list, positions: np.ndarray
              ) -> dict[str, np.ndarray]:
    """{"kl": [P,S,S]} of one (size, step) from its rows, every ordered pair at every position exactly once
    (+ top1_agree / js [P,S,S] when PAIRS has them)."""
    P, S = len(positions), len(seeds)
    at = f"{label}: size {size!r} step {step}"
    p = np.searchsorted(positions, part["position"].to_numpy())
    p_ok = (p < P) & (positions[np.minimum(p, P - 1)] == part["position"].to_numpy())
    if not p_ok.all():
        i = int(np.flatnonzero(~p_ok)[0])
        raise SeedKLError(f"{at}: column 'position' has {part['position'][i]}, which META does not have; "
                          "PAIRS and META must cover the same positions")
    a, b = _index(part["seed_a"], seeds), _index(part["seed_b"], seeds)
    same = np.flatnonzero(a == b)
    if same.size:
        raise SeedKLError(f"{at}: columns 'seed_a'/'seed_b' pair a seed with itself ({_where(part, int(same[0]))}); "
                          "give ordered pairs a ≠ b only")
    flat = (p * S + a) * S + b
    count = np.bincount(flat, minlength=P * S * S).reshape(P, S, S)
    if (count > 1).any():
        i = int(np.flatnonzero(count.reshape(-1)[flat] > 1)[0])
        raise SeedKLError(f"{at}: duplicate rows for {_where(part, i)}; give each ordered pair once per position")
    missing = (count == 0) & ~np.eye(S, dtype=bool)
    if missing.any():
        pi, ai, bi = (int(x[0]) for x in np.nonzero(missing))
        raise SeedKLError(f"{at}: {int(missing.sum())} (ordered pair, position) rows missing, e.g. seed_a="
                          f"{seeds[ai]!r}, seed_b={seeds[bi]!r}, position={int(positions[pi])}; column 'kl' needs "
                          f"every ordered pair a ≠ b of the {S} seeds at all {P} positions")
    vals = part["kl"].to_numpy()
    kl = np.zeros((P, S, S), np.float32 if vals.dtype == np.float32 else np.float64)
    kl.reshape(-1)[flat] = vals
    return {"kl": kl, **_group_agreement(part, at, flat, P, S)}


def _group_agreement(part: pl.DataFrame, at: str, flat: np.ndarray, P: int, S: int) -> dict[str, np.ndarray]:
    """PAIRS_OPTIONAL's [P,S,S] arrays of one (size, step), as the kernel gives them (float32; top1_agree's
    diagonal 1, js's 0): each column all present in the group, or absent (all null)."""
    out = {}
    for col in (c for c in PAIRS_OPTIONAL if c in part.columns):
        n_null = part[col].null_count()
        if n_null == part.height:
            continue
        if n_null:
            raise SeedKLError(f"{at}: column {col!r} has {n_null} null value(s) among {part.height} rows; give it "
                              "for every row of the (size, step) or for none")
        vals = part[col].cast(pl.Float32).to_numpy()
        if col == "top1_agree" and not np.isin(vals, (0.0, 1.0)).all():
            raise SeedKLError(f"{at}: column 'top1_agree' holds values other than 0/1; give 1 where the two "
                              "seeds' most likely next tokens agree, else 0")
        arr = np.full((P, S, S), 0.0, np.float32)
        arr[:, np.arange(S), np.arange(S)] = 1.0 if col == "top1_agree" else 0.0
        arr.reshape(-1)[flat] = vals
        out[col] = arr
    return out


# ---------------------------------------------------------------------------------------------- SEEDS
def _seed_arrays(seeds_df: pl.DataFrame | None, label: str, size: str, step: int, seeds: list,
                 positions: np.ndarray) -> dict[str, np.ndarray]:
    """[P,S] per-seed metrics of one group that SEEDS has completely; a partial metric is an error."""
    if seeds_df is None:
        return {}
    part = seeds_df.filter((pl.col("size") == size) & (pl.col("step") == step))
    out = {}
    P, S = len(positions), len(seeds)
    for metric in (m for m in SEED_METRICS if m in seeds_df.columns):
        rows = part.filter(pl.col(metric).is_not_null())
        s = _index(rows["seed"], seeds)
        rows, s = rows.filter(pl.Series(s >= 0)), s[s >= 0]
        if not rows.height:
            continue
        p = np.searchsorted(positions, rows["position"].to_numpy())
        ok = (p < P) & (positions[np.minimum(p, P - 1)] == rows["position"].to_numpy())
        if not ok.all():
            raise SeedKLError(f"{label}: size {size!r} step {step}: column 'position' has "
                              f"{rows['position'][int(np.flatnonzero(~ok)[0])]}, which META does not have")
        count = np.bincount(p * S + s, minlength=P * S)
        if (count != 1).any():
            what = "duplicate" if (count > 1).any() else "missing"
            raise SeedKLError(f"{label}: size {size!r} step {step}: column {metric!r} has {what} rows "
                              f"({int((count == 0).sum())} of {P * S} (seed, position) missing); give it for every "
                              "compared seed and position of the group, or for none")
        arr = np.zeros(P * S, np.float64)
        arr[p * S + s] = rows[metric].cast(pl.Float64).to_numpy()
        out[metric] = arr.reshape(P, S)
    return out


def _held_out(seeds_df: pl.DataFrame | None, label: str, seed, compared: list, last: dict[str, int],
              positions: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """[P] surprisal of the held-out seed at each size's last step."""
    if seed is None:
        return None
    if seed in compared or str(seed) in map(str, compared):
        raise SeedKLError(f"--surprisal_seed={seed}: it is one of the compared seeds; give a seed whose KL is not "
                          "measured (e.g. PolyPythia's 2 when comparing 1,3,5,7,9)")
    if seeds_df is None or "surprisal" not in seeds_df.columns:
        raise SeedKLError(f"--surprisal_seed={seed}: needs --seed_metrics with a 'surprisal' column holding that "
                          "seed's surprisal at each size's last step")
    key = pl.col("seed").cast(pl.Utf8) == str(seed)
    out = {}
    for size, step in last.items():
        rows = seeds_df.filter(key & (pl.col("size") == size) & (pl.col("step") == step)
                               & pl.col("surprisal").is_not_null()).sort("position")
        if rows["position"].to_list() != positions[size].tolist():
            raise SeedKLError(f"{label}: column 'surprisal' lacks seed {seed} at size {size!r} step {step} (the last "
                              f"step) for some of META's {len(positions[size])} positions, or repeats one; give one "
                              "row per position")
        out[size] = rows["surprisal"].cast(pl.Float64).to_numpy()
    return out


# ---------------------------------------------------------------------------------------------- all
def _sizes(pairs_sizes: list[str], sizes: Sequence[str] | None, label: str) -> list[str]:
    """--sizes' order (a subset selects), else by the parameter count in the labels (14m < 70m < 1.4b)."""
    if not sizes:
        return size_order(pairs_sizes)
    sizes = [str(s) for s in sizes]
    unknown = [s for s in sizes if s not in pairs_sizes]
    if unknown or len(set(sizes)) != len(sizes):
        raise SeedKLError(f"--sizes={','.join(sizes)}: " + (f"{unknown} not in {label}'s column 'size' "
                          f"(it has {pairs_sizes})" if unknown else "a size is listed twice"))
    return sizes


def load_tables(pairs, meta, seeds=None, *, sizes: Sequence[str] | None = None, surprisal_seed=None) -> Tables:
    """Read and validate PAIRS, META and SEEDS (paths or frames; module docstring) into groups."""
    pairs, p_label = read(pairs, "--pairs")
    meta, m_label = read(meta, "--meta")
    check_columns(pairs, p_label, PAIRS_SCHEMA, PAIRS_OPTIONAL)
    check_columns(meta, m_label, META_SCHEMA, META_OPTIONAL)
    pairs, meta = _as_text(pairs, ["size"]), _as_text(meta, ["size", "doc_id"])
    seeds_df, s_label = (None, "") if seeds is None else read(seeds, "--seed_metrics")
    if seeds_df is not None:
        check_columns(seeds_df, s_label, SEEDS_SCHEMA, {m: "float" for m in SEED_METRICS})
        if not any(m in seeds_df.columns for m in SEED_METRICS):
            raise SeedKLError(f"{s_label}: none of the columns {', '.join(SEED_METRICS)}; give at least one")
        if seeds_df["seed"].dtype.is_integer() != pairs["seed_a"].dtype.is_integer():
            raise SeedKLError(f"{s_label}: column 'seed' is {seeds_df['seed'].dtype} but PAIRS' seeds are "
                              f"{pairs['seed_a'].dtype}; write seeds the same way in both")
        seeds_df = _as_text(seeds_df, ["size"])
    order = _sizes(pairs["size"].unique(maintain_order=True).to_list(), sizes, p_label)
    compared = _seed_order(pairs, p_label)
    positions = _meta_positions(meta, m_label, order)
    groups, last = [], {}
    parts = pairs.partition_by(["size", "step"], as_dict=True, maintain_order=True)
    for size in order:
        for step in sorted(int(st) for (sz, st) in parts if sz == size):
            part = parts[(size, step)]
            got = set(part["seed_a"].to_list()) | set(part["seed_b"].to_list())
            if got != set(compared):
                raise SeedKLError(f"{p_label}: size {size!r} step {step} compares seeds {sorted(got, key=str)} but "
                                  f"the table has {sorted(compared, key=str)}; every (size, step) must compare the "
                                  "same seeds")
            arrays = _group_kl(part, p_label, size, step, compared, positions[size])
            arrays.update(_seed_arrays(seeds_df, s_label, size, step, compared, positions[size]))
            groups.append(GroupResult(size=size, step=step, seeds=list(compared), arrays=arrays))
            last[size] = step
    if len(compared) < 2:
        raise SeedKLError(f"{p_label}: columns 'seed_a'/'seed_b' name {len(compared)} seed; KL between seeds "
                          "needs at least 2")
    held = _held_out(seeds_df, s_label, surprisal_seed, compared, last, positions)
    return Tables(groups=groups, meta=meta, sizes=order, held_out=held)


def prepare(pairs, meta, seeds=None, *, sizes: Sequence[str] | None = None, compat: str = "none",
            surprisal_seed=None) -> tuple[Tables, pl.DataFrame, str]:
    """load_tables, then token_meta.parquet's frame and the final-surprisal bins' source ("" = none)."""
    from seedkl_jax.analysis.compat import check
    from seedkl_jax.analysis.token_meta import final_surprisals, token_meta

    compat = check(str(getattr(compat, "value", compat)))
    t = load_tables(pairs, meta, seeds, sizes=sizes, surprisal_seed=surprisal_seed)
    tmeta, source = token_meta(t.meta, t.sizes, final_surprisals(t.groups, compat, t.held_out, surprisal_seed),
                               compat)
    return t, tmeta, source


def analyze_frames(pairs, meta, seeds=None, *, sizes: Sequence[str] | None = None, n_boot: int = 1000,
                   compat: str = "none", phase_steps: Sequence[int] | None = None, surprisal_seed=None,
                   seed: int = 0) -> dict:
    """The analysis of per-pair KL tables without writing anything (e.g. a calibration benchmark).

    pairs / meta / seeds: parquet paths or polars frames (module docstring's schema); sizes: order
    and selection (default by the parameter count in the labels); compat: "none" | "paper";
    phase_steps: the suite's reference phase boundaries (None: no phase verdict); seed: the bootstrap's.
    Returns {"summary", "phases", "findings", "replicates", "token_meta", "sizes", "notes",
    "final_source"} (findings: findings.json's list, each {"id", "finding", "verdict", "evidence"}).
    """
    from seedkl_jax.analysis.pipeline import analyze_groups

    t, tmeta, source = prepare(pairs, meta, seeds, sizes=sizes, compat=compat, surprisal_seed=surprisal_seed)
    a = analyze_groups(t.groups, tmeta, n_boot=n_boot, phase_steps=phase_steps, sizes=t.sizes, seed=seed)
    return {"summary": a.summary, "phases": a.phases, "findings": a.findings, "replicates": a.replicates,
            "token_meta": tmeta, "sizes": a.sizes, "notes": a.notes, "final_source": source,
            "groups": t.groups}
