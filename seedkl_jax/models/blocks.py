"""Shared Flax (Linen) building blocks of the model families: Dense, LayerNorm, Embed, MLP, attention.

Why Linen: a Linen module is a pure function of a plain params pytree (`module.apply({"params": p},
ids)`), so S seeds' params stack on a leading axis and `jax.vmap` runs them through one apply —
exactly how the study computes. (NNX keeps params inside mutable objects; stacking them means
splitting and merging graph state at every call.)

Axes: B batch, T positions, D width, F MLP width, H heads, K head width, V vocab rows.
Kernels are stored [in, out] (the forward is x @ W); every matmul takes the module's `precision`
(HIGHEST by default: exact float32 on CPU and GPU). LayerNorm statistics are float32 whatever the
activation dtype, as in Hugging Face's models.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from seedkl_jax.errors import SeedKLError

HIGHEST = jax.lax.Precision.HIGHEST

# HF's ACT2FN names -> jax functions. Anything else is refused by name (see `activation`).
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # the default costs ~1e-4 in logits
    "gelu_python": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_fast": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": jax.nn.relu,
    "relu2": lambda x: jnp.square(jax.nn.relu(x)),
    "relu6": jax.nn.relu6,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
    "linear": lambda x: x,
    "leaky_relu": functools.partial(jax.nn.leaky_relu, negative_slope=0.01),
}


def check_activation(name: str) -> None:
    if name not in ACTIVATIONS:
        raise SeedKLError(f"config: activation {name!r} is not supported; use one of {sorted(ACTIVATIONS)}")


def normal(std: float):
    return nn.initializers.normal(stddev=std)


class ConfigShape:
    """Derived sizes every family config shares (a mixin for the frozen config dataclasses, which
    define hidden_size, num_heads and max_position_embeddings)."""

    @property
    def context(self) -> int:
        """Longest input the model takes (positions)."""
        return self.max_position_embeddings

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


class Dense(nn.Module):
    """x [..., in] -> [..., features]; params kernel [in, features], bias [features]."""

    features: int
    use_bias: bool = True
    std: float = 0.02
    precision: Any = HIGHEST

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", normal(self.std), (x.shape[-1], self.features), jnp.float32)
        y = jnp.einsum("...d,de->...e", x, kernel, precision=self.precision)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        return y


class LayerNorm(nn.Module):
    """Over the last axis; statistics in float32, result in x's dtype. params scale, bias [D]."""

    eps: float = 1e-5

    @nn.compact
    def __call__(self, x):
        D = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (D,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (D,), jnp.float32)
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        return ((x32 - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias).astype(x.dtype)


class Embed(nn.Module):
    """ids [...] -> [..., D]; params embedding [num, D]."""

    num: int
    features: int
    std: float = 0.02

    @nn.compact
    def __call__(self, ids):
        table = self.param("embedding", normal(self.std), (self.num, self.features), jnp.float32)
        return table[ids]


class MLP(nn.Module):
    """fc_out(act(fc_in(x))): [B,T,D] -> [B,T,D] through width F."""

    hidden: int
    act: str
    std: float = 0.02
    precision: Any = HIGHEST

    @nn.compact
    def __call__(self, x):
        h = ACTIVATIONS[self.act](Dense(self.hidden, std=self.std, precision=self.precision, name="fc_in")(x))
        return Dense(x.shape[-1], std=self.std, precision=self.precision, name="fc_out")(h)


def additive_mask(allowed: jax.Array) -> jax.Array:
    """bool -> float32 additive mask (0 where allowed, float32-min elsewhere), as Hugging Face's models."""
    return jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)


def causal_mask(T: int, attention_mask: jax.Array | None) -> jax.Array:
    """[B|1,1,T,T] additive: query t sees keys <= t that are real tokens (mask [B,T], 1 = token)."""
    allowed = jnp.tril(jnp.ones((T, T), bool))[None, None]
    if attention_mask is not None:
        allowed = allowed & (attention_mask[:, None, None, :] > 0)
    return additive_mask(allowed)


def padding_mask(B: int, T: int, attention_mask: jax.Array | None) -> jax.Array:
    """[B,1,1,T] additive: every query sees every real key (bidirectional encoders)."""
    if attention_mask is None:
        return jnp.zeros((B, 1, 1, T), jnp.float32)
    return additive_mask(attention_mask[:, None, None, :] > 0)


def full_attention(q, k, v, bias_mask, precision):
    """Bidirectional attention: q, k, v [B,T,H,K], bias_mask [B,1,1|T,T] -> [B,T,H,K]; softmax in float32."""
    K = q.shape[-1]
    scores = jnp.einsum("bqhk,bshk->bhqs", q, k, precision=precision).astype(jnp.float32)
    weights = jax.nn.softmax(scores * (K ** -0.5) + bias_mask, axis=-1).astype(q.dtype)
    return jnp.einsum("bhqs,bshk->bqhk", weights, v, precision=precision)


def scan_layers(layer: type[nn.Module], num_layers: int, in_axes: tuple) -> type[nn.Module]:
    """`layer` repeated num_layers times by one `lax.scan` (compile time flat in depth); its params
    get a leading L axis. The layer's __call__(carry, *args) returns (carry, None); `in_axes` says per
    extra argument whether it is scanned over (0) or the same for every layer (nn.broadcast)."""
    return nn.scan(layer, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=in_axes,
                   length=num_layers)
