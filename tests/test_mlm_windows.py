"""Masked-LM windows (kernels/windows.mlm_windows), window defaults per family, and compare() on
loaded BERT / GPT-2 models (the family-agnostic path of the API)."""
import numpy as np
import pytest

from seedkl_jax.errors import SeedKLError
from seedkl_jax.kernels.windows import MASKED_PASSES, MLMSpec, default_window, mlm_windows

CLS, SEP, MASK, PAD = 2, 3, 4, 0


def _text(doc_lengths, rng):
    ids = [CLS] + rng.integers(5, 50, sum(doc_lengths)).tolist()
    docs = [0] + [d for d, n in enumerate(doc_lengths) for _ in range(n)]
    return np.asarray(ids), np.asarray(docs)


@pytest.mark.parametrize("mode", ["unmasked", "masked"])
@pytest.mark.parametrize("lengths, window", [([3, 9, 1], 6), ([20], 512), ([510, 511, 2], 512)])
def test_every_wordpiece_once_in_its_own_document(mode, lengths, window):
    ids, docs = _text(lengths, np.random.default_rng(len(lengths)))
    w = mlm_windows(ids, docs, MLMSpec(mode, CLS, SEP, MASK, PAD), window)
    assert w.ids.shape[1] <= window and w.out_shape == (len(ids) - 1,)
    kept = np.sort(w.dest[w.mask])
    assert np.array_equal(kept, np.arange(len(ids) - 1))
    for k in range(w.num_windows):
        n = int(w.valid[k].sum()) - 2  # wordpieces of this chunk
        assert w.ids[k, 0] == CLS and w.ids[k, n + 1] == SEP and np.all(w.ids[k, n + 2:] == PAD)
        assert not w.mask[k, 0] and not w.mask[k, n + 1:].any()  # [CLS]/[SEP]/padding never scored
        slots = np.flatnonzero(w.mask[k])
        assert np.all(w.targets[k, slots] == ids[w.dest[k, slots] + 1])  # the scored wordpiece itself
        assert len(set(docs[w.starts[k]:w.starts[k] + n])) == 1            # one document per window
        if mode == "unmasked":
            assert np.array_equal(w.ids[k, 1:n + 1], ids[w.starts[k]:w.starts[k] + n]) and w.mask[k, 1:n + 1].all()
        else:  # the kept slots are [MASK] in the input, every other wordpiece is as in the text
            assert np.all(w.ids[k, slots] == MASK)
            other = np.setdiff1d(np.arange(1, n + 1), slots)
            assert np.array_equal(w.ids[k, other], ids[w.starts[k] + other - 1])
    n_chunks = sum(-(-n // (window - 2)) for n in lengths)
    if mode == "unmasked":
        assert w.num_windows == n_chunks
    else:
        assert w.num_windows <= n_chunks * MASKED_PASSES


def test_window_defaults_follow_the_context():
    assert default_window(2048, True) == (2048, 1024) and default_window(1024, True) == (1024, 512)
    assert default_window(512, False) == (512, 0) and default_window(40, False) == (40, 0)
    assert default_window(2048, True, 512) == (512, 256) and default_window(2048, True, 512, 100) == (512, 100)
    assert default_window(512, False, 128, 64) == (128, 0)


def test_bad_mlm_inputs():
    with pytest.raises(SeedKLError, match="--mlm_scoring='half'"):
        MLMSpec("half", CLS, SEP, MASK, PAD)
    ids, docs = _text([4], np.random.default_rng(0))
    with pytest.raises(SeedKLError, match="no room"):
        mlm_windows(ids, docs, MLMSpec("unmasked", CLS, SEP, MASK, PAD), window=2)
    with pytest.raises(SeedKLError, match="doc_ids"):
        mlm_windows(ids, docs[:-1], MLMSpec("unmasked", CLS, SEP, MASK, PAD))


def test_compare_loaded_models_of_each_family(family_checkpoint, tmp_path):
    """api.compare on BERT seeds (scoring spec from the tokenizer beside them) and GPT-2 seeds; mixing
    the two families is refused by name."""
    from seedkl_jax import api

    bert = [api.load(str(family_checkpoint("bert", s, tokenizer="wordpiece", vocab_size=18,
                                           initializer_range=0.5))) for s in (1, 2)]
    ids = np.array([CLS, 5, 6, 7, 8, 9, 10, 11])
    out = api.compare(bert, ids)
    assert out["kl"].shape == (7, 2, 2) and out["kl"][:, 0, 1].min() > 0
    # position p is wordpiece p itself: its surprisal under seed 0 is -log p(ids[p]) from the MLM head
    z = bert[0].logits(np.array([[CLS, *ids[1:], SEP]]))[0, 1:-1].astype(np.float64)
    lp = z - z.max(-1, keepdims=True) - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))
    np.testing.assert_allclose(out["surprisal"][:, 0], -lp[np.arange(7), ids[1:]], rtol=1e-5, atol=1e-5)
    gpt2 = [api.load(str(family_checkpoint("gpt2", s, tokenizer="bpe", vocab_size=18))) for s in (1, 2)]
    assert api.compare(gpt2, ids)["kl"].shape == (7, 2, 2)
    with pytest.raises(SeedKLError, match="is a gpt2 but .* a bert"):
        api.compare([bert[0], gpt2[0]], ids)
