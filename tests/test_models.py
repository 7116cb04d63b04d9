"""Parity of our GPT-NeoX forward with transformers' GPTNeoXForCausalLM (torch, float32, eval).

Checkpoints are random-init HF models saved with save_pretrained and read through our own
loader (`load`), so conversion and forward are checked together. Both logits and log-softmax
must agree to 1e-4 at every position (log-softmax is what every KL is computed from).
"""
import numpy as np
import pytest
from conftest import PYTHIA_14M, torch_logits

from seedkl_jax.api import load

TOL = 1e-4


def _log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _ids(vocab, shape, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, shape)


def _assert_parity(ours, ref, where=np.s_[...]):
    assert ours.shape == ref.shape and ours.dtype == np.float32
    d_logit = np.abs(ours - ref)[where].max()
    d_logsm = np.abs(_log_softmax(ours) - _log_softmax(ref))[where].max()
    assert d_logit <= TOL and d_logsm <= TOL, f"max|dlogit|={d_logit:.2e} max|dlogsoftmax|={d_logsm:.2e}"


@pytest.mark.parametrize("config", [
    PYTHIA_14M,                                        # parallel residual, rotary_pct 0.25, vocab 50,304
    dict(use_parallel_residual=False),                 # sequential residual
    dict(rotary_pct=1.0, rotary_emb_base=1000),        # full rotary, other base
    dict(hidden_act="gelu_new", layer_norm_eps=1e-3),  # tanh gelu, other eps
    dict(tie_word_embeddings=True),                    # embed_out tied to embed_in
], ids=["pythia-14m", "sequential", "rotary-full", "gelu-new", "tied"])
def test_parity_with_transformers(hf_checkpoint, config):
    ckpt = hf_checkpoint(**config)
    ids = _ids(min(config.get("vocab_size", 512), 50277), (2, 33))
    _assert_parity(load(str(ckpt)).logits(ids), torch_logits(ckpt, ids))


def test_parity_padded_batch(hf_checkpoint):
    """Right padding: every position matches (pad queries still see the real keys before them).

    Left padding: the real positions match; pad queries there see no key at all, which HF resolves
    one way and we another, and nothing downstream uses those rows.
    """
    ckpt = hf_checkpoint(**PYTHIA_14M)
    model = load(str(ckpt))
    ids = _ids(50277, (3, 40), seed=1)
    mask = np.ones_like(ids)
    mask[1, 25:] = 0
    mask[2, 31:] = 0
    _assert_parity(model.logits(ids, mask), torch_logits(ckpt, ids, mask))
    # the mask must matter, or the check above proves nothing about it
    assert np.abs(model.logits(ids)[1, 25:] - model.logits(ids, mask)[1, 25:]).max() > 1e-3
    left = np.ones_like(ids)
    left[1, :6] = 0
    _assert_parity(model.logits(ids, left), torch_logits(ckpt, ids, left), where=left.astype(bool))


def test_bfloat16_params_close_to_float32(hf_checkpoint):
    ckpt = hf_checkpoint()
    ids = _ids(512, (1, 16))
    f32, bf16 = load(str(ckpt)), load(str(ckpt), dtype="bfloat16")
    assert bf16.params["layers"]["attn"]["qkv"]["kernel"].dtype.name == "bfloat16"
    z32, z16 = f32.logits(ids), bf16.logits(ids)
    assert z16.dtype == np.float32
    assert 0 < np.abs(z32 - z16).max() < 0.05 * np.abs(z32).max()


def test_parity_across_attention_blocks(hf_checkpoint):
    """T = 300 spans three query blocks of the causal attention (128, 128, 44), one row right-padded."""
    ckpt = hf_checkpoint(**PYTHIA_14M)
    ids = _ids(50277, (2, 300), seed=2)
    mask = np.ones_like(ids)
    mask[1, 250:] = 0
    _assert_parity(load(str(ckpt)).logits(ids, mask), torch_logits(ckpt, ids, mask))


@pytest.mark.parametrize("block", [16, 7])
def test_blocked_attention_equals_one_block(hf_checkpoint, monkeypatch, block):
    """Scoring each query block against its key prefix only changes nothing but rounding."""
    import jax

    from seedkl_jax.models import attention, hidden_states

    model = load(str(hf_checkpoint(seed=5)))
    ids = _ids(512, (2, 45), seed=3)
    mask = np.ones_like(ids)
    mask[0, 40:] = 0
    run = lambda: np.asarray(jax.jit(lambda p: hidden_states(p, model.config, ids, mask))(model.params))
    monkeypatch.setattr(attention, "ATTENTION_BLOCK", 1 << 30)
    whole = run()
    monkeypatch.setattr(attention, "ATTENTION_BLOCK", block)
    blocked = run()
    assert np.abs(whole - blocked).max() <= 1e-5 * np.abs(whole).max()
