"""Token categories: doc ids, frequency bins, PoS alignment (stanza / file / none), groups."""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import tokenizers

from seedkl_jax.data import annotate as ann
from seedkl_jax.data import pos as pos_lib
from seedkl_jax.errors import SeedKLError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
NEOX = SHARED / "fixtures" / "neox-tokenizer" / "tokenizer.json"
PILE = SHARED / "fixtures" / "pile-sample"
EOS = "<|endoftext|>"


@dataclass
class StandInTokenizer:
    """data.tokenizer.Tokenizer's surface (backend, vocab_size, eos_id, encode, decode_tokens)."""
    backend: tokenizers.Tokenizer
    vocab_size: int
    eos_id: int
    source: str = "test"

    def encode(self, text):
        e = self.backend.encode(text, add_special_tokens=False)
        return np.asarray(e.ids, np.int32), np.asarray(e.offsets, np.int64).reshape(-1, 2)

    def decode_tokens(self, ids):
        return [self.backend.decode([int(i)], skip_special_tokens=False) for i in ids]


def _need_shared():
    if not NEOX.exists() or not PILE.exists():
        pytest.skip("../shared fixtures absent")


def _neox() -> StandInTokenizer:
    _need_shared()
    # 50,277 = Pythia's real ids (the shared counts' length); the file also lists 4 later extras.
    return StandInTokenizer(tokenizers.Tokenizer.from_file(str(NEOX)), 50277, 0, str(NEOX))


def _tiny_bpe() -> StandInTokenizer:
    from tokenizers import decoders, models, pre_tokenizers, trainers
    tk = tokenizers.Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    corpus = ["We don't know whether the team cannot play.", "The tournament is on Sunday.",
              "Register your team of four below, and bring chairs."] * 20
    tk.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return StandInTokenizer(tk, tk.get_vocab_size(), tk.token_to_id(EOS))


@pytest.fixture(params=["neox", "tiny"])
def bpe(request):
    return _neox() if request.param == "neox" else _tiny_bpe()


def _scored(tok, text):
    """ids = [eos] + encode(text) + [eos] with offsets (eos spans (0,0)), as data/text.py does."""
    ids, offs = tok.encode(text)
    z = np.zeros((1, 2), np.int64)
    return np.concatenate([[tok.eos_id], ids, [tok.eos_id]]), np.concatenate([z, offs, z])


# ------------------------------------------------------------------ stanza alignment

# (word, upos, xpos); None word splits are MWT words (no char spans, like stanza's English MWT).
SENT = [("We", "PRON", "PRP"), (("don't", [("do", "AUX", "VBP"), ("n't", "PART", "RB")]), None, None),
        ("know", "VERB", "VB"), ("whether", "SCONJ", "IN"), ("the", "DET", "DT"),
        ("team", "NOUN", "NN"), ("cannot", "AUX", "MD"), ("play", "VERB", "VB"), (".", "PUNCT", ".")]
TEXT = "We don't know whether the team cannot play.\n\n  The team"
SENT2 = [("The", "DET", "DT"), ("team", "NOUN", "NN")]


def _document(text):
    """A real stanza.Document built from given annotations (no model download)."""
    from stanza.models.common.doc import Document
    sents, pos, gold = [], 0, []              # gold: (start, end, upos, xpos) per character span
    for sent in (SENT, SENT2):
        rows, wid = [], 1
        for w, upos, xpos in sent:
            if isinstance(w, tuple):         # multi-word token
                surface, parts = w
                s = text.index(surface, pos)
                rows.append({"id": tuple(range(wid, wid + len(parts))), "text": surface,
                             "start_char": s, "end_char": s + len(surface)})
                c = s
                for t, u, x in parts:
                    rows.append({"id": wid, "text": t, "upos": u, "xpos": x})
                    gold.append((c, c + len(t), u, x))
                    c, wid = c + len(t), wid + 1
                pos = s + len(surface)
            else:
                s = text.index(w, pos)
                rows.append({"id": wid, "text": w, "upos": upos, "xpos": xpos,
                             "start_char": s, "end_char": s + len(w)})
                gold.append((s, s + len(w), upos, xpos))
                pos, wid = s + len(w), wid + 1
        sents.append(rows)
    return Document(sents, text=text), gold


