"""GPT-2 (e.g. Stanford CRFM's Mistral seed runs) as a Flax Linen module over the shared blocks.

Axes: B batch, T positions (≤ n_positions, 1,024 for GPT-2), D width, H heads, K = D/H, F MLP width,
L layers, V vocab rows (50,257).

Params (layer leaves have a leading L axis: one `nn.scan`):

    wte/embedding [V, D],  wpe/embedding [n_positions, D]
    layers/ln_1/{scale,bias}, ln_2/...                       [L, D]
    layers/attn/c_attn/{kernel [L,D,3D], bias [L,3D]}        columns [q | k | v], heads inside each
    layers/attn/c_proj/{kernel [L,D,D], bias [L,D]}
    layers/mlp/fc_in/{kernel [L,D,F], bias}  (HF c_fc),  layers/mlp/fc_out/{kernel [L,F,D], bias}  (HF c_proj)
    ln_f/{scale,bias}                                        [D]
    lm_head/kernel [D, V]   only when untied (GPT-2 ties the unembedding to wte)

The math mirrors Hugging Face's GPT2LMHeadModel (tests/test_models.py): pre-LayerNorm residual
blocks, learned positions, tanh gelu ("gelu_new"), attention scaled by 1/sqrt(K) and, with
`scale_attn_by_inverse_layer_idx` (the Mistral runs set it), also by 1/(layer + 1); softmax in
float32 always, which is also what `reorder_and_upcast_attn` asks for.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from seedkl_jax.errors import SeedKLError
from seedkl_jax.models import attention, blocks

HIGHEST = blocks.HIGHEST


@dataclasses.dataclass(frozen=True)
class GPT2Config(blocks.ConfigShape):
    """The architectural switches of a GPT-2 checkpoint (hashable: a jit static arg)."""

    model_type: ClassVar[str] = "gpt2"
    causal: ClassVar[bool] = True

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int = 1024
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu_new"
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    reorder_and_upcast_attn: bool = False
    tie_word_embeddings: bool = True

    def validate(self) -> None:
        if self.hidden_size % self.num_heads:
            raise SeedKLError(f"config: n_embd {self.hidden_size} is not divisible by n_head {self.num_heads}; "
                              "fix the checkpoint's config.json")
        blocks.check_activation(self.hidden_act)


class GPT2Attention(nn.Module):
    cfg: GPT2Config
    precision: Any = HIGHEST
    std: float = 0.02

    @nn.compact
    def __call__(self, x, layer_idx, bias_mask):
        cfg, (B, T, D) = self.cfg, x.shape
        H, K = cfg.num_heads, cfg.head_dim
        qkv = blocks.Dense(3 * D, std=self.std, precision=self.precision, name="c_attn")(x)
        q, k, v = (a.reshape(B, T, H, K) for a in jnp.split(qkv, 3, axis=-1))
        # The shared core scales scores by K^-0.5; fold any other scaling into q.
        factor = 1.0 if cfg.scale_attn_weights else K ** 0.5
        if cfg.scale_attn_by_inverse_layer_idx:
            factor = factor / (layer_idx + 1).astype(jnp.float32)
        if cfg.scale_attn_by_inverse_layer_idx or not cfg.scale_attn_weights:
            q = (q * factor).astype(q.dtype)
        out = attention.causal_attention(q, k, v, bias_mask, self.precision).reshape(B, T, D)
        return blocks.Dense(D, std=self.std, precision=self.precision, name="c_proj")(out)


class GPT2Layer(nn.Module):
    cfg: GPT2Config
    precision: Any = HIGHEST
    std: float = 0.02

    @nn.compact
    def __call__(self, x, layer_idx, bias_mask):
        cfg = self.cfg
        h = blocks.LayerNorm(cfg.layer_norm_eps, name="ln_1")(x)
        x = x + GPT2Attention(cfg, self.precision, self.std, name="attn")(h, layer_idx, bias_mask)
        h = blocks.LayerNorm(cfg.layer_norm_eps, name="ln_2")(x)
        return x + blocks.MLP(cfg.intermediate_size, cfg.hidden_act, self.std, self.precision, name="mlp")(h), None


class GPT2(nn.Module):
    """ids [B,T] -> ln_f'd hidden states [B,T,D]; `unembedding()` -> [D,V] (wte transposed when tied)."""

    cfg: GPT2Config
    precision: Any = HIGHEST
    std: float = 0.02

    def setup(self):
        cfg = self.cfg
        self.wte = blocks.Embed(cfg.vocab_size, cfg.hidden_size, self.std)
        self.wpe = blocks.Embed(cfg.max_position_embeddings, cfg.hidden_size, self.std)
        self.layers = blocks.scan_layers(GPT2Layer, cfg.num_layers, (0, nn.broadcast))(cfg, self.precision, self.std)
        self.ln_f = blocks.LayerNorm(cfg.layer_norm_eps)
        if not cfg.tie_word_embeddings:
            self.lm_head = blocks.Dense(cfg.vocab_size, use_bias=False, std=self.std, precision=self.precision)

    def __call__(self, input_ids, attention_mask=None, position_ids=None):
        """input_ids [B,T]; attention_mask [B,T] (1 = token, masks keys); position_ids default arange(T)."""
        B, T = input_ids.shape
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(T), (B, T))
        x = self.wte(input_ids) + self.wpe(position_ids)
        x, _ = self.layers(x, jnp.arange(self.cfg.num_layers), blocks.causal_mask(T, attention_mask))
        return self.ln_f(x)

    def unembedding(self):
        if self.cfg.tie_word_embeddings:
            return self.wte.variables["params"]["embedding"].T
        return self.lm_head.variables["params"]["kernel"]

    def init_all(self, input_ids):
        h = self(input_ids)
        return h if self.cfg.tie_word_embeddings else self.lm_head(h)
