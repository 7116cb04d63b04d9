"""Each model family's Hugging Face knowledge: config.json -> our config, our config -> config.json,
and the table of which HF tensor fills which params leaf (the engine is hf/mapping.py).

models/ holds the Flax modules and their config dataclasses only; every family's config is built here
the same way, from a config.json dict (`model_config`), with transformers' defaults for absent keys
and no transformers import (tests/test_convert.py checks the NeoX defaults against transformers').
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

from seedkl_jax.errors import SeedKLError
from seedkl_jax.models import BertConfig, GPT2Config, NeoXConfig, family_of



# ---------------------------------------------------------------------------- config.json -> our config


def neox_config(d: dict) -> NeoXConfig:
    """From a GPT-NeoX config.json dict: v4 `rotary_pct`/`rotary_emb_base` or v5 `rope_parameters`."""
    rope = d.get("rope_parameters") or {}
    return NeoXConfig(
        vocab_size=int(d.get("vocab_size", 50432)), hidden_size=int(d.get("hidden_size", 6144)),
        num_layers=int(d.get("num_hidden_layers", 44)), num_heads=int(d.get("num_attention_heads", 64)),
        intermediate_size=int(d.get("intermediate_size", 24576)),
        rotary_pct=float(rope.get("partial_rotary_factor", d.get("rotary_pct", 0.25))),
        rotary_emb_base=float(rope.get("rope_theta", d.get("rotary_emb_base", 10000.0))),
        layer_norm_eps=float(d.get("layer_norm_eps", 1e-5)),
        use_parallel_residual=bool(d.get("use_parallel_residual", True)), hidden_act=str(d.get("hidden_act", "gelu")),
        max_position_embeddings=int(d.get("max_position_embeddings", 2048)),
        attention_bias=bool(d.get("attention_bias", True)),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", False)))


def gpt2_config(d: dict) -> GPT2Config:
    """From a GPT-2 config.json dict."""
    if d.get("add_cross_attention"):
        raise SeedKLError("config: add_cross_attention=true (an encoder-decoder GPT-2) is not supported; "
                          "pass a GPT2LMHeadModel checkpoint")
    D = int(d.get("n_embd", d.get("hidden_size", 768)))
    return GPT2Config(
        vocab_size=int(d.get("vocab_size", 50257)), hidden_size=D,
        num_layers=int(d.get("n_layer", d.get("num_hidden_layers", 12))),
        num_heads=int(d.get("n_head", d.get("num_attention_heads", 12))),
        intermediate_size=int(d.get("n_inner") or 4 * D),
        max_position_embeddings=int(d.get("n_positions", d.get("max_position_embeddings", 1024))),
        layer_norm_eps=float(d.get("layer_norm_epsilon", 1e-5)),
        hidden_act=str(d.get("activation_function", "gelu_new")),
        scale_attn_weights=bool(d.get("scale_attn_weights", True)),
        scale_attn_by_inverse_layer_idx=bool(d.get("scale_attn_by_inverse_layer_idx", False)),
        reorder_and_upcast_attn=bool(d.get("reorder_and_upcast_attn", False)),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", True)))


def bert_config(d: dict) -> BertConfig:
    """From a BERT config.json dict."""
    kind = d.get("position_embedding_type", "absolute")
    if kind != "absolute":
        raise SeedKLError(f"config: position_embedding_type={kind!r} is not supported (only 'absolute', "
                          "as in BERT and MultiBERTs)")
    if d.get("is_decoder") or d.get("add_cross_attention"):
        raise SeedKLError("config: a decoder BERT (is_decoder / add_cross_attention) is not supported; "
                          "pass a BertForPreTraining or BertForMaskedLM checkpoint")
    return BertConfig(
        vocab_size=int(d.get("vocab_size", 30522)), hidden_size=int(d.get("hidden_size", 768)),
        num_layers=int(d.get("num_hidden_layers", 12)), num_heads=int(d.get("num_attention_heads", 12)),
        intermediate_size=int(d.get("intermediate_size", 3072)),
        max_position_embeddings=int(d.get("max_position_embeddings", 512)),
        type_vocab_size=int(d.get("type_vocab_size", 2)),
        layer_norm_eps=float(d.get("layer_norm_eps", 1e-12)), hidden_act=str(d.get("hidden_act", "gelu")),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", True)))


BUILDERS: dict[str, Callable[[dict], Any]] = {"gpt_neox": neox_config, "gpt2": gpt2_config, "bert": bert_config}


def model_config(config: dict, name: str) -> Any:
    """Our config (of the family config.json's model_type names), validated, from config.json dict
    `config` of checkpoint `name` (named in the errors)."""
    fam = family_of(config.get("model_type"))
    try:
        cfg = BUILDERS[fam.model_type](config)
        cfg.validate()
        return cfg
    except SeedKLError as e:
        raise SeedKLError(f"{name}: {str(e).removeprefix('config: ')}") from e
    except (ValueError, TypeError, AttributeError) as e:
        raise SeedKLError(f"{name}: config.json rejected ({e}); fix or re-download it") from e


def config_dict(cfg: NeoXConfig) -> dict[str, Any]:
    """A GPT-NeoX `config.json` body that transformers (v4 and v5) and `neox_config` both read (the
    demo's trained checkpoints are written with it)."""
    if not isinstance(cfg, NeoXConfig):
        raise SeedKLError(f"config: writing a {cfg.model_type} config.json is not supported (GPT-NeoX only)")
    return {
        "architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size, "rotary_pct": cfg.rotary_pct,
        "rotary_emb_base": cfg.rotary_emb_base,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rotary_emb_base,
                            "partial_rotary_factor": cfg.rotary_pct},
        "layer_norm_eps": cfg.layer_norm_eps, "use_parallel_residual": cfg.use_parallel_residual,
        "hidden_act": cfg.hidden_act, "max_position_embeddings": cfg.max_position_embeddings,
        "attention_bias": cfg.attention_bias, "tie_word_embeddings": cfg.tie_word_embeddings,
        "bos_token_id": 0, "eos_token_id": 0, "torch_dtype": "float32",
    }


def transformers_config(config: dict) -> Any:
    """transformers' config object of a config.json dict (imports transformers, and torch: seconds)."""
    from transformers import AutoConfig

    return AutoConfig.for_model(**config)


# ---------------------------------------------------------------------------- HF tensor names <-> params
# HF `nn.Linear` weights are [out, in] and get transposed to our [in, out] kernels; GPT-2's `Conv1D`
# weights are stored [in, out] already.

@dataclasses.dataclass(frozen=True)
class Table:
    """rules: (our leaf path "a/b/c", HF name with {i} for a layer index, transpose?);
    ignored: HF names that are buffers or heads we do not use; rename: HF name -> canonical name
    (old spellings); required: a name whose absence gets `missing_hint` instead of the generic error."""

    rules: tuple[tuple[str, str, bool], ...]
    ignored: re.Pattern
    rename: Callable[[str], str] = lambda k: k
    tied: tuple[str, ...] = ()  # HF names of tied copies, dropped when cfg.tie_word_embeddings
    required: str | None = None
    missing_hint: str = ""


def _linear(ours: str, hf: str) -> tuple[tuple[str, str, bool], ...]:
    return ((f"{ours}/kernel", f"{hf}.weight", True), (f"{ours}/bias", f"{hf}.bias", False))


def _conv1d(ours: str, hf: str) -> tuple[tuple[str, str, bool], ...]:
    return ((f"{ours}/kernel", f"{hf}.weight", False), (f"{ours}/bias", f"{hf}.bias", False))


def _ln(ours: str, hf: str) -> tuple[tuple[str, str, bool], ...]:
    return ((f"{ours}/scale", f"{hf}.weight", False), (f"{ours}/bias", f"{hf}.bias", False))


_NEOX_L = "gpt_neox.layers.{i}."
NEOX = Table(
    rules=(("embed_in/embedding", "gpt_neox.embed_in.weight", False),
           *_ln("layers/ln1", _NEOX_L + "input_layernorm"), *_ln("layers/ln2", _NEOX_L + "post_attention_layernorm"),
           *_linear("layers/attn/qkv", _NEOX_L + "attention.query_key_value"),
           *_linear("layers/attn/out", _NEOX_L + "attention.dense"),
           *_linear("layers/mlp/fc_in", _NEOX_L + "mlp.dense_h_to_4h"),
           *_linear("layers/mlp/fc_out", _NEOX_L + "mlp.dense_4h_to_h"),
           *_ln("final_ln", "gpt_neox.final_layer_norm"),
           ("embed_out/kernel", "embed_out.weight", True)),
    # Buffers some old checkpoints carry; not parameters.
    ignored=re.compile(r".*(attention\.(bias|masked_bias)|rotary_emb\.inv_freq)$"),
    # On disk the output layer is `embed_out.weight` (transformers v5 calls it `lm_head` in memory).
    rename=lambda k: "embed_out.weight" if k in ("lm_head.weight", "gpt_neox.embed_out.weight") else k,
    tied=("embed_out.weight",),
)

_GPT2_L = "transformer.h.{i}."
GPT2 = Table(
    rules=(("wte/embedding", "transformer.wte.weight", False), ("wpe/embedding", "transformer.wpe.weight", False),
           *_ln("layers/ln_1", _GPT2_L + "ln_1"), *_ln("layers/ln_2", _GPT2_L + "ln_2"),
           *_conv1d("layers/attn/c_attn", _GPT2_L + "attn.c_attn"),
           *_conv1d("layers/attn/c_proj", _GPT2_L + "attn.c_proj"),
           *_conv1d("layers/mlp/fc_in", _GPT2_L + "mlp.c_fc"), *_conv1d("layers/mlp/fc_out", _GPT2_L + "mlp.c_proj"),
           *_ln("ln_f", "transformer.ln_f"), ("lm_head/kernel", "lm_head.weight", True)),
    ignored=re.compile(r".*\.attn\.(bias|masked_bias)$"),
    # A bare GPT2Model (or an old save) has no `transformer.` prefix.
    rename=lambda k: k if k.startswith(("transformer.", "lm_head.")) else "transformer." + k,
    tied=("lm_head.weight",),
)

_BERT_L = "bert.encoder.layer.{i}."
BERT = Table(
    rules=(("word_embeddings/embedding", "bert.embeddings.word_embeddings.weight", False),
           ("position_embeddings/embedding", "bert.embeddings.position_embeddings.weight", False),
           ("token_type_embeddings/embedding", "bert.embeddings.token_type_embeddings.weight", False),
           *_ln("embed_ln", "bert.embeddings.LayerNorm"),
           *_linear("layers/attn/query", _BERT_L + "attention.self.query"),
           *_linear("layers/attn/key", _BERT_L + "attention.self.key"),
           *_linear("layers/attn/value", _BERT_L + "attention.self.value"),
           *_linear("layers/attn/out", _BERT_L + "attention.output.dense"),
           *_ln("layers/attn_ln", _BERT_L + "attention.output.LayerNorm"),
           *_linear("layers/mlp/fc_in", _BERT_L + "intermediate.dense"),
           *_linear("layers/mlp/fc_out", _BERT_L + "output.dense"),
           *_ln("layers/out_ln", _BERT_L + "output.LayerNorm"),
           *_linear("head/dense", "cls.predictions.transform.dense"),
           *_ln("head/ln", "cls.predictions.transform.LayerNorm"),
           ("head/bias", "cls.predictions.bias", False),
           ("decoder/kernel", "cls.predictions.decoder.weight", True)),
    # The pooler and next-sentence head are not part of the MLM distribution; position_ids is a buffer;
    # the decoder's bias is the same tensor as cls.predictions.bias.
    ignored=re.compile(r"^(bert\.pooler\..*|cls\.seq_relationship\..*|.*position_ids|cls\.predictions\.decoder\.bias)$"),
    # TF-converted checkpoints spell LayerNorm weights gamma/beta.
    rename=lambda k: re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", k)),
    tied=("cls.predictions.decoder.weight",),
    required="cls.predictions.bias",
    missing_hint="the checkpoint has no masked-LM head (cls.predictions.*): it is a bare BertModel; pass a "
                 "BertForPreTraining or BertForMaskedLM checkpoint (MultiBERTs' are)",
)

TABLES = {"gpt_neox": NEOX, "gpt2": GPT2, "bert": BERT}