def _expected(gold, text, a, b):
    """Independent majority: count characters per (upos) by scanning gold spans."""
    votes = {}
    for c in range(a, b):
        if text[c].isspace():
            continue
        for s, e, u, x in gold:
            if s <= c < e:
                votes.setdefault(u, []).append(x)
    if not votes:
        return None, None
    u = max(votes, key=lambda k: len(votes[k]))
    return u, max(votes[u], key=votes[u].count)


def test_document_words_split_mwt_by_text():
    doc, gold = _document(TEXT)
    assert pos_lib.document_words(doc) == gold


def test_stanza_alignment_on_bpe_tokens(bpe):
    doc, gold = _document(TEXT)
    ids, offs = _scored(bpe, TEXT)
    upos, xpos = pos_lib.align_words(pos_lib.document_words(doc), TEXT, offs,
                                     skip=ids == bpe.eos_id)
    assert upos[0] is None and upos[-1] is None                 # eos never tagged
    strs = bpe.decode_tokens(ids)
    for i in range(1, len(ids) - 1):
        a, b = offs[i]
        assert (upos[i], xpos[i]) == _expected(gold, TEXT, a, b), (i, strs[i])
        if TEXT[a:b].strip() == "":
            assert upos[i] is None, f"whitespace token {strs[i]!r} tagged"
    # the "do|n't" MWT: whichever token holds "n't"'s apostrophe is PART, "We" is PRON
    apos = TEXT.index("'")
    tok = next(i for i in range(1, len(ids) - 1) if offs[i][0] <= apos < offs[i][1])
    assert upos[tok] == "PART"
    assert upos[1] == "PRON" and xpos[1] == "PRP"


def test_align_words_majority_and_ties():
    text = "abcde fg"
    words = [(0, 3, "NOUN", "NN"), (3, 5, "VERB", "VBZ"), (6, 8, "ADJ", "JJ")]
    offs = np.array([[0, 5], [2, 5], [1, 5], [5, 6], [4, 8], [0, 0]])
    upos, xpos = pos_lib.align_words(words, text, offs)
    assert upos == ["NOUN", "VERB", "NOUN", None, "ADJ", None]
    assert xpos == ["NN", "VBZ", "NN", None, "JJ", None]
    # words whose span includes whitespace (stanza does this, e.g. "New York" in some models):
    # whitespace never votes, and a whitespace-only token stays untagged even when covered
    u, _ = pos_lib.align_words([(0, 4, "PROPN", "NNP"), (4, 6, "NOUN", "NN")], "ab  cd",
                               np.array([[2, 6], [2, 4]]))
    assert u == ["NOUN", None]
    # xpos: majority among characters carrying the winning upos
    u, x = pos_lib.align_words([(0, 1, "NOUN", "NN"), (1, 3, "NOUN", "NNS")], "abc", np.array([[0, 3]]))
    assert (u, x) == (["NOUN"], ["NNS"])


def test_align_words_half_of_the_characters_rule():
    # "abcdef": the winning tag must cover >= half of the token's non-whitespace characters
    words = [(0, 2, "NOUN", "NN"), (2, 3, "VERB", "VB"), (3, 4, "ADJ", "JJ")]
    u, x = pos_lib.align_words(words, "abcdef", np.array([[0, 6], [0, 4], [0, 3], [1, 4]]))
    # [0,6): NOUN covers 2 of 6 < half -> untagged; [0,4): 2 of 4 = half -> kept; [0,3): 2 of 3;
    # [1,4): 1 char each, the first reached (NOUN) wins with 1 of 3 < half -> untagged
    assert u == [None, "NOUN", "NOUN", None] and x == [None, "NN", "NN", None]
    # a leading space is not a character of the token for the rule (" ab" fully covered)
    u, _ = pos_lib.align_words([(1, 3, "NOUN", "NN")], " ab", np.array([[0, 3]]))
    assert u == ["NOUN"]


# ------------------------------------------------------------------ pos="stanza" end to end (mocked)

