"""Reading `--text`: eos around and between documents (as the paper's ids), folders, .npy ids, bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seedkl_jax.data.text import EOS_TEXT, read_text
from seedkl_jax.errors import SeedKLError

from conftest import SHARED, tiny_tokenizer

NEOX_TOKENIZER = SHARED / "fixtures" / "neox-tokenizer" / "tokenizer.json"
PILE = SHARED / "fixtures" / "pile-sample"
WORDS = tuple("the a cat dog sat ran on under mat hat big small red and . , it is was he she "
              "saw ate old new green blue fast slow tree house sun moon".split())


def tiny_tokenizer_file(folder: Path, extra_words: tuple[str, ...] = ()) -> Path:
    """conftest's word-level tokenizer (eos = 0) over WORDS (+ extra): the offline stand-in for NeoX."""
    folder.mkdir(parents=True, exist_ok=True)
    return tiny_tokenizer(folder / "tokenizer.json", words=WORDS + tuple(extra_words))


@pytest.fixture(scope="module")
def tiny_tok(tmp_path_factory):
    from seedkl_jax.data.tokenizer import load_tokenizer

    return load_tokenizer(str(tiny_tokenizer_file(tmp_path_factory.mktemp("tok"))))


def _neox():
    if not NEOX_TOKENIZER.is_file():
        pytest.skip("../shared (NeoX tokenizer fixture) not present")
    from seedkl_jax.data.tokenizer import load_tokenizer

    return load_tokenizer(str(NEOX_TOKENIZER))


def test_pile_sample_gives_the_papers_ids():
    tok = _neox()
    t = read_text(PILE / "input_text.txt", tok)
    want = np.load(PILE / "input_ids.npy")
    np.testing.assert_array_equal(t.ids, want)
    assert t.ids.dtype == np.int32 and t.n_positions == len(want) - 1
    # offsets point into the text: every eos covers a separator (or is an empty span at the ends),
    # and other tokens' spans are in order and inside the text.
    raw = (PILE / "input_text.txt").read_text(encoding="utf-8")
    assert t.text == raw
    eos = t.ids == tok.eos_id
    assert tuple(t.offsets[0]) == (0, 0) and tuple(t.offsets[-1]) == (len(raw), len(raw))
    for a, b in t.offsets[eos][1:-1]:
        assert raw[a:b] == EOS_TEXT
    starts = t.offsets[:, 0]
    assert (np.diff(starts) >= 0).all() and t.offsets.max() <= len(raw)


def test_file_documents_and_offsets(tmp_path, tiny_tok):
    enc = lambda s: list(tiny_tok.encode(s)[0])  # noqa: E731
    doc_a, doc_b = "the cat sat on the mat .", "a dog ran"
    f = tmp_path / "t.txt"
    f.write_text(f"{doc_a}{EOS_TEXT}{doc_b}", encoding="utf-8")
    t = read_text(f, tiny_tok)
    assert list(t.ids) == [0] + enc(doc_a) + [0] + enc(doc_b) + [0]
    assert t.text == f"{doc_a}{EOS_TEXT}{doc_b}" and t.offsets.shape == (len(t.ids), 2)
    words = [t.text[a:b] for a, b in t.offsets]
    assert words == ["", *doc_a.split(), EOS_TEXT, *doc_b.split(), ""]


def test_folder_of_documents(tmp_path, tiny_tok):
    enc = lambda s: list(tiny_tok.encode(s)[0])  # noqa: E731
    d = tmp_path / "docs"
    d.mkdir()
    (d / "02.txt").write_text("a dog ran\n", encoding="utf-8")
    (d / "01.txt").write_text("the cat sat", encoding="utf-8")
    (d / "notes.md").write_text("ignored", encoding="utf-8")
    t = read_text(d, tiny_tok)
    assert list(t.ids) == [0] + enc("the cat sat") + [0] + enc("a dog ran\n") + [0]
    assert t.text == "the cat sat" + EOS_TEXT + "a dog ran\n"


