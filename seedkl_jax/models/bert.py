"""BERT with its masked-LM head (e.g. Google's MultiBERTs) as a Flax Linen module over the shared blocks.

Axes: B batch, T positions (≤ 512), D width, H heads, K = D/H, F MLP width, L layers, V vocab (30,522).

Params (layer leaves have a leading L axis: one `nn.scan`):

    word_embeddings/embedding [V, D], position_embeddings/embedding [512, D],
    token_type_embeddings/embedding [type_vocab_size, D], embed_ln/{scale,bias} [D]
    layers/attn/{query,key,value,out}/{kernel [L,D,D], bias [L,D]},  layers/attn_ln/...  [L, D]
    layers/mlp/fc_in/{kernel [L,D,F], bias}, layers/mlp/fc_out/{kernel [L,F,D], bias},  layers/out_ln/...
    head/dense/{kernel [D,D], bias}, head/ln/{scale,bias}, head/bias [V]     (the MLM head)
    decoder/kernel [D, V]   only when untied (BERT ties the decoder to the word embeddings)

The math mirrors Hugging Face's BertForPreTraining (its prediction logits) (tests/test_models.py):
post-LayerNorm layers, bidirectional attention over the real tokens (attention_mask), token type 0,
learned absolute positions; head = LayerNorm(act(dense(h))) @ word_embeddings.T + bias.

For the family-agnostic kernel the bias is folded into the matmul: the module returns the head's
states with a constant-1 column appended, h' [B,T,D+1], and `unembedding()` is W' [D+1,V] =
[word_embeddings.T ; bias], so h'·W' = h·W + b and the kernel never knows it is a BERT.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from seedkl_jax.errors import SeedKLError
from seedkl_jax.models import blocks

HIGHEST = blocks.HIGHEST


@dataclasses.dataclass(frozen=True)
class BertConfig(blocks.ConfigShape):
    """The architectural switches of a BERT checkpoint (hashable: a jit static arg)."""

    model_type: ClassVar[str] = "bert"
    causal: ClassVar[bool] = False

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    tie_word_embeddings: bool = True

    def validate(self) -> None:
        if self.hidden_size % self.num_heads:
            raise SeedKLError(f"config: hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                              f"{self.num_heads}; fix the checkpoint's config.json")
        blocks.check_activation(self.hidden_act)


class BertAttention(nn.Module):
    cfg: BertConfig
    precision: Any = HIGHEST
    std: float = 0.02

    @nn.compact
    def __call__(self, x, bias_mask):
        cfg, (B, T, D) = self.cfg, x.shape
        dense = lambda name: blocks.Dense(D, std=self.std, precision=self.precision, name=name)
        q, k, v = (dense(n)(x).reshape(B, T, cfg.num_heads, cfg.head_dim) for n in ("query", "key", "value"))
        return dense("out")(blocks.full_attention(q, k, v, bias_mask, self.precision).reshape(B, T, D))


class BertLayer(nn.Module):
    cfg: BertConfig
    precision: Any = HIGHEST
    std: float = 0.02

    @nn.compact
    def __call__(self, x, bias_mask):
        cfg = self.cfg
        x = blocks.LayerNorm(cfg.layer_norm_eps, name="attn_ln")(
            x + BertAttention(cfg, self.precision, self.std, name="attn")(x, bias_mask))
        mlp = blocks.MLP(cfg.intermediate_size, cfg.hidden_act, self.std, self.precision, name="mlp")
        return blocks.LayerNorm(cfg.layer_norm_eps, name="out_ln")(x + mlp(x)), None


class MLMHead(nn.Module):
    """h [B,T,D] -> LayerNorm(act(dense(h))) [B,T,D]; also holds the decoder bias [V]."""

    cfg: BertConfig
    precision: Any = HIGHEST
    std: float = 0.02

    def setup(self):
        self.dense = blocks.Dense(self.cfg.hidden_size, std=self.std, precision=self.precision)
        self.ln = blocks.LayerNorm(self.cfg.layer_norm_eps)
        self.bias = self.param("bias", nn.initializers.zeros, (self.cfg.vocab_size,), jnp.float32)

    def __call__(self, h):
        return self.ln(blocks.ACTIVATIONS[self.cfg.hidden_act](self.dense(h)))


class Bert(nn.Module):
    """ids [B,T] -> [B,T,D+1] MLM-head states with a 1 column; `unembedding()` -> [D+1,V]."""

    cfg: BertConfig
    precision: Any = HIGHEST
    std: float = 0.02

    def setup(self):
        cfg = self.cfg
        self.word_embeddings = blocks.Embed(cfg.vocab_size, cfg.hidden_size, self.std)
        self.position_embeddings = blocks.Embed(cfg.max_position_embeddings, cfg.hidden_size, self.std)
        self.token_type_embeddings = blocks.Embed(cfg.type_vocab_size, cfg.hidden_size, self.std)
        self.embed_ln = blocks.LayerNorm(cfg.layer_norm_eps)
        self.layers = blocks.scan_layers(BertLayer, cfg.num_layers, (nn.broadcast,))(cfg, self.precision, self.std)
        self.head = MLMHead(cfg, self.precision, self.std)
        if not cfg.tie_word_embeddings:
            self.decoder = blocks.Dense(cfg.vocab_size, use_bias=False, std=self.std, precision=self.precision)

    def __call__(self, input_ids, attention_mask=None, position_ids=None):
        """input_ids [B,T] (one segment: token type 0); attention_mask [B,T] (1 = real token)."""
        B, T = input_ids.shape
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(T), (B, T))
        x = (self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
             + self.token_type_embeddings(jnp.zeros_like(input_ids)))
        x, _ = self.layers(self.embed_ln(x), blocks.padding_mask(B, T, attention_mask))
        h = self.head(x)
        return jnp.concatenate([h, jnp.ones(h.shape[:-1] + (1,), h.dtype)], axis=-1)

    def unembedding(self):
        """[D+1, V]: the decoder (tied: word embeddings transposed) with the head's bias as its last row."""
        w = (self.word_embeddings.variables["params"]["embedding"].T if self.cfg.tie_word_embeddings
             else self.decoder.variables["params"]["kernel"])
        return jnp.concatenate([w, self.head.bias[None, :].astype(w.dtype)], axis=0)

    def init_all(self, input_ids):
        h = self(input_ids)
        return h if self.cfg.tie_word_embeddings else self.decoder(h[..., :-1])