class _FakePipeline:
    """Stands in for stanza.Pipeline: tags \\w+ words NOUN/NN (DET for 'the'), punctuation PUNCT."""
    calls = 0

    def __init__(self, *a, **k):
        pass

    def __call__(self, text):
        from stanza.models.common.doc import Document
        type(self).calls += 1
        assert EOS not in text, "eos markers must be blanked before tagging"
        rows = []
        for k, m in enumerate(re.finditer(r"\w+|[^\w\s]", text)):
            w = m.group()
            u, x = (("DET", "DT") if w.lower() == "the" else ("NOUN", "NN")) if w[0].isalnum() \
                else ("PUNCT", ".")
            rows.append({"id": k + 1, "text": w, "upos": u, "xpos": x,
                         "start_char": m.start(), "end_char": m.end()})
        return Document([rows], text=text)


def test_pos_stanza_runs_once_and_caches(bpe, tmp_path, monkeypatch):
    import stanza
    monkeypatch.setattr(stanza, "Pipeline", _FakePipeline)
    _FakePipeline.calls = 0
    text = f"The team plays.{EOS}The cup"
    ids, offs = _scored(bpe, text)
    df = ann.annotate_tokens(ids, text, offs, bpe, None, "stanza", cache_dir=tmp_path, required=True)
    assert _FakePipeline.calls == 1 and list((tmp_path / "stanza").glob("*.json"))
    strs = bpe.decode_tokens(ids)
    for row in df.iter_rows(named=True):
        s = strs[row["position"]]
        if row["token_id"] == bpe.eos_id:
            assert row["upos"] is None
        elif s.strip().lower() == "the":
            assert (row["upos"], row["pos_group"]) == ("DET", "function")
    assert df["doc_id"].to_list()[-3:] == [1, 1, 1]          # "The cup" + final eos: doc 1
    assert df.filter(pl.col("token_id") == bpe.eos_id)["doc_id"].to_list() == [0, 1]

    def boom(*a, **k):
        raise AssertionError("stanza rerun despite cache")
    monkeypatch.setattr(stanza, "Pipeline", boom)
    again = ann.annotate_tokens(ids, text, offs, bpe, None, "stanza", cache_dir=tmp_path, required=True)
    assert again.equals(df)


def test_pos_stanza_offline_falls_back_or_raises(bpe, tmp_path, monkeypatch, caplog):
    import requests
    import stanza

    def offline(*a, **k):
        raise requests.exceptions.ConnectionError("Failed to resolve 'raw.githubusercontent.com'")
    monkeypatch.setattr(stanza, "Pipeline", offline)
    text = "The team plays."
    ids, offs = _scored(bpe, text)
    with caplog.at_level(logging.WARNING):
        df = ann.annotate_tokens(ids, text, offs, bpe, None, "stanza", cache_dir=tmp_path)
    msgs = [r.getMessage() for r in caplog.records if "stanza" in r.getMessage()]
    assert len(msgs) == 1 and "\n" not in msgs[0] and "ConnectionError" in msgs[0]
    assert df["upos"].null_count() == df.height and set(df["pos_group"]) == {"other"}
    assert df["upos"].dtype == pl.String
    with pytest.raises(SeedKLError, match="--pos=stanza.*cannot download"):
        ann.annotate_tokens(ids, text, offs, bpe, None, "stanza", cache_dir=tmp_path, required=True)
    # no raw text (ids-only input): same policy
    with pytest.raises(SeedKLError, match="raw text"):
        ann.annotate_tokens(ids, None, None, bpe, None, "stanza", required=True)


def test_pos_stanza_not_installed(monkeypatch, tmp_path):
    import sys
    monkeypatch.setitem(sys.modules, "stanza", None)           # import stanza -> ImportError
    with pytest.raises(pos_lib.StanzaUnavailable, match="not installed"):
        pos_lib.stanza_words("abc", tmp_path)


# ------------------------------------------------------------------ shared Pile sample, pos=FILE

