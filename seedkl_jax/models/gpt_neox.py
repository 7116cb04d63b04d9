"""GPT-NeoX (Pythia) as a Flax Linen module over the shared blocks (models/blocks.py).

Axis names used throughout: B batch, T positions, D model width, H heads, K head width (D = H*K),
F MLP width, L layers, V vocab rows (padded, e.g. 50,304 for Pythia), S seeds (a leading axis that
callers add by stacking params; this module never sees it — `jax.vmap` does).

Params (one model, float leaves; the L layers are one `nn.scan`, so layer leaves have a leading L axis
and compile time stays flat in depth):

    embed_in/embedding                   [V, D]
    layers/ln1/{scale,bias}, ln2/...     [L, D]
    layers/attn/qkv/{kernel [L,D,3D], bias [L,3D]}   columns in HF order: per head h, (q, k, v) of K
    layers/attn/out/{kernel [L,D,D], bias [L,D]}
    layers/mlp/fc_in/{kernel [L,D,F], bias [L,F]},  layers/mlp/fc_out/{kernel [L,F,D], bias [L,D]}
    final_ln/{scale,bias}                [D]
    embed_out/kernel                     [D, V]   (absent when tied: embed_in's transpose; no bias)

The math mirrors Hugging Face's GPTNeoXForCausalLM (the oracle in tests/test_models.py):
partial NeoX-style rotary on the first `rotary_ndims` of each head, attention softmax in float32
(the blocked causal core in models/attention.py), parallel residual x + attn(ln1 x) + mlp(ln2 x) or
sequential, exact (erf) gelu by default.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seedkl_jax.errors import SeedKLError
from seedkl_jax.models import attention, blocks

Params = dict[str, Any]
HIGHEST = blocks.HIGHEST


@dataclasses.dataclass(frozen=True)
class NeoXConfig(blocks.ConfigShape):
    """The architectural switches of a GPT-NeoX checkpoint (hashable: it is a jit static arg)."""

    model_type: ClassVar[str] = "gpt_neox"
    causal: ClassVar[bool] = True
    vocab_size: int  # rows of embed_in / columns of embed_out (padded)
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    rotary_pct: float = 0.25
    rotary_emb_base: float = 10000.0
    layer_norm_eps: float = 1e-5
    use_parallel_residual: bool = True
    hidden_act: str = "gelu"
    max_position_embeddings: int = 2048
    attention_bias: bool = True
    tie_word_embeddings: bool = False

    @property
    def rotary_ndims(self) -> int:
        return int(self.head_dim * self.rotary_pct)

    def validate(self) -> None:
        if self.hidden_size % self.num_heads:
            raise SeedKLError(f"config: hidden_size {self.hidden_size} is not divisible by "
                              f"num_attention_heads {self.num_heads}; fix the checkpoint's config.json")
        if self.hidden_act not in blocks.ACTIVATIONS:
            raise SeedKLError(f"config: hidden_act={self.hidden_act!r} is not supported; use one of "
                              f"{sorted(blocks.ACTIVATIONS)}")
        if self.rotary_ndims % 2:
            raise SeedKLError(f"config: rotary_pct={self.rotary_pct} gives an odd rotary width "
                              f"{self.rotary_ndims} for head width {self.head_dim}")

    def num_params(self) -> int:
        D, F, V, L = self.hidden_size, self.intermediate_size, self.vocab_size, self.num_layers
        per_layer = 4 * D + (D * 3 * D + 3 * D) + (D * D + D) + (D * F + F) + (F * D + D)
        return 2 * V * D + L * per_layer + 2 * D



def _rotary(x, positions, cfg: NeoXConfig):
    """NeoX rotary on the first R = rotary_ndims of each head. x [B,T,H,K], positions [B,T]."""
    R = cfg.rotary_ndims
    if R == 0:
        return x
    inv_freq = 1.0 / (cfg.rotary_emb_base ** (np.arange(0, R, 2, dtype=np.float32) / R))  # [R/2]
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B,T,R/2]
    angles = jnp.concatenate([angles, angles], -1)[:, :, None, :]  # [B,T,1,R]
    cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
    x_rot, x_pass = x[..., :R], x[..., R:]
    half = R // 2
    rotated = jnp.concatenate([-x_rot[..., half:], x_rot[..., :half]], -1)
    return jnp.concatenate([x_rot * cos + rotated * sin, x_pass], -1)


class NeoXAttention(nn.Module):
    """x [B,T,D] -> [B,T,D]: fused qkv, rotary, blocked causal attention, output projection."""

    cfg: NeoXConfig
    precision: Any = HIGHEST
    std: float = 0.02

    @nn.compact
    def __call__(self, x, bias_mask, positions):
        cfg, (B, T, D) = self.cfg, x.shape
        H, K = cfg.num_heads, cfg.head_dim
        qkv = blocks.Dense(3 * D, std=self.std, precision=self.precision, name="qkv")(x)
        qkv = qkv.reshape(B, T, H, 3, K)  # HF interleaves (q,k,v) per head
        q, k, v = qkv[:, :, :, 0], qkv[:, :, :, 1], qkv[:, :, :, 2]  # [B,T,H,K]
        q, k = _rotary(q, positions, cfg), _rotary(k, positions, cfg)
        out = attention.causal_attention(q, k, v, bias_mask, self.precision).reshape(B, T, D)
        return blocks.Dense(D, std=self.std, precision=self.precision, name="out")(out)


class NeoXLayer(nn.Module):
    """One transformer layer (scanned): parallel or sequential residual."""

    cfg: NeoXConfig
    precision: Any = HIGHEST
    std: float = 0.02

    @nn.compact
    def __call__(self, x, bias_mask, positions):
        cfg = self.cfg
        ln1 = blocks.LayerNorm(cfg.layer_norm_eps, name="ln1")
        ln2 = blocks.LayerNorm(cfg.layer_norm_eps, name="ln2")
        mlp = blocks.MLP(cfg.intermediate_size, cfg.hidden_act, self.std, self.precision, name="mlp")
        attn = NeoXAttention(cfg, self.precision, self.std, name="attn")(ln1(x), bias_mask, positions)
        if cfg.use_parallel_residual:
            return x + attn + mlp(ln2(x)), None
        x = x + attn
        return x + mlp(ln2(x)), None


class GPTNeoX(nn.Module):
    """ids [B,T] -> final-LayerNorm'd hidden states [B,T,D]; `unembedding()` -> [D,V]."""

    cfg: NeoXConfig
    precision: Any = HIGHEST
    std: float = 0.02

    def setup(self):
        cfg = self.cfg
        self.embed_in = blocks.Embed(cfg.vocab_size, cfg.hidden_size, self.std)
        stack = blocks.scan_layers(NeoXLayer, cfg.num_layers, (nn.broadcast, nn.broadcast))
        self.layers = stack(cfg, self.precision, self.std)
        self.final_ln = blocks.LayerNorm(cfg.layer_norm_eps)
        if not cfg.tie_word_embeddings:
            self.embed_out = blocks.Dense(cfg.vocab_size, use_bias=False, std=self.std, precision=self.precision)

    def __call__(self, input_ids, attention_mask=None, position_ids=None):
        """input_ids [B,T]; attention_mask [B,T] (1 = token; masks keys only, like HF);
        position_ids [B,T] (default arange(T), as HF does even with padding)."""
        B, T = input_ids.shape
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(T), (B, T))
        x, _ = self.layers(self.embed_in(input_ids), blocks.causal_mask(T, attention_mask), position_ids)
        return self.final_ln(x)

    def unembedding(self):
        """[D, V] output embedding (tied: embed_in transposed)."""
        if self.cfg.tie_word_embeddings:
            return self.embed_in.variables["params"]["embedding"].T
        return self.embed_out.variables["params"]["kernel"]

    def init_all(self, input_ids):
        """Touch every submodule (for `init`): hidden states and the output embedding."""
        h = self(input_ids)
        return h if self.cfg.tie_word_embeddings else self.embed_out(h)


