"""Tokenizer loading: the NeoX fixture reproduces the paper's ids; real vocab size; eos; errors."""
import json
import shutil

import numpy as np
import pytest
from conftest import TINY_WORDS, shared_path, tiny_tokenizer

from seedkl_jax.data.tokenizer import load_tokenizer
from seedkl_jax.errors import SeedKLError


def test_neox_fixture_reproduces_pile_sample_ids(shared_or_skip):
    tok = load_tokenizer(str(shared_path("fixtures/neox-tokenizer/tokenizer.json")))
    text = shared_path("fixtures/pile-sample/input_text.txt").read_text(encoding="utf-8")
    expected = np.load(shared_path("fixtures/pile-sample/input_ids.npy"))
    ids, offsets = tok.encode(text)
    assert ids.dtype == np.int32 and offsets.shape == (len(ids), 2)
    np.testing.assert_array_equal(ids, expected[1:-1])
    assert tok.eos_id == 0 == expected[0] == expected[-1]
    # offsets are character spans, in order, each covering its token's text (minus a leading space)
    assert np.all(np.diff(offsets[:, 0]) >= 0) and np.all(offsets[:, 1] <= len(text))
    strs = tok.decode_tokens(ids)
    assert all(s.lstrip(" ") == text[a:b] or "\ufffd" in s for s, (a, b) in zip(strs[:500], offsets[:500]))


def test_neox_vocab_size_counts_added_tokens(shared_or_skip):
    path = shared_path("fixtures/neox-tokenizer/tokenizer.json")
    raw = json.loads(path.read_text())
    ids = set(raw["model"]["vocab"].values()) | {t["id"] for t in raw["added_tokens"]}
    tok = load_tokenizer(str(path.parent))  # a directory holding tokenizer.json works too
    assert tok.vocab_size == max(ids) + 1 > len(raw["model"]["vocab"])
    assert tok.decode_tokens([0, tok.vocab_size - 1])[0] == "<|endoftext|>"


def test_checkpoint_dir_file_and_cache_entry(hf_checkpoint, tmp_path):
    from seedkl_jax.api import load

    ckpt = hf_checkpoint(tokenizer="tiny")
    by_dir, by_file = load_tokenizer(str(ckpt)), load_tokenizer(str(ckpt / "tokenizer.json"))
    assert by_dir.source == by_file.source == str(ckpt / "tokenizer.json")
    assert by_dir.vocab_size == len(TINY_WORDS) + 2 < load(str(ckpt)).config.vocab_size
    text = "the cat sat on the mat"
    ids, offsets = by_dir.encode(text)
    assert [text[a:b] for a, b in offsets] == text.split() == by_dir.decode_tokens(ids)
    assert ids.tolist() == [TINY_WORDS.index(w) + 2 for w in text.split()]
    assert by_dir.eos_id == 0


def test_eos_from_tokenizer_config(tmp_path):
    path = tiny_tokenizer(tmp_path / "tokenizer.json", words=["hello", "</s>"])
    raw = json.loads(path.read_text())
    raw["model"]["vocab"].pop("<|endoftext|>")
    raw["added_tokens"] = []
    path.write_text(json.dumps(raw))
    with pytest.raises(SeedKLError, match="no <\\|endoftext\\|> token"):
        load_tokenizer(str(path))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "</s>"}}))
    assert load_tokenizer(str(tmp_path)).eos_id == 3


def test_bad_tokenizer_sources(tmp_path):
    with pytest.raises(SeedKLError, match="no tokenizer.json, vocab.txt or vocab.json \+ merges.txt in this directory"):
        load_tokenizer(str(tmp_path))
    with pytest.raises(SeedKLError, match="no such file"):
        load_tokenizer(str(tmp_path / "missing" / "tokenizer.json"))
    with pytest.raises(SeedKLError, match="no such directory"):
        load_tokenizer(str(tmp_path / "missing" / "dir"))
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(SeedKLError, match="not a valid tokenizer.json"):
        load_tokenizer(str(tmp_path))
    with pytest.raises(SeedKLError, match="hub was unreachable"):  # HF_HUB_OFFLINE=1 in tests
        load_tokenizer("EleutherAI/pythia-70m", "step1000")


def test_hub_tokenizer_from_local_hf_cache(tmp_path, monkeypatch):
    """Offline, a revision already in huggingface_hub's local cache still loads."""
    import huggingface_hub

    snap = tmp_path / "snap"
    snap.mkdir()
    tiny_tokenizer(snap / "tokenizer.json")
    seen = {}

    def snapshot_download(repo_id, revision=None, local_files_only=False, **kw):
        seen.update(repo_id=repo_id, revision=revision, local_files_only=local_files_only)
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    tok = load_tokenizer("Org/tiny@step3")
    assert seen == {"repo_id": "Org/tiny", "revision": "step3", "local_files_only": True}
    assert tok.source == str(snap / "tokenizer.json") and tok.eos_id == 0
    shutil.rmtree(snap)


def test_bert_wordpiece_and_gpt2_bpe_vocab_files(tmp_path):
    """MultiBERTs ship vocab.txt (WordPiece), GPT-2 repos vocab.json + merges.txt (byte-level BPE)."""
    import tokenizers
    from conftest import wordpiece_vocab

    wp = tmp_path / "bert"
    wp.mkdir()
    wordpiece_vocab(wp / "vocab.txt", ("hello", "world", "##s", "!"))
    tok = load_tokenizer(str(wp))
    ids, offsets = tok.encode("Hello worlds!")
    assert tok.decode_tokens(ids) == ["hello", "world", "##s", "!"] and offsets.tolist() == [[0, 5], [6, 11], [11, 12], [12, 13]]
    assert (tok.vocab_size, tok.eos_id, tok.cls_id, tok.sep_id, tok.mask_id, tok.pad_id) == (9, 3, 2, 3, 4, 0)
    (wp / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    assert load_tokenizer(str(wp)).decode_tokens(load_tokenizer(str(wp)).encode("Hello")[0]) == ["[UNK]"]

    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(["the cat sat on the mat"] * 20, vocab_size=300, special_tokens=["<|endoftext|>"])
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    bpe.save_model(str(gpt2))
    tok = load_tokenizer(str(gpt2))
    assert tok.eos_id == bpe.token_to_id("<|endoftext|>") and tok.cls_id is None
    assert tok.encode("the cat<|endoftext|>")[0].tolist() == bpe.encode("the cat<|endoftext|>").ids
    assert tok.encode("the cat<|endoftext|>")[0][-1] == tok.eos_id