def test_pile_sample_penn_file():
    tok = _neox()
    ids = np.load(PILE / "input_ids.npy")
    entries = json.loads((PILE / "penn_pos_per_token.json").read_text())
    df = ann.annotate_tokens(ids, None, None, tok, PILE / "pile_validation_token_counts.npy",
                             str(PILE / "penn_pos_per_token.json"))
    assert df.height == len(ids) - 1 and df["position"].to_list() == list(range(1, len(ids)))
    # row for position p carries file entry p (no off-by-one) and keeps the Penn tag as xpos
    assert df["token_str"].to_list() == [e[0] for e in entries[1:]]
    assert df["xpos"].to_list() == [None if e[1] == "UNK" else e[1] for e in entries[1:]]
    untagged = df["upos"].null_count() / df.height
    assert 0.15 < untagged < 0.21, untagged
    the = df.filter(pl.col("token_str").str.strip_chars().str.to_lowercase() == "the")
    assert the.height > 50 and set(the["upos"]) == {"DET"}
    fw = df.filter(pl.col("token_str").is_in([" the", " of", " and", " a", " for", " with", " our", " we"]))
    assert (fw["pos_group"] == "function").mean() > 0.9
    nouns = df.filter(pl.col("xpos").is_in(["NN", "NNS", "NNP", "VB", "JJ", "RB"]))
    assert set(nouns["pos_group"]) == {"content"}
    # context_upos is the previous row's upos; the first row follows the leading eos
    assert df["context_upos"][0] is None
    assert df["context_upos"][1:].to_list() == df["upos"][:-1].to_list()
    # documents: decoding each doc's non-eos ids gives back that document's text
    docs = [d for d in (PILE / "input_text.txt").read_text(encoding="utf-8").split(EOS) if d]
    assert df["doc_id"].max() == len(docs) - 1
    for k, d in enumerate(docs):
        got = df.filter((pl.col("doc_id") == k) & (pl.col("token_id") != 0))["token_id"].to_list()
        assert tok.backend.decode(got) == d


def test_pile_sample_paper_categories_counts():
    """n_tokens of the paper's categories on the shared sample with its Penn file and counts (issue 10)."""
    if not PILE.is_dir():
        pytest.skip("../shared is absent")
    tok = _neox()
    ids = np.load(PILE / "input_ids.npy")
    df = ann.annotate_tokens(ids, None, None, tok, PILE / "pile_validation_token_counts.npy",
                             str(PILE / "penn_pos_per_token.json"))
    xpos = dict(zip(*np.unique(df["xpos"].drop_nulls().to_numpy(), return_counts=True)))
    assert {t: xpos[t] for t in ("NN", "NNP", "IN", "JJ", "DT", "NNS", "MD", "PRP")} == \
        {"NN": 588, "NNP": 472, "IN": 400, "JJ": 333, "DT": 304, "NNS": 270, "MD": 40, "PRP": 55}
    grouped = df["paper_pos"].value_counts().drop_nulls()
    grouped = dict(zip(grouped["paper_pos"].to_list(), grouped["count"].to_list()))
    assert grouped == {"Nouns": 1335, "Verbs": 478, "JJ": 333, "IN": 400, "DT": 304, "MD": 40, "PRP": 55}
    assert df.filter(pl.col("xpos") == "VBP")["paper_pos"].null_count() == 60   # VBP is excluded
    assert df["context_xpos"][0] is None and df["context_xpos"][1:].to_list() == df["xpos"][:-1].to_list()
    merged = ann.freq_bin(df["count"].to_numpy(), top=ann.PAPER_TOP_BIN)
    n = {b: merged.count(b) for b in ("100-999", "1e3-1e4", "1e4-1e5", ">=1e5")}
    assert n == {"100-999": 171, "1e3-1e4": 1025, "1e4-1e5": 1102, ">=1e5": 2364}
    assert ann.freq_bin([99_999, 100_000, 10**7]) == ["1e4-1e5", "1e5-1e6", "1e7-1e8"]   # default: decades
    # the same counts as summary.parquet's n_tokens (the study's per-category rows), compat's merged bin
    from seedkl_jax.analysis.aggregate import GroupResult, summarize
    kl = np.random.default_rng(0).random((df.height, 2, 2)).astype(np.float32)
    s = summarize([GroupResult("70m", 0, [1, 3], {"kl": kl})],
                  df.with_columns(pl.Series("freq_bin", merged)), n_boot=5).filter(pl.col("metric") == "seeds")
    n_of = lambda kind: dict(s.filter(pl.col("category_kind") == kind).select("category", "n_tokens").iter_rows())
    assert {k: n_of("freq_bin")[k] for k in n} == n
    assert n_of("paper_pos") == grouped
    assert {t: n_of("xpos")[t] for t in ("NN", "NNP", "MD", "PRP")} == {"NN": 588, "NNP": 472, "MD": 40, "PRP": 55}


