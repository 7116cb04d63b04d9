"""HF GPT-NeoX state dict <-> our params pytree (see models/gpt_neox.py for the layout).

HF stores Linear weights as [out, in]; we store kernels as [in, out] so the forward is x @ W.
The fused QKV keeps HF's per-head (q, k, v) interleaving; the forward reshapes to (H, 3, K).
On disk the output layer is `embed_out.weight` (transformers v5 calls it `lm_head` in memory);
both spellings are accepted on read, `embed_out.weight` is written.
"""
from __future__ import annotations

import re

import numpy as np

from seedkl_jax.errors import SeedKLError
from seedkl_jax.models.gpt_neox import NeoXConfig, Params

# (our layer leaf, HF suffix under gpt_neox.layers.{i}., transpose?)
_LAYER_KEYS = [
    ("ln1_scale", "input_layernorm.weight", False),
    ("ln1_bias", "input_layernorm.bias", False),
    ("ln2_scale", "post_attention_layernorm.weight", False),
    ("ln2_bias", "post_attention_layernorm.bias", False),
    ("qkv_w", "attention.query_key_value.weight", True),
    ("qkv_b", "attention.query_key_value.bias", False),
    ("out_w", "attention.dense.weight", True),
    ("out_b", "attention.dense.bias", False),
    ("fc_in_w", "mlp.dense_h_to_4h.weight", True),
    ("fc_in_b", "mlp.dense_h_to_4h.bias", False),
    ("fc_out_w", "mlp.dense_4h_to_h.weight", True),
    ("fc_out_b", "mlp.dense_4h_to_h.bias", False),
]
# Buffers some old checkpoints carry; not parameters.
_IGNORED = re.compile(r".*(attention\.(bias|masked_bias)|rotary_emb\.inv_freq)$")
_OUT_NAMES = ("embed_out.weight", "lm_head.weight", "gpt_neox.embed_out.weight")


def expected_shapes(cfg: NeoXConfig) -> dict[str, tuple[int, ...]]:
    """HF key -> shape, for every tensor a checkpoint of `cfg` must hold."""
    D, F, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    per = {"input_layernorm.weight": (D,), "input_layernorm.bias": (D,),
           "post_attention_layernorm.weight": (D,), "post_attention_layernorm.bias": (D,),
           "attention.query_key_value.weight": (3 * D, D), "attention.query_key_value.bias": (3 * D,),
           "attention.dense.weight": (D, D), "attention.dense.bias": (D,),
           "mlp.dense_h_to_4h.weight": (F, D), "mlp.dense_h_to_4h.bias": (F,),
           "mlp.dense_4h_to_h.weight": (D, F), "mlp.dense_4h_to_h.bias": (D,)}
    shapes = {"gpt_neox.embed_in.weight": (V, D), "gpt_neox.final_layer_norm.weight": (D,),
              "gpt_neox.final_layer_norm.bias": (D,)}
    for i in range(cfg.num_layers):
        shapes.update({f"gpt_neox.layers.{i}.{k}": s for k, s in per.items()})
    if not cfg.tie_word_embeddings:
        shapes["embed_out.weight"] = (V, D)
    return shapes


def state_dict_to_params(sd: dict[str, np.ndarray], cfg: NeoXConfig, where: str = "checkpoint") -> Params:
    """Check names and shapes, upcast to float32, build the params pytree (numpy leaves)."""
    sd = {k: v for k, v in sd.items() if not _IGNORED.match(k)}
    sd = {("embed_out.weight" if k in _OUT_NAMES else k): v for k, v in sd.items()}
    if cfg.tie_word_embeddings:
        sd.pop("embed_out.weight", None)
    want = expected_shapes(cfg)
    missing = sorted(set(want) - set(sd))
    extra = sorted(set(sd) - set(want))
    bad = sorted(k for k in set(want) & set(sd) if tuple(sd[k].shape) != want[k])
    if missing or extra or bad:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[:3]})")
        if extra:
            parts.append(f"unexpected {len(extra)} tensors (e.g. {extra[:3]})")
        if bad:
            parts.append("mis-shaped " + ", ".join(f"{k} {tuple(sd[k].shape)} != {want[k]}" for k in bad[:3]))
        raise SeedKLError(f"{where}: weights do not match its config.json: {'; '.join(parts)}; "
                          "re-download the checkpoint or fix its config")
    f32 = lambda k: np.asarray(sd[k], dtype=np.float32)
    layer = lambda i, suffix, t: f32(f"gpt_neox.layers.{i}.{suffix}").T if t else f32(f"gpt_neox.layers.{i}.{suffix}")
    layers = {name: np.stack([layer(i, suffix, t) for i in range(cfg.num_layers)])
              for name, suffix, t in _LAYER_KEYS}
    embed_in = f32("gpt_neox.embed_in.weight")
    return {
        "embed_in": embed_in,
        "layers": layers,
        "final_ln_scale": f32("gpt_neox.final_layer_norm.weight"),
        "final_ln_bias": f32("gpt_neox.final_layer_norm.bias"),
        "embed_out": embed_in.T.copy() if cfg.tie_word_embeddings else f32("embed_out.weight").T.copy(),
    }


def params_to_state_dict(params: Params, cfg: NeoXConfig) -> dict[str, np.ndarray]:
    """Inverse of `state_dict_to_params` (float32, contiguous) — what `save_pretrained` would write."""
    np32 = lambda a: np.ascontiguousarray(np.asarray(a, dtype=np.float32))
    sd = {"gpt_neox.embed_in.weight": np32(params["embed_in"]),
          "gpt_neox.final_layer_norm.weight": np32(params["final_ln_scale"]),
          "gpt_neox.final_layer_norm.bias": np32(params["final_ln_bias"])}
    for name, suffix, t in _LAYER_KEYS:
        stacked = np.asarray(params["layers"][name])
        for i in range(cfg.num_layers):
            sd[f"gpt_neox.layers.{i}.{suffix}"] = np32(stacked[i].T if t else stacked[i])
    if not cfg.tie_word_embeddings:
        sd["embed_out.weight"] = np32(np.asarray(params["embed_out"]).T)
    return sd