def test_folder_entry_named_txt_that_is_not_a_file(tmp_path, tiny_tok):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "01.txt").write_text("the cat sat", encoding="utf-8")
    (d / "x.txt").mkdir()
    with pytest.raises(SeedKLError, match=r"x\.txt is not a regular file"):
        read_text(d, tiny_tok)


def test_npy_ids_used_as_given(tmp_path, tiny_tok):
    ids = np.array([3, 4, 0, 5], np.int64)
    np.save(tmp_path / "ids.npy", ids)
    t = read_text(tmp_path / "ids.npy", tiny_tok)
    assert list(t.ids) == [3, 4, 0, 5] and t.text is None and t.offsets is None
    assert t.fingerprint() != read_text(_save(tmp_path / "b.npy", [3, 4, 0, 6]), tiny_tok).fingerprint()


def _save(path, ids):
    np.save(path, np.asarray(ids))
    return path


@pytest.mark.parametrize("content", ["", "   \n", EOS_TEXT, f"\n{EOS_TEXT}  {EOS_TEXT}"])
def test_empty_text_is_refused(tmp_path, tiny_tok, content):
    f = tmp_path / "empty.txt"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(SeedKLError, match="empty"):
        read_text(f, tiny_tok)


def test_bad_inputs(tmp_path, tiny_tok):
    with pytest.raises(SeedKLError, match="no such file"):
        read_text(tmp_path / "nope.txt", tiny_tok)
    (tmp_path / "d").mkdir()
    with pytest.raises(SeedKLError, match="no \\*.txt"):
        read_text(tmp_path / "d", tiny_tok)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(SeedKLError, match="not UTF-8"):
        read_text(tmp_path / "latin1.txt", tiny_tok)
    with pytest.raises(SeedKLError, match="empty"):
        read_text(_save(tmp_path / "one.npy", [3]), tiny_tok)
    with pytest.raises(SeedKLError, match="outside the tokenizer's vocab"):
        read_text(_save(tmp_path / "big.npy", [0, 3, 10_000]), tiny_tok)
    with pytest.raises(SeedKLError, match="1-D integer"):
        read_text(_save(tmp_path / "f.npy", [0.5, 1.0]), tiny_tok)


def test_masked_lm_layout(tmp_path):
    """[CLS] + every document's wordpieces, no separators; doc_ids per token; offsets into the text."""
    from conftest import wordpiece_vocab

    from seedkl_jax.data.text import read_text
    from seedkl_jax.data.tokenizer import load_tokenizer

    wordpiece_vocab(tmp_path / "vocab.txt", ("the", "cat", "sat", "dog", "ran", ".", "##s"))
    tok = load_tokenizer(str(tmp_path))
    assert (tok.cls_id, tok.sep_id, tok.mask_id, tok.pad_id, tok.eos_id) == (2, 3, 4, 0, 3)
    f = tmp_path / "t.txt"
    f.write_text("The cats sat.<|endoftext|><|endoftext|>A dog ran.", encoding="utf-8")
    t = read_text(f, tok, masked_lm=True)
    assert tok.decode_tokens(t.ids) == ["[CLS]", "the", "cat", "##s", "sat", ".", "[UNK]", "dog", "ran", "."]
    assert t.doc_ids.tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]  # the empty document is dropped
    assert t.text == "The cats sat.\n\nA dog ran."
    assert [t.text[a:b] for a, b in t.offsets[1:]] == ["The", "cat", "s", "sat", ".", "A", "dog", "ran", "."]
    with pytest.raises(SeedKLError, match="masked LM needs document boundaries"):
        np.save(tmp_path / "ids.npy", t.ids)
        read_text(tmp_path / "ids.npy", tok, masked_lm=True)
    with pytest.raises(SeedKLError, match="not a WordPiece tokenizer"):
        read_text(f, load_tokenizer(str(tiny_tokenizer_file(tmp_path / "bpe"))), masked_lm=True)
