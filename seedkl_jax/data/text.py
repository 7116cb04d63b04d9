"""The evaluation text: `--text` -> token ids with `<|endoftext|>` around and between documents.

As the paper's pipeline scores it: ids = [eos] + encode(documents joined by "<|endoftext|>") + [eos],
so the first document is predicted from a fresh start and every document's end is predicted too
(the shared Pile sample's input_ids.npy is exactly this). Three forms of `--text`:

  FILE.npy  token ids, used exactly as given (no eos added); no character text, so no PoS from stanza.
  FILE      UTF-8 text; documents separated by the literal "<|endoftext|>".
  DIR       every *.txt file (sorted by name) is one document; they are joined with "<|endoftext|>".

Each document is encoded on its own and the separator is inserted as the eos id, so the result does not
depend on whether a tokenizer treats "<|endoftext|>" as a special token (for NeoX it is identical to
encoding the whole string). `offsets[k]` is token k's character span in `Text.text` (the eos tokens get
the span of their separator, or an empty span at the start / end).

Which document each predicted position belongs to is defined once, in `data.annotate.doc_ids`
(a document owns its closing eos; empty documents fold into the preceding one).

Masked LMs (BERT; `read_text(..., masked_lm=True)`) score every wordpiece of every document and
nothing else, so their text has no separators: ids = [CLS] + wordpieces of document 0 + of
document 1 + ..., position p ≥ 1 is wordpiece p itself, and `Text.doc_ids` [N] says which document
each token belongs to (the [CLS] at 0 counts with document 0; empty documents are dropped). The
character text joins the documents with a blank line. The kernel side (kernels/windows.py) cuts each
document into ≤ 510-wordpiece chunks fed as [CLS] chunk [SEP].
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np

from seedkl_jax.errors import SeedKLError

EOS_TEXT = "<|endoftext|>"


@dataclasses.dataclass(frozen=True)
class Text:
    """ids [N] int32; text and offsets [N,2] (char spans into text) are None for an .npy input."""

    ids: np.ndarray
    text: str | None
    offsets: np.ndarray | None
    source: str
    eos_id: int
    doc_ids: np.ndarray | None = None  # [N] document of every token (masked LMs); None = from eos (data.annotate)

    @property
    def n_positions(self) -> int:
        """Number of predictions P = N - 1."""
        return len(self.ids) - 1

    def fingerprint(self) -> str:
        """sha256 of the id sequence: what a rerun must match to reuse finished groups."""
        return hashlib.sha256(np.ascontiguousarray(self.ids, dtype=np.int64).tobytes()).hexdigest()


def text_record(text: Text) -> dict:
    """What study.json records for a text input: where it came from and its ids by content."""
    return {"source": os.path.abspath(text.source), "n_tokens": int(len(text.ids)), "sha256": text.fingerprint()}


def read_text(path: str | os.PathLike, tokenizer, *, masked_lm: bool = False) -> Text:
    """Read `--text` (FILE, DIR or .npy; see module docstring) with `tokenizer` (data.tokenizer.Tokenizer).
    masked_lm: the layout a masked LM scores (module docstring); needs a WordPiece tokenizer ([CLS])."""
    p = Path(path).expanduser()
    if not p.exists():
        raise SeedKLError(f"--text={path}: no such file or directory; give a UTF-8 text file, a folder of "
                          "*.txt documents or an .npy of token ids")
    eos = int(tokenizer.eos_id)
    if p.is_file() and p.suffix == ".npy":
        if masked_lm:
            raise SeedKLError(f"--text={path}: a masked LM needs document boundaries, which an .npy of ids "
                              "does not have; pass the text (a file or a folder of .txt documents)")
        return _read_ids(p, tokenizer)
    if p.is_dir():
        files = sorted(p.glob("*.txt"))
        odd = [f.name for f in files if not f.is_file()]  # e.g. a folder named x.txt
        if odd:
            raise SeedKLError(f"--text={path}: {', '.join(odd[:3])} {'is not a' if len(odd) == 1 else 'are not'} "
                              "regular file(s); a --text folder holds one document per regular .txt file")
        if not files:
            raise SeedKLError(f"--text={path}: folder has no *.txt files; put one document per .txt file")
        docs = [_read_utf8(f) for f in files]
    else:
        docs = _read_utf8(p).split(EOS_TEXT)
    if not any(d.strip() for d in docs):
        raise SeedKLError(f"--text={path}: the text is empty; give a file with at least one non-empty document")
    if masked_lm:
        return _masked_lm_text(docs, tokenizer, str(p))
    ids, offsets, pos = [eos], [(0, 0)], 0
    for k, doc in enumerate(docs):
        if k:
            ids.append(eos)
            offsets.append((pos, pos + len(EOS_TEXT)))
            pos += len(EOS_TEXT)
        if doc:
            d_ids, d_off = tokenizer.encode(doc)
            ids.extend(int(i) for i in d_ids)
            offsets.extend((int(a) + pos, int(b) + pos) for a, b in np.asarray(d_off).reshape(-1, 2))
            pos += len(doc)
    ids.append(eos)
    offsets.append((pos, pos))
    return Text(ids=np.asarray(ids, np.int32), text=EOS_TEXT.join(docs),
                offsets=np.asarray(offsets, np.int64), source=str(p), eos_id=eos)


def _masked_lm_text(docs: list[str], tokenizer, source: str) -> Text:
    """[CLS] + every document's wordpieces, no separators; doc_ids per token (module docstring)."""
    if tokenizer.cls_id is None:
        raise SeedKLError(f"{tokenizer.source}: not a WordPiece tokenizer with [CLS]/[SEP]/[MASK]; a masked LM's "
                          "tokenizer is needed (BERT's vocab.txt)")
    sep = "\n\n"
    ids, offsets, doc_of, parts, pos = [tokenizer.cls_id], [(0, 0)], [0], [], 0
    for doc in docs:
        d_ids, d_off = tokenizer.encode(doc)
        if not len(d_ids):
            continue
        if parts:
            pos += len(sep)
        ids.extend(int(i) for i in d_ids)
        offsets.extend((int(a) + pos, int(b) + pos) for a, b in np.asarray(d_off).reshape(-1, 2))
        doc_of.extend([len(parts)] * len(d_ids))
        parts.append(doc)
        pos += len(doc)
    return Text(ids=np.asarray(ids, np.int32), text=sep.join(parts), offsets=np.asarray(offsets, np.int64),
                source=source, eos_id=int(tokenizer.cls_id), doc_ids=np.asarray(doc_of, np.int64))


