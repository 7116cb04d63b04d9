"""explorer.html: the evaluation text, token by token, shaded by how far apart the seeds' predictions are,
with a step slider, a size selector and a per-token panel (E[conv] over steps, the S x S KL grid, each
seed's top-k) -- one self-contained, offline file (docs/explorer.md).

Why this split: the page's code lives in one template (explorer_page.html beside this file, plain
JavaScript, no library, no network); this module only writes its data. The data is binary, compressed
with zlib (the page inflates it with the browser's own DecompressionStream) and base64-encoded into
<script> blocks, one per chunk, so the page decodes what it shows and nothing more:

  core  per step: float16 [Q, Z, P]       Q quantities (kl_mean first), Z sizes, P positions
  pair  per (size, step): uint8 [P, S*(S-1)]  KL(p_i || p_j), i-major over j != i, as log2 of its ratio
        to the token's mean KL (a code step is 4.7%: the grid shows two digits)
  topk  per (size, step): uint16/uint32 [P, S, K] indices into the embedded id list, uint8 [P, S, K]
        probabilities in 1/255 units

Size budget: the chunks go in, in an order that spreads the steps (first, last, middle, ...), core
first, then the pair grids, then top-k, while the file stays within `budget_mb`; a chunk left out is
named on the page and in the returned notes (report.md), never dropped silently.

Deterministic: the same groups give a byte-identical file (stable order, fixed encodings, no time).
"""
from __future__ import annotations

import base64
import importlib.resources
import json
import zlib
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import polars as pl

from seedkl_jax.analysis.aggregate import GroupResult, category_order, size_order

BUDGET_MB = 25.0
TEMPLATE = "explorer_page.html"
DATA_MARK = "<!--EXPLORER_DATA-->"
# (array key, title, unit, log colour scale, reversed: low values shade dark); the first is the default view
QUANTITIES = (
    ("kl", "E[conv]: mean KL between seeds", "nats", True, False),
    ("top1_agree", "top-1 agreement between seeds", "fraction of pairs", False, True),
    ("js", "Jensen-Shannon divergence between seeds", "nats", True, False),
    ("surprisal", "surprisal of the target (seed mean)", "nats", False, False),
    ("entropy", "entropy of the prediction (seed mean)", "nats", False, False),
    ("kl_uniform", "KL to uniform (seed mean)", "nats", True, False),
    ("kl_unigram", "KL to unigram (seed mean)", "nats", True, False),
)
KINDS = (("freq_bin", "frequency bin"), ("upos", "PoS (UPOS)"), ("xpos", "PoS (Penn)"),
         ("pos_group", "word class"), ("paper_pos", "paper PoS group"), ("word_position", "word position"),
         ("final_surprisal_bin", "final surprisal bin"))
TOPK_HINT = ("top-k next tokens were not saved for this run: rerun `seedkl run` with --save_topk=5 "
             "(the default) to see each seed's most likely next tokens here")