# ------------------------------------------------------------------ frequency

def test_freq_bins_on_shared_counts():
    tok = _neox()
    raw = np.load(PILE / "pile_validation_token_counts.npy")
    counts = ann.load_counts(PILE / "pile_validation_token_counts.npy", tok.vocab_size)
    assert counts.dtype == np.int64 and (counts == 0).sum() == (raw < 1).sum() > 0
    the = tok.backend.token_to_id("Ġthe")
    unseen = int(np.flatnonzero(raw < 1)[0])
    ids = np.array([0, the, unseen, the, 0])
    df = ann.annotate_tokens(ids, None, None, tok, counts, "none")
    assert df["count"][0] == round(raw[the]) and df["count"][0] >= 10**6
    top = ann.FREQ_BIN_LABELS.index(ann.freq_bin([counts.max()])[0])
    assert ann.FREQ_BIN_LABELS.index(df["freq_bin"][0]) >= top - 1      # "the": top two decades
    assert df["freq_bin"][1] == "0" and df["count"][1] == 0
    # every label brackets its count (labels parsed independently of the binning code)
    sample = np.concatenate([counts[:2000], [0, 1, 9, 10, 99, 100, 999, 1000, 10**6 - 1, 10**6]])
    for c, lab in zip(sample.tolist(), ann.freq_bin(sample)):
        if lab == "0":
            assert c == 0
            continue
        lo, hi = (float(v) for v in lab.split("-"))
        hi = hi + 1 if "e" not in lab else hi
        assert lo <= c < hi, (c, lab)
    assert ann.freq_bin([0, 1, 9, 10, 100, 999, 1000, 12345]) == \
        ["0", "1-9", "1-9", "10-99", "100-999", "100-999", "1e3-1e4", "1e4-1e5"]
    labels = list(ann.FREQ_BIN_LABELS)
    assert labels[:9] == sorted(labels[:9])                     # string order = numeric order < 1e10


def test_counts_from_ids_default():
    tok = _tiny_bpe()
    ids = np.array([tok.eos_id, 5, 5, 7, tok.eos_id])
    df = ann.annotate_tokens(ids, None, None, tok, None, "none")
    assert df["count"].to_list() == [2, 2, 1, 2]
    assert df["freq_bin"].to_list() == ["1-9"] * 4


def test_wrong_length_counts(tmp_path):
    tok = _tiny_bpe()
    bad = tmp_path / "counts.npy"
    np.save(bad, np.ones(tok.vocab_size + 3))
    ids = np.array([tok.eos_id, 5, tok.eos_id])
    with pytest.raises(SeedKLError) as e:
        ann.annotate_tokens(ids, None, None, tok, bad, "none")
    msg = str(e.value)
    assert str(bad) in msg and str(tok.vocab_size + 3) in msg and str(tok.vocab_size) in msg
    with pytest.raises(SeedKLError, match="not found"):
        ann.annotate_tokens(ids, None, None, tok, tmp_path / "missing.npy", "none")
    with pytest.raises(SeedKLError, match="counts array"):
        ann.annotate_tokens(ids, None, None, tok, np.ones(3), "none")


