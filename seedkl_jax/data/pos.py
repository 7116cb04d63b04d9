"""Part-of-speech tags per BPE token: stanza (run once per text, cached), a tag file, or none.

Why this file exists: the study conditions KL on what kind of token is predicted, but PoS taggers
tag *words* while the models predict *BPE tokens*. We tag the raw text once and move the word tags
onto tokens through character offsets:

    tag(token) = majority UPOS over the token's non-whitespace characters that some word covers
                 (ties: the tag reached first); XPOS = majority XPOS among those characters that
                 carry the winning UPOS. The token keeps the tag only when the winning UPOS covers
                 at least half of its non-whitespace characters (the paper's rule), else it has none.
    whitespace-only tokens, tokens no word covers, and eos tokens get no tag (None).

A multi-word token (stanza "MWT", e.g. "don't" -> do + n't) whose words have no character spans is
split over its words by their text lengths when the words spell the token; otherwise the whole
token takes the first word's tags.

Tag files (`--pos=FILE`) carry one entry per token of the scored id sequence; a single Penn
Treebank tag is mapped to UPOS with PENN_TO_UPOS (UD English-EWT conventions) and kept as XPOS.
Penn tags alone cannot tell AUX from VERB (only MD -> AUX) or SCONJ from ADP (IN -> ADP), so such
files see slightly fewer function words than stanza would.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from seedkl_jax.cachedir import cache_root, is_unwritable, warn_unwritable  # one definition of the cache root
from seedkl_jax.errors import SeedKLError

log = logging.getLogger(__name__)

UPOS_TAGS = frozenset({
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
    "PUNCT", "SCONJ", "SYM", "VERB", "X"})

# Penn Treebank (incl. NLTK / Stanford variants) -> UD UPOS, following UD English-EWT:
# possessive and wh-pronouns are PRON, modals AUX, particles (RP) ADP, TO/POS PART.
PENN_TO_UPOS = {
    "CC": "CCONJ", "CD": "NUM", "DT": "DET", "EX": "PRON", "FW": "X", "IN": "ADP",
    "JJ": "ADJ", "JJR": "ADJ", "JJS": "ADJ", "LS": "X", "MD": "AUX",
    "NN": "NOUN", "NNS": "NOUN", "NNP": "PROPN", "NNPS": "PROPN", "PDT": "DET", "POS": "PART",
    "PRP": "PRON", "PRP$": "PRON", "RB": "ADV", "RBR": "ADV", "RBS": "ADV", "RP": "ADP",
    "TO": "PART", "UH": "INTJ", "VB": "VERB", "VBD": "VERB", "VBG": "VERB", "VBN": "VERB",
    "VBP": "VERB", "VBZ": "VERB", "WDT": "PRON", "WP": "PRON", "WP$": "PRON", "WRB": "ADV",
    "AFX": "ADJ", "ADD": "X", "GW": "X", "XX": "X", "SYM": "SYM", "#": "SYM", "$": "SYM",
    **{p: "PUNCT" for p in (",", ".", ":", "``", "''", '"', "(", ")", "--", "-LRB-", "-RRB-",
                            "-LCB-", "-RCB-", "-LSB-", "-RSB-", "HYPH", "NFP")},
}
NO_TAG = frozenset({"UNK", "", "_"})  # plus None / JSON null

STANZA_LANG = "en"
STANZA_PROCESSORS = "tokenize,pos"  # stanza adds mwt itself where the language needs it

# A word as we keep it (and cache it): (start_char, end_char, upos, xpos).
Word = tuple[int, int, "str | None", "str | None"]


class StanzaUnavailable(RuntimeError):
    """stanza is not installed or its model cannot be downloaded/loaded (message: one line)."""


def _tag(x) -> str | None:
    return None if x is None or str(x) in NO_TAG else str(x)


# ---------------------------------------------------------------- stanza documents -> words

def document_words(doc) -> list[Word]:
    """Character-span words with (UPOS, XPOS) from a `stanza.Document` (see module doc for MWT)."""
    words: list[Word] = []
    for sent in doc.sentences:
        for tok in sent.tokens:
            ws = tok.words
            if all(w.start_char is not None and w.end_char is not None for w in ws):
                words += [(w.start_char, w.end_char, w.upos, w.xpos) for w in ws]
            elif len(ws) > 1 and "".join(w.text for w in ws) == tok.text:
                s = tok.start_char
                for w in ws:
                    words.append((s, s + len(w.text), w.upos, w.xpos))
                    s += len(w.text)
            else:
                words.append((tok.start_char, tok.end_char, ws[0].upos, ws[0].xpos))
    return words


def align_words(words: Sequence[Word], text: str, offsets: np.ndarray,
                skip: np.ndarray | None = None) -> tuple[list, list]:
    """Move word tags onto tokens by character majority.

    words: (start, end, upos, xpos) spans into `text`; offsets: [N,2] char span of each token;
    skip: [N] bool, tokens that get no tag regardless (eos). Returns (upos [N], xpos [N]) lists
    of str | None.
    """
    n_chars = len(text)
    owner = np.full(n_chars, -1, np.int64)       # word index covering each character
    for k, (s, e, upos, _) in enumerate(words):
        if upos is not None:
            owner[max(s, 0):min(e, n_chars)] = k
    space = np.fromiter((c.isspace() for c in text), bool, n_chars)
    n = len(offsets)
    upos_out: list = [None] * n
    xpos_out: list = [None] * n
    for i, (a, b) in enumerate(np.asarray(offsets).tolist()):
        if (skip is not None and skip[i]) or b <= a:
            continue
        o = owner[a:b][~space[a:b]]
        o = o[o >= 0]
        if not o.size:
            continue                                # whitespace-only or uncovered token
        votes: dict[str, Counter] = {}
        for k in o.tolist():                        # insertion order = first reached wins ties
            votes.setdefault(words[k][2], Counter())[words[k][3]] += 1
        upos = max(votes, key=lambda u: sum(votes[u].values()))
        if 2 * sum(votes[upos].values()) < int((~space[a:b]).sum()):
            continue                                # the majority tag covers under half the token
        upos_out[i], xpos_out[i] = upos, votes[upos].most_common(1)[0][0]
    return upos_out, xpos_out


# ---------------------------------------------------------------- running stanza, cached

def _build_pipeline(lang: str):
    """The stanza pipeline; downloads the model on first use. Raises StanzaUnavailable."""
    try:
        import stanza                                          # lazy: pulls in torch
    except ImportError as e:
        raise StanzaUnavailable(f"stanza is not installed ({e}); pip install 'seedkl_jax[pos]'") from e
    try:
        return stanza.Pipeline(lang, processors=STANZA_PROCESSORS, logging_level="WARN",
                               download_method=stanza.DownloadMethod.REUSE_RESOURCES)
    except Exception as e:  # noqa: BLE001 - any download/load failure means "no stanza model"
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        first = first if len(first) <= 160 else first[:160] + "..."
        raise StanzaUnavailable(
            f"cannot download or load stanza's '{lang}' model ({type(e).__name__}: {first})") from e


def stanza_words(text: str, cache_dir: str | os.PathLike | None = None,
                 lang: str = STANZA_LANG) -> list[Word]:
    """Tag `text` with stanza once; later calls with the same text read the JSON cache.

    Cache: <cache_dir or $SEEDKL_CACHE or ~/.cache/seedkl>/stanza/<sha256>.json, the key hashing
    stanza's version, language, processors and the text; the words carry a blake2b checksum (a file
    that fails it is re-tagged). A cache that cannot be written: tagged each time, one warning.
    Raises StanzaUnavailable.
    """
    try:
        from importlib.metadata import version
        sv = version("stanza")
    except Exception:  # noqa: BLE001
        sv = "unknown"
    key = hashlib.sha256(f"{sv}\0{lang}\0{STANZA_PROCESSORS}\0{text}".encode()).hexdigest()
    root = cache_root(cache_dir)
    path = root / "stanza" / f"{key}.json"
    cached = _read_tags(path)
    if cached is not None:
        return cached
    nlp = _build_pipeline(lang)
    log.info("tagging %d characters with stanza (cached afterwards in %s)", len(text), path)
    words = document_words(nlp(text))
    _write_tags(root, path, {"stanza_version": sv, "lang": lang, "words": words})
    return words


def _words_digest(words) -> str:
    return hashlib.blake2b(json.dumps(words).encode(), digest_size=16).hexdigest()


def _read_tags(path: Path) -> list[Word] | None:
    """The cached words, or None when absent, unreadable or failing their checksum (then: re-tag)."""
    if not path.exists():
        return None
    try:
        body = json.loads(path.read_text())
        words = body["words"]
        if body.get("blake2b") != _words_digest(words):  # a flipped digit would parse as a wrong offset
            raise ValueError("checksum differs")
        return [tuple(w) for w in words]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        log.warning("stanza cache %s is unreadable or corrupt (or predates checksums); re-tagging", path)
        return None


def _write_tags(root: Path, path: Path, body: dict) -> None:
    """Store atomically (no half-written cache) with the words' checksum; a cache that cannot be written
    is one warning per process (cachedir.warn_unwritable) and the tags are simply not kept."""
    body = {**body, "blake2b": _words_digest(body["words"])}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    except OSError as e:
        if not is_unwritable(e):
            raise
        warn_unwritable(root, e)
        return
    with os.fdopen(fd, "w") as f:
        json.dump(body, f)
    os.replace(tmp, path)


# ---------------------------------------------------------------- tag files

def read_pos_file(path: str | os.PathLike, token_strs: Sequence[str]) -> tuple[list, list]:
    """Tags per token from a JSON list of `[token_str, tag]` or `[token_str, upos, xpos]`.

    One entry per token of the scored id sequence (len(token_strs)). A single tag may be UPOS or
    Penn (mapped with PENN_TO_UPOS, kept as XPOS); "UNK"/null = no tag. Tags are used as given
    (eos entries included); differing token strings only warn. Returns (upos, xpos).
    """
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SeedKLError(f"--pos={path}: file not found; pass 'stanza', 'none' or a JSON tag file")
    except (OSError, ValueError) as e:
        raise SeedKLError(f"--pos={path}: not readable JSON ({e}); give a JSON list of "
                          "[token_str, tag] or [token_str, upos, xpos]")
    n = len(token_strs)
    if not isinstance(entries, list) or len(entries) != n:
        got = len(entries) if isinstance(entries, list) else type(entries).__name__
        raise SeedKLError(f"--pos={path}: {got} entries but the scored text has {n} tokens "
                          "(incl. leading/trailing eos); make the tags with the same tokenizer and text")
    upos: list = [None] * n
    xpos: list = [None] * n
    mismatch = []
    for i, e in enumerate(entries):
        if not isinstance(e, (list, tuple)) or len(e) not in (2, 3):
            raise SeedKLError(f"--pos={path}: entry {i} is {e!r}; expected [token_str, tag] or "
                              "[token_str, upos, xpos]")
        if e[0] != token_strs[i]:
            mismatch.append(i)
        if len(e) == 3:
            u, x = _tag(e[1]), _tag(e[2])
            if u is not None and u not in UPOS_TAGS:
                raise SeedKLError(f"--pos={path}: entry {i} has UPOS {u!r}, not a UD UPOS tag; "
                                  f"use one of {sorted(UPOS_TAGS)} or null")
        else:
            t = _tag(e[1])
            if t is None:
                u = x = None
            elif t in UPOS_TAGS:
                u, x = t, None
            elif t in PENN_TO_UPOS:
                u, x = PENN_TO_UPOS[t], t
            else:
                raise SeedKLError(f"--pos={path}: entry {i} has tag {t!r}, neither UD UPOS nor Penn; "
                                  "give [token_str, upos, xpos] entries")
        upos[i], xpos[i] = u, x
    if mismatch:
        i = mismatch[0]
        log.warning("--pos=%s: %d of %d token strings differ from the tokenizer's (first at %d: "
                    "%r vs %r); using the tags by position", path, len(mismatch), n, i,
                    entries[i][0], token_strs[i])
    return upos, xpos


def blank_eos(text: str, eos_str: str) -> str:
    """`text` with each eos string replaced by same-length whitespace (offsets stay valid, stanza
    sees a paragraph break instead of a fake word)."""
    if not eos_str:
        return text
    return text.replace(eos_str, ("\n\n" + " " * len(eos_str))[:len(eos_str)])
