"""The study's tokenizer from whatever names it: a tokenizer.json / vocab.txt path, a checkpoint folder,
or a hub id[@revision] (only its tokenizer files are downloaded).

Reading the files (real vocabulary size, <|endoftext|>, [CLS]/[SEP]/[MASK]/[PAD]) is hf/tokenizer.py's;
`Tokenizer` and `EOS_TOKEN` are re-exported here for the text pipeline.
"""
from __future__ import annotations

from pathlib import Path

from seedkl_jax.errors import SeedKLError
from seedkl_jax.hf.checkpoint import pick_tokenizer_files
from seedkl_jax.hf.hub import hub_snapshot, parse_ref
from seedkl_jax.hf.tokenizer import EOS_TOKEN, Tokenizer, read_tokenizer, tokenizer_file

__all__ = ["EOS_TOKEN", "Tokenizer", "load_tokenizer"]


def load_tokenizer(source: str, revision: str | None = None) -> Tokenizer:
    """From a tokenizer.json / vocab.txt path, a directory holding tokenizer files, or a hub id[@revision]."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = tokenizer_file(path, source)
    elif not path.exists():
        if path.suffix == ".json":
            raise SeedKLError(f"{source}: no such file; check the tokenizer.json path")
        name, revision, is_local = parse_ref(source, revision)  # raises for a missing local path
        if is_local:  # raced with a deletion
            raise SeedKLError(f"{source}: no such file or directory; check the path")
        path = tokenizer_file(hub_snapshot(name, revision, pick_tokenizer_files), source)
    return read_tokenizer(path)
