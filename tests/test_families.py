"""GPT-2 and BERT: parity of our Flax modules (read through our loader) with transformers, the family
registry, and the errors for unsupported / headless checkpoints.

Parity criterion (issue 11): our log-probs may differ from transformers' in float64 by at most twice
what transformers' own float32 forward differs from it, at every position (max over the batch).
"""
import ast
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import family_logits

import seedkl_jax
from seedkl_jax import models
from seedkl_jax.api import load
from seedkl_jax.errors import SeedKLError
from seedkl_jax.hf import families, mapping


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _assert_parity(ours, ckpt, kind, ids, mask=None, where=np.s_[...]):
    ref = _log_softmax(family_logits(ckpt, kind, ids, mask, "float64"))[where]
    hf32 = _log_softmax(family_logits(ckpt, kind, ids, mask, "float32"))[where]
    err_hf, err_ours = np.abs(hf32 - ref).max(), np.abs(_log_softmax(ours)[where] - ref).max()
    assert ours.dtype == np.float32
    assert 0 < err_hf and err_ours <= 2 * err_hf, f"ours {err_ours:.2e} vs transformers float32 {err_hf:.2e}"


GPT2_CONFIGS = {
    "gpt2-vocab": dict(vocab_size=50257, n_embd=64, n_layer=2, n_head=4, n_positions=96),
    "odd": dict(vocab_size=1001, n_embd=36, n_layer=3, n_head=3, n_inner=70, n_positions=64,
                layer_norm_epsilon=1e-4),
    "mistral": dict(scale_attn_by_inverse_layer_idx=True, reorder_and_upcast_attn=True, n_layer=3),
}
BERT_CONFIGS = {
    "bert-vocab": dict(vocab_size=30522, hidden_size=64, num_attention_heads=4, intermediate_size=128),
    "odd": dict(vocab_size=997, hidden_size=36, num_hidden_layers=3, num_attention_heads=3,
                intermediate_size=70, max_position_embeddings=80, hidden_act="gelu_new", type_vocab_size=3),
}


@pytest.mark.parametrize("name", sorted(GPT2_CONFIGS))
def test_gpt2_parity(family_checkpoint, name):
    config = GPT2_CONFIGS[name]
    ckpt = family_checkpoint("gpt2", 1, **config)
    ids = np.random.default_rng(0).integers(0, config.get("vocab_size", 512), (2, 40))
    model = load(str(ckpt))
    assert isinstance(model.config, models.GPT2Config) and model.family.causal
    assert type(model.hf_config).__name__ == "GPT2Config" and model.num_params() > 0
    _assert_parity(model.logits(ids), ckpt, "gpt2", ids)


@pytest.mark.parametrize("name", sorted(BERT_CONFIGS))
def test_bert_parity(family_checkpoint, name):
    config = BERT_CONFIGS[name]
    ckpt = family_checkpoint("bert", 2, **config)
    ids = np.random.default_rng(1).integers(0, config["vocab_size"], (3, 37))
    mask = np.ones_like(ids)
    mask[1, 30:] = 0  # right padding: the real positions must match (pads are never scored)
    model = load(str(ckpt))
    assert isinstance(model.config, models.BertConfig) and not model.family.causal
    assert type(model.hf_config).__name__ == "BertConfig"
    ours = model.logits(ids, mask)
    _assert_parity(ours, ckpt, "bert", ids, mask, where=mask.astype(bool))
    # the mask must matter, or the check above proves nothing about it (bidirectional: all positions move)
    assert np.abs(model.logits(ids)[1, :30] - ours[1, :30]).max() > 1e-4


def test_bert_pytorch_bin_with_gamma_beta(family_checkpoint):
    """MultiBERTs ship pytorch_model.bin only; TF-converted BERTs spell LayerNorm weights gamma/beta."""
    import jax

    st = load(str(family_checkpoint("bert", 3)))
    for fmt in ("bin", "bin-tf"):
        other = load(str(family_checkpoint("bert", 3, fmt=fmt)))
        assert jax.tree.structure(st.params) == jax.tree.structure(other.params)
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(st.params), jax.tree.leaves(other.params)))


def test_bert_unembedding_folds_bias(family_checkpoint):
    """h' W' (kernel view) equals the head's logits; the last row of W' is the bias."""
    model = load(str(family_checkpoint("bert", 4)))
    ids = np.arange(12).reshape(1, 12)
    h = np.asarray(models.hidden_states(model.params, model.config, ids))
    w = np.asarray(models.unembedding(model.params, model.config))
    assert h.shape == (1, 12, 65) and np.all(h[..., -1] == 1.0) and w.shape == (65, 512)
    np.testing.assert_array_equal(w[-1], model.params["head"]["bias"])
    np.testing.assert_allclose(h @ w, model.logits(ids), atol=1e-5)


