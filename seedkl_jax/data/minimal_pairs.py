"""Minimal pairs in BLiMP's JSONL format (`--minimal_pairs`), read and tokenized before any compute.

One JSON object per line: `sentence_good`, `sentence_bad` (non-empty strings), the task in `UID`
(BLiMP's per-paradigm name; default: the file's stem, as the paper's script names a task by its
file), optional `field` and `linguistics_term`. Blank lines are skipped; a pair keeps its line's
0-based index in the file (`pair`), so every output row can be traced back to its line.

Sentences are tokenized without special tokens (tokenizer.Tokenizer.encode); the scorer adds the
start/end tokens or [CLS]/[SEP] its model family needs (kernels/sentences.py).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from seedkl_jax.errors import SeedKLError

FIELDS = ("sentence_good", "sentence_bad")


@dataclasses.dataclass(frozen=True)
class MinimalPairs:
    """N pairs: per pair its line index, task, optional field/term and both sentences' token ids."""

    source: str                        # the file as given
    sha256: str                        # of the file's bytes (study.json records it)
    pair: np.ndarray                   # [N] int64: 0-based line index in the file
    task: tuple[str, ...]              # [N]
    field: tuple[str | None, ...]      # [N] BLiMP's field (syntax, morphology, ...), None when absent
    term: tuple[str | None, ...]       # [N] BLiMP's linguistics_term, None when absent
    good: tuple[np.ndarray, ...]       # [N] int32 token ids of sentence_good (no special tokens)
    bad: tuple[np.ndarray, ...]        # [N] int32 token ids of sentence_bad

    def __len__(self) -> int:
        return len(self.pair)

    def tasks(self) -> list[str]:
        """The tasks in order of first appearance."""
        return list(dict.fromkeys(self.task))


def read_minimal_pairs(path: str, tok, *, max_tokens: int | None = None) -> MinimalPairs:
    """Read and tokenize `path`. tok: data.tokenizer.Tokenizer (ids must be < tok.vocab_size);
    max_tokens: the longest sentence the scorer can take (the model's context less the special
    tokens), None = unchecked. Any bad line -> one SeedKLError naming the file and the line."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise SeedKLError(f"--minimal_pairs={path}: no such file; give a BLiMP-format .jsonl file")
    raw = p.read_bytes()
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise SeedKLError(f"--minimal_pairs={path}: not UTF-8 text ({e}); give a BLiMP-format .jsonl file") from None
    rows: dict[str, list] = {k: [] for k in ("pair", "task", "field", "term", "good", "bad")}
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        where = f"--minimal_pairs={path} line {i + 1}"
        obj = _parse(line, where)
        ids = [_tokens(obj, k, tok, where, max_tokens) for k in FIELDS]
        rows["pair"].append(i)
        rows["task"].append(str(obj.get("UID") or p.stem))
        rows["field"].append(None if obj.get("field") is None else str(obj["field"]))
        rows["term"].append(None if obj.get("linguistics_term") is None else str(obj["linguistics_term"]))
        rows["good"].append(ids[0])
        rows["bad"].append(ids[1])
    if not rows["pair"]:
        raise SeedKLError(f"--minimal_pairs={path} line 1: the file has no pairs; give one JSON object per line "
                          'with "sentence_good" and "sentence_bad" (BLiMP\'s format)')
    return MinimalPairs(source=str(path), sha256=hashlib.sha256(raw).hexdigest(),
                        pair=np.asarray(rows["pair"], np.int64),
                        **{k: tuple(rows[k]) for k in ("task", "field", "term", "good", "bad")})


def _parse(line: str, where: str) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise SeedKLError(f"{where}: not JSON ({e.msg}); give one JSON object per line") from None
    if not isinstance(obj, dict):
        raise SeedKLError(f"{where}: a JSON {type(obj).__name__}, not an object; give one JSON object per line "
                          'with "sentence_good" and "sentence_bad"')
    missing = [k for k in FIELDS if not isinstance(obj.get(k), str) or not obj[k].strip()]
    if missing:
        raise SeedKLError(f"{where}: no {' or '.join(missing)} (each must be a non-empty string); every line needs "
                          "both sentences")
    return obj


def _tokens(obj: dict, key: str, tok, where: str, max_tokens: int | None) -> np.ndarray:
    ids, _ = tok.encode(obj[key])
    if len(ids) == 0:
        raise SeedKLError(f"{where}: {key} has no tokens; give a sentence the tokenizer can encode")
    if int(ids.max()) >= tok.vocab_size:
        raise SeedKLError(f"{where}: {key} has token id {int(ids.max())} beyond the {tok.vocab_size} ids scored "
                          "(--vocab_size); widen --vocab_size or drop the line")
    if max_tokens is not None and len(ids) > max_tokens:
        raise SeedKLError(f"{where}: {key} has {len(ids)} tokens, more than the {max_tokens} the model's context "
                          "leaves besides the special tokens; shorten or drop the line")
    return np.asarray(ids, np.int32)