def test_counts_are_checked_before_use(tmp_path):
    """Negative, all-zero or non-numeric counts are one named error at load (study/run.py loads them in
    `prepare`, before any group); a too-long file never suggests a --vocab_size that would then fail."""
    V = 50
    def err(arr):
        f = tmp_path / "c.npy"
        np.save(f, arr)
        with pytest.raises(SeedKLError) as e:
            ann.load_counts(f, V)
        assert str(f) in str(e.value)
        return str(e.value)
    neg = np.ones(V)
    neg[7] = -3
    assert "negative" in err(neg) and "id 7" in err(neg)
    assert "every count is 0" in err(np.zeros(V)) and "every count is 0" in err(np.full(V, 0.5))
    assert "finite" in err(np.full(V, np.nan)) and "finite" in err(np.ones(V, bool))
    assert "--vocab_size" not in err(np.ones(V + 4))
    assert "--vocab_size=46" in err(np.ones(V - 4))
    ok = ann.load_counts(tmp_path / "ok.npy", V) if np.save(tmp_path / "ok.npy", np.arange(V) + 1e-300) is None else None
    assert ok[0] == 0 and ok[1] == 1 and ok.dtype == np.int64


# ------------------------------------------------------------------ small definitions

def test_doc_ids():
    E = 0
    assert ann.doc_ids(np.array([E, 1, 2, E, 3, E, E]), E).tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert ann.doc_ids(np.array([1, E, 2]), E).tolist() == [0, 0, 1]
    assert ann.doc_ids(np.array([E, E, 1, 2, E, 3]), E).tolist() == [0, 0, 0, 0, 0, 1]


def test_surprisal_bin():
    x = np.array([0, 0.5, 1, 1.99, 2, 3.9, 4, 7.99, 8, 100, -1e-7, np.nan])
    assert ann.surprisal_bin(x) == ["[0,1)", "[0,1)", "[1,2)", "[1,2)", "[2,4)", "[2,4)", "[4,8)",
                                    "[4,8)", "8+", "8+", "[0,1)", None]
    assert ann.surprisal_bin(3.0) == "[2,4)" and ann.surprisal_bin(float("nan")) is None


def test_pos_group_sets():
    assert ann.FUNCTION_UPOS == {"ADP", "AUX", "CCONJ", "DET", "PART", "PRON", "SCONJ"}
    assert ann.CONTENT_UPOS == {"NOUN", "PROPN", "VERB", "ADJ", "ADV"}
    assert [ann.pos_group(u) for u in ["DET", "NOUN", "NUM", "PUNCT", None]] == \
        ["function", "content", "other", "other", "other"]


def test_pos_file_formats_and_errors(tmp_path):
    tok = _tiny_bpe()
    text = "The team plays."
    ids, _ = _scored(tok, text)
    strs = tok.decode_tokens(ids)
    f = tmp_path / "tags.json"
    tags = [[s, "UNK"] for s in strs]
    tags[1] = [strs[1], "DT"]                      # Penn -> DET, xpos kept
    tags[2] = [strs[2], "NOUN"]                    # already UPOS
    tags[3] = [strs[3], "VERB", "VBZ"]             # explicit pair
    f.write_text(json.dumps(tags))
    df = ann.annotate_tokens(ids, None, None, tok, None, str(f))
    assert df["upos"].to_list()[:3] == ["DET", "NOUN", "VERB"]
    assert df["xpos"].to_list()[:3] == ["DT", None, "VBZ"]
    assert df["upos"].to_list()[3:] == [None] * (len(ids) - 4)
    assert df["context_upos"].to_list()[:3] == [None, "DET", "NOUN"]
    f.write_text(json.dumps(tags[:-1]))
    with pytest.raises(SeedKLError, match=f"{len(ids) - 1} entries.*{len(ids)} tokens"):
        ann.annotate_tokens(ids, None, None, tok, None, str(f))
    tags[1] = [strs[1], "BOGUS"]
    f.write_text(json.dumps(tags))
    with pytest.raises(SeedKLError, match="BOGUS"):
        ann.annotate_tokens(ids, None, None, tok, None, str(f))
    with pytest.raises(SeedKLError, match="neither 'stanza', 'none'"):
        ann.annotate_tokens(ids, None, None, tok, None, str(tmp_path / "nope.json"))


def test_bad_ids_and_offsets():
    tok = _tiny_bpe()
    with pytest.raises(SeedKLError, match="outside"):
        ann.annotate_tokens(np.array([0, tok.vocab_size]), None, None, tok, None, "none")
    with pytest.raises(SeedKLError, match=">= 2 tokens"):
        ann.annotate_tokens(np.array([0]), None, None, tok, None, "none")
    ids, offs = _scored(tok, "The team")
    with pytest.raises(SeedKLError, match="offsets: shape"):
        ann.annotate_tokens(ids, "The team", offs[:-1], tok, None, "stanza")