def init_params(cfg: NeoXConfig, key: jax.Array, std: float = 0.02) -> Params:
    """Random init like HF's GPT-NeoX (normal(std) weights, zero biases, unit LayerNorm).

    Draws the same numbers as this project's earlier hand-written init (one key per weight kind), so
    the demo's trained suites do not change; tests/test_models.py checks the tree equals `init`'s."""
    D, F, V, L = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_layers
    keys = jax.random.split(key, 6)
    normal = lambda k, shape: std * jax.random.normal(k, shape, jnp.float32)
    zeros, ones = (lambda *s: jnp.zeros(s, jnp.float32)), (lambda *s: jnp.ones(s, jnp.float32))
    ln = lambda *s: {"scale": ones(*s), "bias": zeros(*s)}
    dense = lambda k, n_in, n_out: {"kernel": normal(k, (L, n_in, n_out)), "bias": zeros(L, n_out)}
    params = {
        "embed_in": {"embedding": normal(keys[0], (V, D))},
        "layers": {"ln1": ln(L, D), "ln2": ln(L, D),
                   "attn": {"qkv": dense(keys[1], D, 3 * D), "out": dense(keys[2], D, D)},
                   "mlp": {"fc_in": dense(keys[3], D, F), "fc_out": dense(keys[4], F, D)}},
        "final_ln": ln(D),
    }
    if not cfg.tie_word_embeddings:
        params["embed_out"] = {"kernel": normal(keys[5], (D, V))}
    return params
