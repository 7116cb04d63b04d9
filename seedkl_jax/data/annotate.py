"""Token categories for conditioning KL: document, corpus frequency, part of speech, context.

Why: the study asks *which kinds of tokens* seeds agree on. `annotate_tokens` turns one scored id
sequence into a per-prediction table (one row per predicted position p = 1..N-1) that the study
joins onto the kernel's [P, ...] outputs (row p-1 <-> prediction of token p).

Definitions (the output contract's columns):
  doc_id        documents are maximal runs of non-eos tokens, numbered 0, 1, ... in order. Every
                eos is counted with the document it ends (the eos that closes document k is
                predicted as part of k; a run of several eos stays in the preceding document); eos
                before the first document belong to document 0. For ids = [eos] + d0 + [eos] + d1
                + [eos]: d0 and its closing eos are doc 0, d1 and the final eos doc 1.
  count         corpus count of token_id: from a counts `.npy` (float per id, length = tokenizer
                vocab_size; values < 1 are 0) or, with counts=None, counted over `ids` itself.
  freq_bin      decade of count: "0", "1-9", "10-99", "100-999", then "1e3-1e4", "1e4-1e5", ...
                where "1eK-1eK+1" means 10^K <= count < 10^(K+1). FREQ_BIN_LABELS is the
                true order (plain string order agrees with it below 1e10).
  upos, xpos    PoS of token p (see seedkl_jax.data.pos for alignment); None = no tag. xpos is the
                Penn Treebank tag when the source has one (stanza's English XPOS, a Penn tag file).
  paper_pos     the paper's grouped PoS figure: xpos JJ, IN, DT, MD, PRP as themselves, "Nouns" for
                NN/NNS/NNP/NNPS, "Verbs" for VB/VBG/VBN/VBD/VBZ (VBP is excluded, as in the paper),
                None for every other tag.
  pos_group     "function" if upos in FUNCTION_UPOS, "content" if in CONTENT_UPOS, else "other"
                (incl. no tag). NUM is *not* a function word here: in BPE text numerals are
                digit strings, an open set with content-like frequencies, so NUM is "other".
  context_upos  upos of token p-1 (literally the previous token): None when that token has no
                tag, so at every document start (previous token is eos) and after whitespace-only
                tokens such as newlines.
  context_xpos  xpos of token p-1, same rule.
  word_position "begin" when token p starts a word, "inside" when it continues one; None for special
                tokens (eos, [CLS]/[SEP]/[MASK]/[PAD]) and whitespace-only tokens (newlines), which are
                no part of a word. A word starts at a document start (after eos/[CLS], or where `docs`
                changes) or after whitespace. With text + offsets that is read from the text: the
                character before the token's span (or the span's own first one, for tokenizers that
                keep the space in it) is whitespace, and the span does not start inside the previous
                token's (byte fragments of one character share a span). Without text (an ids .npy):
                from the token strings -- byte-level BPE (GPT-NeoX, GPT-2) keeps the space in the
                token (" the" = 'Ġthe'), so it begins a word when its string starts with whitespace or
                the previous token's ends with it. WordPiece "##" pieces are always inside; without
                text, every other WordPiece token is "begin" (BERT splits words at punctuation too).

`pos` selects the tags: "stanza" (tag the raw text once, cached; needs text + offsets), "none",
or a JSON file path (seedkl_jax.data.pos.read_pos_file). When stanza is unavailable (not
installed, model not downloadable), `required=False` (default) logs one warning line and
continues with null tags; `required=True` (the CLI's explicit `--pos=stanza`) raises SeedKLError.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import polars as pl

from seedkl_jax.data import pos as pos_lib
from seedkl_jax.data.text import read_npy
from seedkl_jax.errors import SeedKLError

log = logging.getLogger(__name__)

FUNCTION_UPOS = frozenset({"ADP", "AUX", "CCONJ", "DET", "PART", "PRON", "SCONJ"})
CONTENT_UPOS = frozenset({"NOUN", "PROPN", "VERB", "ADJ", "ADV"})

FREQ_BIN_LABELS = ("0", "1-9", "10-99", "100-999") + tuple(f"1e{k}-1e{k + 1}" for k in range(3, 19))
PAPER_TOP_BIN = 10 ** 5                 # the paper's frequency figure puts every count >= 1e5 in one bin
PAPER_TOP_LABEL = ">=1e5"
PAPER_POS = {"JJ": "JJ", "IN": "IN", "DT": "DT", "MD": "MD", "PRP": "PRP",
             **{t: "Nouns" for t in ("NN", "NNS", "NNP", "NNPS")},
             **{t: "Verbs" for t in ("VB", "VBG", "VBN", "VBD", "VBZ")}}
PAPER_POS_ORDER = ("JJ", "IN", "DT", "MD", "PRP", "Nouns", "Verbs")
# The paper's three Penn-tag sub-figures (category kind "xpos").
PAPER_XPOS_PANELS = {"nouns": ("NN", "NNS", "NNP"), "verbs": ("VB", "VBG", "VBN", "VBD", "VBZ"),
                     "other": ("PRP$", "DT", "CC", "JJ", "IN", "TO", "RB", "MD", "PRP")}
SURPRISAL_BIN_LABELS = ("[0,1)", "[1,2)", "[2,4)", "[4,8)", "8+")

META_SCHEMA = {
    "position": pl.Int64, "token_id": pl.Int64, "token_str": pl.String, "doc_id": pl.Int64,
    "count": pl.Int64, "freq_bin": pl.String, "upos": pl.String, "xpos": pl.String,
    "pos_group": pl.String, "context_upos": pl.String, "context_xpos": pl.String, "paper_pos": pl.String,
    "word_position": pl.String,
}
WORD_POSITION_LABELS = ("begin", "inside")


# ---------------------------------------------------------------- documents

def doc_ids(ids: np.ndarray, eos_id: int) -> np.ndarray:
    """[N] int64 document index of every token of `ids` (definition in the module docstring)."""
    ids = np.asarray(ids)
    is_eos = ids == eos_id
    starts = ~is_eos & np.concatenate([[True], is_eos[:-1]])   # first token of each document
    return np.maximum(np.cumsum(starts) - 1, 0).astype(np.int64)


# ---------------------------------------------------------------- frequency

def load_counts(path: str | os.PathLike, vocab_size: int) -> np.ndarray:
    """Per-id corpus counts from a `.npy` file as int64 [vocab_size]; values < 1 become 0 (the
    shared Pile counts hold denormal garbage for the ids never seen)."""
    arr = read_npy(path, "--counts", "a .npy of counts, one non-negative number per token id")
    return _check_counts(arr, vocab_size, f"--counts={path}")


def counts_from_ids(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """int64 [vocab_size] count of every id in `ids` (frequency within the text itself)."""
    ids = np.asarray(ids).ravel()
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise SeedKLError(f"token ids: found id {int(ids.max())} outside the tokenizer's "
                          f"{vocab_size} ids; use the tokenizer the ids were made with")
    return np.bincount(ids.astype(np.int64), minlength=vocab_size).astype(np.int64)


def _check_counts(arr: np.ndarray, vocab_size: int, what: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 1 or arr.shape[0] != vocab_size:
        # --vocab_size can only narrow the tokenizer's ids: suggest it only for a shorter counts file
        narrow = (f", or normalise over fewer ids with --vocab_size={arr.size} if the extra ids are unused added "
                  "tokens") if arr.ndim == 1 and 2 <= arr.size < vocab_size else ""
        raise SeedKLError(f"{what}: counts have shape {arr.shape} (length {arr.size}) but the tokenizer has "
                          f"{vocab_size} ids; use counts made with the same tokenizer{narrow}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
        raise SeedKLError(f"{what}: counts must be finite numbers (dtype {arr.dtype}); regenerate the counts file")
    arr = arr.astype(np.float64)
    if (arr < 0).any():
        bad = np.flatnonzero(arr < 0)
        raise SeedKLError(f"{what}: {bad.size} negative count(s), e.g. id {int(bad[0])} = {arr[bad[0]]:g}; counts are "
                          "occurrences (≥ 0): regenerate the counts file")
    counts = np.where(arr < 1, 0, np.rint(arr)).astype(np.int64)  # < 1: the Pile file's denormal garbage
    if not counts.any():
        raise SeedKLError(f"{what}: every count is 0 (or below 1); give counts of a corpus, or leave --counts out "
                          "to count over the text")
    return counts


def freq_bin(counts: np.ndarray, top: int | None = None) -> list[str]:
    """Decade label of each count (labels in FREQ_BIN_LABELS), computed with exact integers.
    top=PAPER_TOP_BIN puts every count >= top into one bin labelled ">=1e5" (the paper's top bin)."""
    c = np.asarray(counts, np.int64)
    powers = 10 ** np.arange(19, dtype=np.int64)               # 1 .. 1e18
    k = np.searchsorted(powers, c, side="right")               # 0 for c==0, 1 for 1..9, ...
    labels = np.asarray(FREQ_BIN_LABELS, dtype=object)[k]
    if top is not None:
        labels[c >= top] = f">=1e{int(round(np.log10(top)))}"
    return labels.tolist()


def paper_pos(xpos: str | None) -> str | None:
    """The paper's grouped PoS category of one Penn tag (PAPER_POS), None when it has none."""
    return PAPER_POS.get(xpos) if xpos is not None else None


# ---------------------------------------------------------------- surprisal / groups

def surprisal_bin(x):
    """Bin surprisal values (nats, as the kernel outputs): "[0,1)","[1,2)","[2,4)","[4,8)","8+".

    x: array [P] -> list[str | None] of P labels; a scalar -> one label. Tiny negative round-off
    goes to "[0,1)"; NaN -> None."""
    a = np.asarray(x, np.float64)
    k = np.searchsorted(np.array([1.0, 2.0, 4.0, 8.0]), a.ravel(), side="right")
    labels = np.asarray(SURPRISAL_BIN_LABELS, dtype=object)[k]
    labels[np.isnan(a.ravel())] = None
    return labels[0] if a.ndim == 0 else labels.reshape(a.shape).tolist()


def pos_group(upos: str | None) -> str:
    """"function" / "content" / "other" for one UPOS tag (None -> "other")."""
    if upos in FUNCTION_UPOS:
        return "function"
    return "content" if upos in CONTENT_UPOS else "other"


# ---------------------------------------------------------------- word boundaries

def _subword_prefix(tokenizer) -> str | None:
    """The WordPiece continuation prefix ("##") of the tokenizer's model, None for other models."""
    model = getattr(getattr(tokenizer, "backend", None), "model", None)
    return getattr(model, "continuing_subword_prefix", None) if type(model).__name__ == "WordPiece" else None


def word_positions(ids, token_strs, tokenizer, text=None, offsets=None, docs=None) -> list[str | None]:
    """[N] "begin" / "inside" / None for every token of `ids` (definition in the module docstring)."""
    ids = np.asarray(ids)
    special = {int(i) for i in (tokenizer.eos_id, *(getattr(tokenizer, k, None) for k in
                                                     ("cls_id", "sep_id", "mask_id", "pad_id"))) if i is not None}
    prefix = _subword_prefix(tokenizer)
    raw = tokenizer.backend.id_to_token if prefix else None
    spans = (text is not None and offsets is not None and np.shape(offsets) == (ids.size, 2)
             and (not ids.size or 0 <= np.min(offsets) and np.max(offsets) <= len(text)))  # else: token strings
    out: list[str | None] = []
    for k, i in enumerate(ids.tolist()):
        s = token_strs[k]
        if i in special or not s.strip():
            out.append(None)
            continue
        if prefix and (raw(i) or "").startswith(prefix):
            begin = False
        elif k == 0 or int(ids[k - 1]) in special or (docs is not None and docs[k] != docs[k - 1]):
            begin = True
        elif spans:
            a, prev_end = int(offsets[k][0]), int(offsets[k - 1][1])
            begin = a >= prev_end and (a == 0 or text[a - 1].isspace() or text[a:a + 1].isspace())
        else:
            begin = bool(prefix) or s[0].isspace() or token_strs[k - 1][-1:].isspace()
        out.append("begin" if begin else "inside")
    return out


# ---------------------------------------------------------------- PoS dispatch

def token_pos(ids, text, offsets, tokenizer, pos, token_strs, cache_dir=None, *, required=False):
    """(upos [N], xpos [N]) lists for every token of `ids` (see the module docstring for `pos`)."""
    n = len(ids)
    none = ([None] * n, [None] * n)
    if pos is None or pos == "none":
        return none
    if pos != "stanza":
        if not Path(pos).is_file():
            raise SeedKLError(f"--pos={pos}: neither 'stanza', 'none' nor an existing tag file")
        return pos_lib.read_pos_file(pos, token_strs)

    def unavailable(reason: str):
        if required:
            raise SeedKLError(f"--pos=stanza: {reason}; install/download stanza's model "
                              "(stanza.download('en')), or use --pos=none or --pos=FILE")
        log.warning("pos=stanza: %s; continuing without PoS tags", reason)
        return none

    if text is None or offsets is None:
        return unavailable("needs the raw text and token offsets (an ids .npy input has none)")
    offsets = np.asarray(offsets)
    if offsets.shape != (n, 2):
        raise SeedKLError(f"offsets: shape {offsets.shape}, expected ({n}, 2) for {n} ids; "
                          "pass the offsets of the scored id sequence")
    if offsets.size and (offsets.min() < 0 or offsets.max() > len(text)):
        raise SeedKLError(f"offsets: spans reach {int(offsets.max())} outside the text's "
                          f"{len(text)} characters; pass offsets into this text")
    eos_str = tokenizer.decode_tokens([tokenizer.eos_id])[0]
    try:
        words = pos_lib.stanza_words(pos_lib.blank_eos(text, eos_str), cache_dir)
    except pos_lib.StanzaUnavailable as e:
        return unavailable(str(e))
    return pos_lib.align_words(words, text, offsets, skip=np.asarray(ids) == tokenizer.eos_id)


# ---------------------------------------------------------------- the table

def _context(tags, docs) -> list:
    """The tag of the last input token of each prediction (tags[:-1]); with `docs` (masked LMs, no eos
    between documents) None where the prediction starts a document."""
    if docs is None:
        return list(tags[:-1])
    d = np.asarray(docs)
    return [t if a == b else None for t, a, b in zip(tags[:-1], d[:-1], d[1:])]


def annotate_tokens(ids: np.ndarray, text: str | None, offsets: np.ndarray | None, tokenizer,
                    counts: np.ndarray | str | os.PathLike | None, pos: str | None,
                    cache_dir: str | os.PathLike | None = None, *,
                    required: bool = False, docs: np.ndarray | None = None) -> pl.DataFrame:
    """Per-prediction categories for one scored text.

    ids: [N] token ids as scored (incl. leading/trailing eos); text/offsets: the raw text and
    [N,2] char spans of every id (None for an ids-only input); tokenizer: seedkl_jax Tokenizer
    (uses vocab_size, eos_id, decode_tokens); counts: [vocab_size] array, a `.npy` path, or None
    (count over `ids`); pos: "stanza" | "none" | tag-file path; required: a stanza failure
    raises instead of warning; docs: [N] document of every token (masked-LM texts, which have no eos
    between documents; None = from eos). Returns P = N-1 rows (position 1..N-1), columns META_SCHEMA.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.size < 2 or not np.issubdtype(ids.dtype, np.integer):
        raise SeedKLError(f"token ids: need a 1-D integer sequence of >= 2 tokens, got "
                          f"shape {ids.shape} dtype {ids.dtype}; check the --text input")
    vocab = int(tokenizer.vocab_size)
    if ids.min() < 0 or ids.max() >= vocab:
        raise SeedKLError(f"token ids: id {int(ids.max() if ids.max() >= vocab else ids.min())} is "
                          f"outside the tokenizer's {vocab} ids; use the tokenizer the ids were made with")
    if counts is None:
        cnt = counts_from_ids(ids, vocab)
    elif isinstance(counts, (str, os.PathLike)):
        cnt = load_counts(counts, vocab)
    else:
        cnt = _check_counts(counts, vocab, "counts array")
    token_strs = list(tokenizer.decode_tokens(ids.tolist()))
    upos, xpos = token_pos(ids, text, offsets, tokenizer, pos, token_strs, cache_dir,
                           required=required)
    tok_count = cnt[ids]
    p = slice(1, None)                                   # predicted positions 1..N-1
    return pl.DataFrame({
        "position": np.arange(1, ids.size, dtype=np.int64),
        "token_id": ids[p].astype(np.int64),
        "token_str": token_strs[p],
        "doc_id": (doc_ids(ids, tokenizer.eos_id) if docs is None else np.asarray(docs, np.int64))[p],
        "count": tok_count[p],
        "freq_bin": freq_bin(tok_count[p]),
        "upos": upos[p],
        "xpos": xpos[p],
        "pos_group": [pos_group(u) for u in upos[p]],
        "context_upos": _context(upos, docs),
        "context_xpos": _context(xpos, docs),
        "paper_pos": [paper_pos(x) for x in xpos[p]],
        "word_position": word_positions(ids, token_strs, tokenizer, text, offsets, docs)[p],
    }, schema=META_SCHEMA)