def write_explorer(path, groups: list[GroupResult], token_meta: pl.DataFrame, *,
                   sizes: Sequence[str] | None = None, phase_steps: Sequence[int] | None = None,
                   vocab: Mapping[int, str] | None = None, budget_mb: float = BUDGET_MB) -> list[str]:
    """Write explorer.html at `path`; returns notes on what the size budget left out ([] = nothing).

    groups: the study's (size, step) groups (arrays kl [P,S,S], optional surprisal/entropy/kl_uniform/
    kl_unigram [P,S], top1_agree/js [P,S,S], topk_ids [P,S,K] + topk_prob [P,S,K]); token_meta: one row per
    (size, position) as write_outputs gets it; vocab: id -> string for top-k ids that are not in the text
    (None: those show as #id); budget_mb: the file's size budget (module docstring)."""
    sizes = [s for s in (sizes or size_order(g.size for g in groups)) if any(g.size == s for g in groups)]
    steps = sorted({int(g.step) for g in groups})
    meta = _first_size_meta(token_meta, sizes[0])
    P, S = meta.height, len(groups[0].seeds)
    # one text for all sizes: a size scored on other positions (possible in `seedkl analyze`) is not shown
    by = {(g.size, int(g.step)): g for g in groups if np.shape(g.arrays["kl"])[0] == P}
    other = sorted({g.size for g in groups if (g.size, int(g.step)) not in by}, key=sizes.index)
    quants = [q for q in QUANTITIES if any(q[0] in g.arrays for g in groups)]
    core = [_core_values(by, sizes, t, quants, P) for t in steps]            # [Q, Z, P] per step
    head = _head(meta, token_meta, sizes, steps, groups[0].seeds, quants, core, phase_steps)
    chunks = {}
    for i, t in enumerate(steps):
        chunks[f"c{i}"] = _pack(core[i], "<f2")
    K, palette, strings = _topk_palette(groups, meta, vocab)
    for zi, z in enumerate(sizes):
        for i, t in enumerate(steps):
            g = by.get((z, t))
            if g is None:
                continue
            chunks[f"p{zi}_{i}"] = _pack(_pair_codes(np.asarray(g.arrays["kl"], np.float64), core[i][0, zi], S), "u1")
            if K and "topk_ids" in g.arrays:
                idx = np.searchsorted(palette, np.asarray(g.arrays["topk_ids"], np.int64))
                prob = np.clip(np.rint(np.asarray(g.arrays["topk_prob"], np.float64) * 255), 0, 255)
                dt = "<u2" if len(palette) <= 65536 else "<u4"
                chunks[f"k{zi}_{i}"] = _pack(idx, dt) + "." + _pack(prob, "u1")
    head["topk"] = {"K": K, "ids": palette.tolist(), "strings": strings, "hint": TOPK_HINT, "wide": len(palette) > 65536}
    template = importlib.resources.files("seedkl_jax.report").joinpath(TEMPLATE).read_text(encoding="utf-8")
    kept, notes = _budget(chunks, steps, sizes, len(template) + len(json.dumps(head)) + 4096, budget_mb)
    if other:
        notes.append(f"explorer.html: sizes {', '.join(other)} were scored on other positions than "
                     f"{sizes[0]} and are not shown")
    head["chunks"], head["notes"] = sorted(kept), notes
    body = "\n".join(f'<script type="application/octet-stream" id="{k}">{chunks[k]}</script>' for k in sorted(kept))
    data = f'<script type="application/json" id="head">{_json(head)}</script>\n{body}'
    Path(path).write_text(template.replace(DATA_MARK, data, 1), encoding="utf-8")
    return notes


# ----------------------------------------------------------------------------------------- data
def _first_size_meta(token_meta: pl.DataFrame, size: str) -> pl.DataFrame:
    m = token_meta.filter(pl.col("size") == size) if "size" in token_meta.columns else token_meta
    return m.sort("position")


def _core_values(by, sizes, step, quants, P) -> np.ndarray:
    """[Q, Z, P] float32 per-token values at `step`: mean over ordered pairs (kl, top1_agree) or over
    seeds; NaN where a size lacks this step or the quantity."""
    out = np.full((len(quants), len(sizes), P), np.nan, np.float32)
    for zi, z in enumerate(sizes):
        g = by.get((z, step))
        if g is None:
            continue
        for qi, (key, *_rest) in enumerate(quants):
            v = g.arrays.get(key)
            if v is None:
                continue
            v = np.asarray(v, np.float64)
            if v.ndim == 3:
                S = v.shape[1]
                v = v[:, ~np.eye(S, dtype=bool)]
            out[qi, zi] = v.mean(1)
    return out


def pair_range(S: int) -> tuple[float, float]:
    """log2 of (pair KL / token's mean KL) that the grid's codes 1..255 span: a pair is at most the
    S(S-1) pairs' sum, so the top is exact; 12 octaves below it, a code step is 4.7% (error <= 2.4%)."""
    hi = float(np.log2(S * (S - 1))) + 0.01
    return hi - 12.0, hi


