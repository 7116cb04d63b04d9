"""The model families and the family-agnostic view of a model that the rest of seedkl sees.

A checkpoint's config.json names its family (`model_type`); `FAMILIES` maps it to the Linen module,
its config class and whether it is causal. Everything downstream (kernel, compare, study, api)
only uses the functions below, never a family's internals:

    hidden_states(params, cfg, ids [B,T]) -> h [B,T,D']   the states the unembedding multiplies
    unembedding(params, cfg)              -> W [D',V]     so that logits = h @ W
    logits(params, cfg, ids)              -> [B,T,V]      next-token (causal) / masked-LM (BERT) logits
    init_params(cfg, key)                 -> params       a random model of `cfg`

D' is the width D, except for BERT, whose MLM head has an output bias: there h carries a constant-1
column and W the bias as its last row (D' = D+1; models/bert.py).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seedkl_jax.errors import SeedKLError
from seedkl_jax.models import bert, blocks, gpt2, gpt_neox

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family: `module(cfg, precision, std)` is its Linen module, `config` its config class
    (built from a config.json dict by hf/families.py); `causal`: next-token (True) or masked LM (False)."""

    model_type: str
    module: type[nn.Module]
    config: type
    causal: bool


FAMILIES: dict[str, Family] = {
    "gpt_neox": Family("gpt_neox", gpt_neox.GPTNeoX, gpt_neox.NeoXConfig, causal=True),
    "gpt2": Family("gpt2", gpt2.GPT2, gpt2.GPT2Config, causal=True),
    "bert": Family("bert", bert.Bert, bert.BertConfig, causal=False),
}


def family_of(model_type: Any) -> Family:
    """The family of a `model_type` string or of a config object; unsupported -> SeedKLError."""
    name = model_type if isinstance(model_type, str) or model_type is None else type(model_type).model_type
    if name not in FAMILIES:
        raise SeedKLError(f"model_type {name!r} is not supported; seedkl reads {', '.join(sorted(FAMILIES))} "
                          "checkpoints")
    return FAMILIES[name]


def module(cfg: Any, precision=blocks.HIGHEST, std: float = 0.02) -> nn.Module:
    return family_of(cfg).module(cfg, precision, std)


def _cast(params: Params, dtype: Any) -> Params:
    return jax.tree.map(lambda a: jnp.asarray(a).astype(dtype), params)


def hidden_states(params: Params, cfg: Any, input_ids: jax.Array, attention_mask: jax.Array | None = None,
                  position_ids: jax.Array | None = None, dtype: Any = jnp.float32,
                  precision: jax.lax.Precision = blocks.HIGHEST) -> jax.Array:
    """input_ids [B,T] int; attention_mask [B,T] (1 = real token, 0 = padding: masks keys);
    position_ids [B,T] (default arange(T)). -> [B,T,D'] in `dtype` (float32 default; bfloat16
    allowed for speed, never for KLs)."""
    return module(cfg, precision).apply({"params": _cast(params, dtype)}, input_ids, attention_mask, position_ids)


def unembedding(params: Params, cfg: Any) -> jax.Array:
    """[D', V] output embedding (see module docstring), in the params' dtype."""
    return module(cfg).apply({"params": params}, method="unembedding")


def logits(params: Params, cfg: Any, input_ids: jax.Array, attention_mask=None, position_ids=None,
           dtype: Any = jnp.float32, precision: jax.lax.Precision = blocks.HIGHEST) -> jax.Array:
    """[B,T] ids -> [B,T,V] logits over the vocab rows (float32 accumulation)."""
    h = hidden_states(params, cfg, input_ids, attention_mask, position_ids, dtype, precision)
    w = unembedding(_cast(params, dtype), cfg)
    return jnp.einsum("btd,dv->btv", h, w, precision=precision, preferred_element_type=jnp.float32)


def init_params(cfg: Any, key: jax.Array, std: float = 0.02) -> Params:
    """A random model of `cfg`: normal(std) weights, zero biases, unit LayerNorms (as HF inits)."""
    if isinstance(cfg, gpt_neox.NeoXConfig):
        return gpt_neox.init_params(cfg, key, std)  # the demo's historical init, same tree as `init`
    return module_init(cfg, key, std)


def module_init(cfg: Any, key: jax.Array, std: float = 0.02) -> Params:
    """Linen's own `init` of the family module (every family; the tree `init_params` must match)."""
    ids = jnp.zeros((1, 2), jnp.int32)
    return jax.jit(lambda k: module(cfg, std=std).init(k, ids, method="init_all")["params"])(key)