# ------------------------------------------------------------------ word boundaries (issue 20)

def test_word_position_on_the_pythia_tokenizer(tmp_path):
    """A hand-checked sentence: 'Ġ' (a leading space) or a document start begins a word; the pieces after
    it, punctuation glued to a word and the continuation of a hyphenated word are inside; eos and the
    newline are no part of a word (null). Same labels from the text's offsets and from the ids alone."""
    _need_shared()
    from seedkl_jax.data.text import read_text
    from seedkl_jax.data.tokenizer import load_tokenizer

    tok = load_tokenizer(str(NEOX))
    (tmp_path / "t.txt").write_text("The unbelievably tokenized café, re-used.\nNew line<|endoftext|>Second doc",
                                    encoding="utf-8")
    t = read_text(tmp_path / "t.txt", tok)
    strs = tok.decode_tokens(t.ids)
    want = [("<|endoftext|>", None), ("The", "begin"), (" unbelie", "begin"), ("v", "inside"), ("ably", "inside"),
            (" token", "begin"), ("ized", "inside"), (" café", "begin"), (",", "inside"), (" re", "begin"),
            ("-", "inside"), ("used", "inside"), (".", "inside"), ("\n", None), ("New", "begin"),
            (" line", "begin"), ("<|endoftext|>", None), ("Second", "begin"), (" doc", "begin"),
            ("<|endoftext|>", None)]
    assert list(zip(strs, ann.word_positions(t.ids, strs, tok, t.text, t.offsets))) == want
    assert ann.word_positions(t.ids, strs, tok) == [w for _, w in want]
    meta = ann.annotate_tokens(t.ids, t.text, t.offsets, tok, None, "none")
    assert meta["word_position"].to_list() == [w for _, w in want[1:]]   # row p = prediction of token p


def test_word_position_splits_one_characters_byte_tokens():
    """Byte fragments of one character share its span: only the first can begin a word."""
    tok = _tiny_bpe()
    text = "The 日 team"
    ids, offs = _scored(tok, text)
    strs = tok.decode_tokens(ids)
    got = ann.word_positions(ids, strs, tok, text, offs)
    frag = [k for k, (a, b) in enumerate(offs.tolist()) if text[a:b] == "日"]
    assert len(frag) >= 2, strs                               # 日 is 3 bytes, unseen in training
    assert got[frag[0]] == "begin" and {got[k] for k in frag[1:]} == {"inside"}


def test_word_position_wordpiece(tmp_path):
    """WordPiece: '##' pieces are inside, a word after whitespace begins one, punctuation glued to a word is
    inside (as for BPE) when the text is known; [CLS] is null and each document's first token begins."""
    from seedkl_jax.data.text import read_text
    from seedkl_jax.data.tokenizer import load_tokenizer

    (tmp_path / "tok").mkdir()
    vocab = tmp_path / "tok" / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "##s", "run",
                                "##ning", "dog", ",", "."]) + "\n")
    tok = load_tokenizer(str(vocab))
    (tmp_path / "a.txt").write_text("the cats running, the dog.<|endoftext|>dogs run", encoding="utf-8")
    t = read_text(tmp_path / "a.txt", tok, masked_lm=True)
    strs = [tok.backend.id_to_token(int(i)) for i in t.ids]
    assert strs == ["[CLS]", "the", "cat", "##s", "run", "##ning", ",", "the", "dog", ".", "dog", "##s", "run"]
    want = [None, "begin", "begin", "inside", "begin", "inside", "inside", "begin", "begin", "inside",
            "begin", "inside", "begin"]
    dec = tok.decode_tokens(t.ids)
    assert ann.word_positions(t.ids, dec, tok, t.text, t.offsets, t.doc_ids) == want
    # ids alone: '##' still inside; any other piece begins a word (BERT splits at punctuation)
    assert ann.word_positions(t.ids, dec, tok, docs=t.doc_ids) == [None if w is None else
                                                                   "inside" if s.startswith("##") else "begin"
                                                                   for s, w in zip(strs, want)]