def _pair_codes(kl: np.ndarray, mean: np.ndarray, S: int) -> np.ndarray:
    """[P, S*(S-1)] uint8: each ordered pair's KL (row i's j != i in order) relative to the token's mean
    as the page decodes it (float16), on a log2 scale (pair_range); 0 = exactly zero."""
    m = mean.astype(np.float16).astype(np.float64)[:, None]
    v = kl[:, ~np.eye(S, dtype=bool)]
    lo, hi = pair_range(S)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.log2(v / m)
    code = np.clip(np.rint(1 + (x - lo) / (hi - lo) * 254), 1, 255)
    return np.where((v > 0) & (m > 0), code, 0).astype(np.uint8)


def _scale(values: np.ndarray, log: bool) -> list[float]:
    """The colour scale's ends: 1st and 99th percentile over every size and step (fixed while the step
    moves); for a log scale over the positive values."""
    v = values[np.isfinite(values)]
    if log:
        v = v[v > 0]
    if v.size == 0:
        return [1e-6, 1.0] if log else [0.0, 1.0]
    lo, hi = (float(x) for x in np.percentile(v, [1, 99]))
    if hi <= lo:
        hi = lo * 10 if log else lo + 1
    return [float(f"{lo:.4g}"), float(f"{hi:.4g}")]


def _head(meta, token_meta, sizes, steps, seeds, quants, core, phase_steps) -> dict:
    stack = np.stack(core, 1) if core else np.zeros((len(quants), 0, len(sizes), meta.height))  # [Q,T,Z,P]
    strs = ([str(s) for s in meta["token_str"].to_list()] if "token_str" in meta.columns else
            [f"#{i}" for i in meta["token_id"].to_list()] if "token_id" in meta.columns else ["?"] * meta.height)
    docs = meta["doc_id"].to_list() if "doc_id" in meta.columns else [0] * meta.height
    return {
        "sizes": list(sizes), "steps": steps, "seeds": [str(s) for s in seeds],
        "positions": meta["position"].to_list(),
        "ids": meta["token_id"].to_list() if "token_id" in meta.columns else [None] * meta.height,
        "text": _display(strs, docs), "raw": _raw(strs), "docs": _runs(docs),
        "kinds": _kinds(meta, token_meta, sizes),
        "quantities": [{"key": k, "title": t, "unit": u, "log": lg, "reverse": rv, "scale": _scale(stack[i], lg),
                        "mean": [[_f(np.nanmean(stack[i, ti, zi])) if np.isfinite(stack[i, ti, zi]).any() else None
                                  for ti in range(len(steps))] for zi in range(len(sizes))]}
                       for i, (k, t, u, lg, rv) in enumerate(quants)],
        "phase_steps": [int(s) for s in phase_steps] if phase_steps else [],
        "pair_log2": list(pair_range(len(seeds))),
    }


def _f(x) -> float | None:
    return float(f"{float(x):.6g}") if np.isfinite(x) else None


def _display(strs: list[str], docs: list) -> list[str]:
    """Each target's string as it reads in running text. Byte-level BPE strings carry their own spaces
    (" the"); word-level vocabularies do not, so a space goes before each word, except at a document's
    start and before WordPiece "##" continuations."""
    if _raw(strs):
        return strs
    out = []
    for i, s in enumerate(strs):
        first = i == 0 or docs[i] != docs[i - 1]
        out.append(s[2:] if s.startswith("##") and len(s) > 2 else ("" if first else " ") + s)
    return out


def _raw(strs: list[str]) -> bool:
    """Whether the strings carry their own spaces (byte-level BPE: many start with one)."""
    return sum(s[:1].isspace() for s in strs) >= 0.05 * max(len(strs), 1)


def _runs(docs: list) -> list[list[int]]:
    """[[doc_id, first index, end index)] of consecutive runs."""
    runs = []
    for i, d in enumerate(docs):
        if not runs or runs[-1][0] != d:
            runs.append([int(d) if d is not None else -1, i, i])
        runs[-1][2] = i + 1
    return runs