def _read_utf8(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SeedKLError(f"--text={p}: not UTF-8 ({e.reason} at byte {e.start}); convert it to UTF-8") from None


NPY_MAGIC = b"\x93NUMPY"


def read_npy(path: str | os.PathLike, flag: str, wanted: str) -> np.ndarray:
    """The array of a file written by numpy.save, never unpickled. Anything else (another format, a
    pickled or object array, a truncated file, a folder) is one SeedKLError that names the file and
    `wanted` (e.g. "a .npy of integer token ids"), not numpy's advice to load it "unsafely"."""
    p = Path(path).expanduser()
    try:
        return np.load(p, allow_pickle=False)
    except FileNotFoundError:
        raise SeedKLError(f"{flag}={path}: file not found; give {wanted}") from None
    except (OSError, ValueError, EOFError) as e:
        if p.is_dir():
            why = "is a folder"
        else:
            try:
                with open(p, "rb") as f:
                    magic = f.read(len(NPY_MAGIC))
            except OSError as e2:
                raise SeedKLError(f"{flag}={path}: cannot be read ({e2.strerror or e2}); give {wanted}") from None
            if magic != NPY_MAGIC:
                why = "is not a .npy file"
            elif "Object arrays" in str(e) or "pickled" in str(e):
                why = "is a .npy of Python objects, not numbers"
            else:
                why = "is a damaged or truncated .npy file"
        raise SeedKLError(f"{flag}={path}: {why}; give {wanted} (numpy.save of a 1-D array)") from None


def _read_ids(p: Path, tokenizer) -> Text:
    ids = read_npy(p, "--text", "a .npy of integer token ids")
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise SeedKLError(f"--text={p}: expected a 1-D integer array of token ids, got {ids.dtype} {ids.shape}")
    if ids.size < 2:
        raise SeedKLError(f"--text={p}: the text is empty ({ids.size} token(s)); at least 2 ids are needed")
    bad = (ids < 0) | (ids >= tokenizer.vocab_size)
    if bad.any():
        raise SeedKLError(f"--text={p}: {int(bad.sum())} id(s) outside the tokenizer's vocab [0, "
                          f"{tokenizer.vocab_size}) (first {int(ids[bad][0])}); ids must come from the suite's tokenizer")
    return Text(ids=ids.astype(np.int32), text=None, offsets=None, source=str(p), eos_id=int(tokenizer.eos_id))
