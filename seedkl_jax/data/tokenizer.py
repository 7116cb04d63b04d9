"""The tokenizer of a checkpoint (or an explicit tokenizer.json), with its REAL vocabulary size.

Why it matters: a model's embedding matrix is padded (Pythia: 50,304 rows) beyond the tokenizer's
real ids (50,277 for Pythia's own tokenizer.json; ../shared's NeoX fixture carries 4 more added
tokens, ids 50,277-50,280, so it reports 50,281). Distributions are normalised over real ids only,
so the tokenizer, not the model, says how many there are:

    vocab_size = 1 + the largest id of the BPE vocab and the added tokens.

Only `tokenizers` is used (fast, no transformers/torch import). Offsets are character spans into
the encoded text; with NeoX's byte-level BPE (trim_offsets) a token's leading space is not in its
span, e.g. " us" in "Join us" -> (5, 7), and the byte tokens of one character share its span.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import tokenizers

from seedkl_jax.errors import SeedKLError

EOS_TOKEN = "<|endoftext|>"


@dataclasses.dataclass
class Tokenizer:
    backend: tokenizers.Tokenizer
    vocab_size: int  # real ids incl. added tokens; model rows may be more (padding)
    eos_id: int  # id of <|endoftext|> (0 for NeoX), or the tokenizer_config's eos_token
    source: str  # the tokenizer.json it came from

    def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """-> ids [N] int32, offsets [N,2] int64 (char span of each token in `text`).

        No special tokens are added: callers put <|endoftext|> around documents themselves.
        """
        enc = self.backend.encode(text, add_special_tokens=False)
        return (np.asarray(enc.ids, np.int32),
                np.asarray(enc.offsets, np.int64).reshape(len(enc.ids), 2))

    def decode_tokens(self, ids) -> list[str]:
        """Per-token strings (" us", "<|endoftext|>"); a byte fragment of a character decodes to "�"."""
        return [self.backend.decode([int(i)], skip_special_tokens=False) for i in np.asarray(ids).ravel()]


def load_tokenizer(source: str, revision: str | None = None) -> Tokenizer:
    """From a tokenizer.json path, a directory holding tokenizer.json, or a hub id[@revision]."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
        if not path.is_file():
            raise SeedKLError(f"{source}: no tokenizer.json in this directory; pass the tokenizer "
                              "explicitly (--tokenizer=path/to/tokenizer.json)")
    elif not path.exists():
        if path.suffix == ".json":
            raise SeedKLError(f"{source}: no such file; check the tokenizer.json path")
        from seedkl_jax.convert.hub import hub_snapshot, parse_ref

        name, revision, is_local = parse_ref(source, revision)  # raises for a missing local path
        if is_local:  # raced with a deletion
            raise SeedKLError(f"{source}: no such file or directory; check the path")
        path = hub_snapshot(name, revision, _pick_tokenizer) / "tokenizer.json"
    return _from_file(path)


def _pick_tokenizer(names: set[str]) -> list[str]:
    if "tokenizer.json" not in names:
        raise SeedKLError("no tokenizer.json in the hub repo; pass --tokenizer=path/to/tokenizer.json")
    return ["tokenizer.json", *(n for n in ("tokenizer_config.json",) if n in names)]


def _from_file(path: Path) -> Tokenizer:
    try:
        backend = tokenizers.Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for unparsable files
        raise SeedKLError(f"{path}: not a valid tokenizer.json ({str(e).splitlines()[0]}); pass the "
                          "tokenizer.json saved with the model") from e
    vocab = backend.get_vocab(with_added_tokens=True)
    eos_id = backend.token_to_id(EOS_TOKEN)
    if eos_id is None:
        eos_id = _config_eos(path.parent / "tokenizer_config.json", backend)
    if eos_id is None:
        raise SeedKLError(f"{path}: no {EOS_TOKEN} token and no eos_token in tokenizer_config.json; "
                          f"add {EOS_TOKEN} to the tokenizer (documents are separated by it)")
    return Tokenizer(backend=backend, vocab_size=1 + max(vocab.values()), eos_id=int(eos_id),
                     source=str(path))


def _config_eos(config: Path, backend: tokenizers.Tokenizer) -> int | None:
    try:
        eos = json.loads(config.read_text()).get("eos_token")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(eos, dict):
        eos = eos.get("content")
    return backend.token_to_id(eos) if isinstance(eos, str) else None