def _kinds(meta: pl.DataFrame, token_meta: pl.DataFrame, sizes) -> list[dict]:
    """Categories as codes into label lists (-1 = none); a kind that differs by size (final surprisal
    bins) gets codes per size."""
    out = []
    for kind, title in KINDS:
        if kind not in meta.columns:
            continue
        per = [_first_size_meta(token_meta, z)[kind].cast(pl.Utf8).to_list() for z in sizes]
        labels = category_order(kind, [x for col in per for x in col if x is not None])
        if not labels:
            continue
        rank = {lab: i for i, lab in enumerate(labels)}
        codes = [[rank.get(x, -1) if x is not None else -1 for x in col] for col in per]
        same = all(c == codes[0] for c in codes)
        out.append({"key": kind, "title": title, "labels": labels, "codes": codes[:1] if same else codes})
    return out


def _topk_palette(groups, meta, vocab) -> tuple[int, np.ndarray, list[str]]:
    """K, the sorted ids that occur in any top-k list, and their strings (the text's own strings, then
    `vocab`, else "#id")."""
    have = [g for g in groups if "topk_ids" in g.arrays and "topk_prob" in g.arrays]
    if not have:
        return 0, np.zeros(0, np.int64), []
    K = int(np.shape(have[0].arrays["topk_ids"])[-1])
    palette = np.unique(np.concatenate([np.unique(np.asarray(g.arrays["topk_ids"], np.int64)) for g in have]))
    known = dict(zip(meta["token_id"].to_list(), meta["token_str"].to_list())) if "token_str" in meta.columns else {}
    vocab = vocab or {}
    return K, palette, [str(vocab.get(int(i), known.get(int(i), f"#{int(i)}"))) for i in palette]


# ----------------------------------------------------------------------------------------- encoding
def _pack(arr: np.ndarray, dtype: str) -> str:
    """zlib (level 6) of the little-endian bytes, base64: the page inflates it with DecompressionStream."""
    raw = np.ascontiguousarray(np.asarray(arr).astype(dtype)).tobytes()
    return base64.b64encode(zlib.compress(raw, 6)).decode("ascii")


def _json(obj) -> str:
    """JSON safe inside <script>: no "</script" or "<!--" can end or confuse the block."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def spread_order(n: int) -> list[int]:
    """0..n-1 in an order that spreads them: first, last, then midpoints of the widest gaps."""
    if n <= 0:
        return []
    order, gaps = [0] + ([n - 1] if n > 1 else []), [(0, n - 1)]
    while gaps:
        nxt = []
        for lo, hi in gaps:
            if hi - lo > 1:
                mid = (lo + hi) // 2
                order.append(mid)
                nxt += [(lo, mid), (mid, hi)]
        gaps = nxt
    return order


def _budget(chunks: dict[str, str], steps, sizes, fixed: int, budget_mb: float) -> tuple[set[str], list[str]]:
    """Chunks that fit the budget (core, then pair grids, then top-k; steps in spread order) and a note
    per kind of chunk that left steps out."""
    limit, used, kept, notes = int(budget_mb * 1e6), fixed, set(), []
    order = spread_order(len(steps))
    what = {"c": "token values", "p": "seed-pair KL grids", "k": "top-k next tokens"}
    for prefix in "cpk":
        missing = []
        for i in order:
            keys = [f"c{i}"] if prefix == "c" else [f"{prefix}{zi}_{i}" for zi in range(len(sizes))]
            keys = [k for k in keys if k in chunks]
            cost = sum(len(chunks[k]) + 80 for k in keys)
            if keys and used + cost <= limit and (prefix == "c" or f"c{i}" in kept):
                kept.update(keys)
                used += cost
            elif keys:
                missing.append(steps[i])
        if missing:
            notes.append(f"explorer.html: {what[prefix]} left out at steps {', '.join(map(str, sorted(missing)))} "
                         f"to keep the file within {budget_mb:g} MB (docs/explorer.md)")
    return kept, notes
