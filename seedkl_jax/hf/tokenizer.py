"""A checkpoint's tokenizer files read into a `Tokenizer`, with its REAL vocabulary size.

Why it matters: a model's embedding matrix is padded (Pythia: 50,304 rows) beyond the tokenizer's
real ids (50,277 for Pythia's own tokenizer.json; ../shared's NeoX fixture carries 4 more added
tokens, ids 50,277-50,280, so it reports 50,281). Distributions are normalised over real ids only,
so the tokenizer, not the model, says how many there are:

    vocab_size = 1 + the largest id of the BPE vocab and the added tokens.

Only `tokenizers` is used (fast, no transformers/torch import). Offsets are character spans into
the encoded text; with NeoX's byte-level BPE (trim_offsets) a token's leading space is not in its
span, e.g. " us" in "Join us" -> (5, 7), and the byte tokens of one character share its span.

Files (hf/checkpoint.py lists them): tokenizer.json (any family), else BERT's vocab.txt (WordPiece,
lower-cased unless tokenizer_config.json says do_lower_case=false), else GPT-2's vocab.json +
merges.txt (byte-level BPE). A WordPiece tokenizer has no <|endoftext|>: its [SEP] ends documents
(`eos_id`), and `cls_id`, `sep_id`, `mask_id`, `pad_id` are what masked-LM scoring needs.

Here because a loaded model (convert.loader.Model) needs its real vocabulary and special ids and sits
below data/; `seedkl_jax.data.tokenizer.load_tokenizer` resolves a path, folder or hub id to these.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import tokenizers

from seedkl_jax.errors import SeedKLError
from seedkl_jax.hf.checkpoint import TOKENIZER_SOURCES, has_tokenizer

EOS_TOKEN = "<|endoftext|>"


@dataclasses.dataclass
class Tokenizer:
    backend: tokenizers.Tokenizer
    vocab_size: int  # real ids incl. added tokens; model rows may be more (padding)
    eos_id: int  # id of <|endoftext|> (0 for NeoX), or the tokenizer_config's eos_token, or [SEP]
    source: str  # the tokenizer file it came from
    cls_id: int | None = None  # [CLS], [SEP], [MASK], [PAD] of a WordPiece (BERT) tokenizer
    sep_id: int | None = None
    mask_id: int | None = None
    pad_id: int | None = None

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


def tokenizer_file(folder: Path, source: str) -> Path:
    """The file a tokenizer is built from in `folder` (see the module docstring for the order)."""
    for name, beside in TOKENIZER_SOURCES.items():
        if all((folder / f).is_file() for f in (name, *beside)):
            return folder / name
    raise SeedKLError(f"{source}: no tokenizer.json, vocab.txt or vocab.json + merges.txt in this directory; "
                      "pass the tokenizer explicitly (--tokenizer=path/to/tokenizer.json)")


def folder_tokenizer(folder: str | Path) -> Tokenizer | None:
    """The tokenizer in checkpoint folder `folder`, or None when it holds no tokenizer files."""
    folder = Path(folder)
    if not folder.is_dir() or not has_tokenizer({p.name for p in folder.iterdir()}):
        return None
    return read_tokenizer(tokenizer_file(folder, str(folder)))


def _backend(path: Path) -> tokenizers.Tokenizer:
    config = _read_json(path.parent / "tokenizer_config.json")
    if path.name == "vocab.txt":
        lower = bool(config.get("do_lower_case", True))
        return tokenizers.BertWordPieceTokenizer(str(path), lowercase=lower, strip_accents=None if lower else False,
                                                 clean_text=True)._tokenizer
    if path.name == "vocab.json":
        bpe = tokenizers.ByteLevelBPETokenizer(str(path), str(path.parent / "merges.txt"))
        backend = bpe._tokenizer
        if backend.token_to_id(EOS_TOKEN) is not None:
            backend.add_special_tokens([EOS_TOKEN])
        return backend
    return tokenizers.Tokenizer.from_file(str(path))


def read_tokenizer(path: Path) -> Tokenizer:
    """The tokenizer built from file `path` (tokenizer.json, vocab.txt or vocab.json, with the
    tokenizer_config.json beside it)."""
    try:
        backend = _backend(path)
    except Exception as e:  # tokenizers raises a bare Exception for unparsable files
        raise SeedKLError(f"{path}: not a valid {path.name} ({str(e).splitlines()[0]}); pass the "
                          "tokenizer files saved with the model") from e
    vocab = backend.get_vocab(with_added_tokens=True)
    special = {k: backend.token_to_id(t) for k, t in
               (("cls_id", "[CLS]"), ("sep_id", "[SEP]"), ("mask_id", "[MASK]"), ("pad_id", "[PAD]"))}
    if None in special.values():
        special = {}
    eos_id = backend.token_to_id(EOS_TOKEN)
    if eos_id is None:
        eos_id = _config_eos(path.parent / "tokenizer_config.json", backend)
    if eos_id is None:
        eos_id = special.get("sep_id")
    if eos_id is None:
        raise SeedKLError(f"{path}: no {EOS_TOKEN} token, no eos_token in tokenizer_config.json and no [SEP]; "
                          f"add {EOS_TOKEN} to the tokenizer (documents are separated by it)")
    return Tokenizer(backend=backend, vocab_size=1 + max(vocab.values()), eos_id=int(eos_id),
                     source=str(path), **special)


def _read_json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def _config_eos(config: Path, backend: tokenizers.Tokenizer) -> int | None:
    try:
        eos = json.loads(config.read_text()).get("eos_token")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(eos, dict):
        eos = eos.get("content")
    return backend.token_to_id(eos) if isinstance(eos, str) else None