def test_registry_and_init_match_module_layout():
    assert set(models.FAMILIES) == {"gpt_neox", "gpt2", "bert"}
    import jax

    from seedkl_jax.models import family
    cfgs = [models.NeoXConfig(vocab_size=40, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=24),
            models.NeoXConfig(vocab_size=40, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=24,
                              tie_word_embeddings=True),
            models.GPT2Config(vocab_size=40, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=24),
            models.BertConfig(vocab_size=40, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=24)]
    for cfg in cfgs:
        ours, linen = models.init_params(cfg, jax.random.key(0)), family.module_init(cfg, jax.random.key(0))
        assert jax.tree.map(np.shape, ours) == jax.tree.map(np.shape, linen)
        # and the HF mapping covers every leaf, both ways
        back = mapping.state_dict_to_params(mapping.params_to_state_dict(ours, cfg), cfg)
        assert jax.tree.all(jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), b), ours, back))


def test_bert_without_mlm_head_is_refused(family_checkpoint, tmp_path):
    ckpt = family_checkpoint("bert-nohead", 5)
    with pytest.raises(SeedKLError, match="no masked-LM head.*BertForPreTraining") as err:
        load(str(ckpt), cache_dir=tmp_path / "c")
    assert "\n" not in str(err.value) and not (tmp_path / "c" / "models").exists()


def test_unsupported_model_type_names_the_supported(family_checkpoint, tmp_path):
    ckpt = shutil.copytree(family_checkpoint("gpt2", 6), tmp_path / "ckpt")
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "model_type": "gptj"}))
    with pytest.raises(SeedKLError, match=r"model_type 'gptj' is not supported \(supported: bert, gpt2, gpt_neox\)"):
        load(str(ckpt), cache_dir=tmp_path / "c")
    with pytest.raises(SeedKLError, match="'gptj' is not supported; seedkl reads bert, gpt2, gpt_neox"):
        models.family_of("gptj")


# ---------------------------------------------------------------- one home for Hugging Face (issue 19)

PACKAGE = Path(seedkl_jax.__file__).parent


def _hf_vocabulary() -> set[str]:
    """What only hf/ may know: every family table's HF tensor names (the per-layer part and the
    prefix of templated ones) and the config.json keys the config builders read that are not our
    config field names."""
    names = set()
    for table in families.TABLES.values():
        for _, hf, _ in table.rules:
            names.update(p.strip(".") for p in hf.split("{i}") if p.strip("."))
    fields = {f for cls in (models.NeoXConfig, models.GPT2Config, models.BertConfig)
              for f in cls.__dataclass_fields__}
    keys = set(re.findall(r'd\.get\("(\w+)"', (PACKAGE / "hf" / "families.py").read_text())) - fields
    assert {"gpt_neox.embed_in.weight", "attention.query_key_value.weight", "num_hidden_layers", "n_embd",
            "rope_parameters"} <= names | keys  # the vocabulary is what it should be: the test can fail
    return names | {f'"{k}"' for k in keys}


def test_models_know_no_hugging_face_names():
    """models/ is the Flax modules and their config dataclasses only: no transformers import, no
    `from_hf`, no HF tensor name or config.json key (hf/ builds every family's config from a dict)."""
    vocabulary = _hf_vocabulary()
    for path in sorted((PACKAGE / "models").glob("*.py")):
        text = path.read_text()
        imports = [n for n in ast.walk(ast.parse(text)) if isinstance(n, (ast.Import, ast.ImportFrom))]
        modules = ({a.name for n in imports for a in n.names}
                   | {n.module or "" for n in imports if isinstance(n, ast.ImportFrom)})
        assert not [m for m in modules if m.split(".")[0] in ("transformers", "huggingface_hub", "safetensors")], path
        assert not [m for m in modules if m.startswith(("seedkl_jax.hf", "seedkl_jax.convert"))], path
        assert "from_hf" not in text and "to_hf" not in text, path
        assert not [w for w in vocabulary if w in text], (path, [w for w in vocabulary if w in text])


def test_checkpoint_file_name_lists_are_defined_once():
    """Each list of checkpoint file names (config, weights, tokenizer) has one definition in seedkl_jax:
    hf/checkpoint.py; everyone else imports it."""
    known = {"config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt"}
    homes = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
                items = node.keys if isinstance(node, ast.Dict) else node.elts
                names = {e.value for e in items if isinstance(e, ast.Constant)} & known
                if len(names) >= 2:
                    homes.setdefault(path.relative_to(PACKAGE).as_posix(), []).append(sorted(names))
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id.endswith("_FILES")
                                                    for t in node.targets):
                homes.setdefault(path.relative_to(PACKAGE).as_posix(), []).append([t.id for t in node.targets])
    assert set(homes) == {"hf/checkpoint.py"}, homes
