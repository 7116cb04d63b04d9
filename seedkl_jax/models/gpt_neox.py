"""GPT-NeoX (Pythia) forward pass as a pure JAX function over a plain params pytree.

Axis names used throughout: B batch, T positions, D model width, H heads, K head width (D = H*K),
F MLP width, L layers, V vocab rows (padded, e.g. 50,304 for Pythia), S seeds (a leading axis that
callers add by stacking params; this module never sees it — `jax.vmap` does).

Params (one model; every leaf float, layer leaves stacked on a leading L axis so that one
`lax.scan` runs all layers — compile time stays flat in depth):

    embed_in        [V, D]
    layers/ln1_scale, ln1_bias, ln2_scale, ln2_bias    [L, D]
    layers/qkv_w    [L, D, 3D]   columns in HF order: per head h, (q, k, v) blocks of K
    layers/qkv_b    [L, 3D]
    layers/out_w    [L, D, D],  out_b [L, D]
    layers/fc_in_w  [L, D, F],  fc_in_b [L, F]
    layers/fc_out_w [L, F, D],  fc_out_b [L, D]
    final_ln_scale, final_ln_bias   [D]
    embed_out       [D, V]       (untied; Pythia has no output bias)

The math mirrors `transformers.GPTNeoXForCausalLM` (the oracle in tests/test_models.py):
partial NeoX-style rotary on the first `rotary_ndims` of each head, attention softmax in float32,
parallel residual x + attn(ln1 x) + mlp(ln2 x) or sequential, exact (erf) gelu by default.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from seedkl_jax.errors import SeedKLError
from seedkl_jax.models import attention

Params = dict[str, Any]
# Query block of the causal attention (models/attention.py).
ATTENTION_BLOCK = attention.ATTENTION_BLOCK

# HF's ACT2FN names -> jax functions. Anything else is refused by name (see `activation`).
_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
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


@dataclasses.dataclass(frozen=True)
class NeoXConfig:
    """The architectural switches of a GPT-NeoX checkpoint (hashable: it is a jit static arg)."""

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
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def rotary_ndims(self) -> int:
        return int(self.head_dim * self.rotary_pct)

    @classmethod
    def from_hf(cls, hf: Any) -> "NeoXConfig":
        """From a `transformers.GPTNeoXConfig` (v4 `rotary_pct` or v5 `rope_parameters`)."""
        rope = getattr(hf, "rope_parameters", None) or {}
        cfg = cls(
            vocab_size=int(hf.vocab_size),
            hidden_size=int(hf.hidden_size),
            num_layers=int(hf.num_hidden_layers),
            num_heads=int(hf.num_attention_heads),
            intermediate_size=int(hf.intermediate_size),
            rotary_pct=float(rope.get("partial_rotary_factor", getattr(hf, "rotary_pct", 0.25))),
            rotary_emb_base=float(rope.get("rope_theta", getattr(hf, "rotary_emb_base", 10000.0))),
            layer_norm_eps=float(hf.layer_norm_eps),
            use_parallel_residual=bool(hf.use_parallel_residual),
            hidden_act=str(hf.hidden_act),
            max_position_embeddings=int(hf.max_position_embeddings),
            attention_bias=bool(getattr(hf, "attention_bias", True)),
            tie_word_embeddings=bool(getattr(hf, "tie_word_embeddings", False)),
        )
        cfg.validate()
        return cfg

    def to_hf_dict(self) -> dict[str, Any]:
        """A `config.json` body that transformers (v4 and v5) and `from_hf` both read."""
        return {
            "architectures": ["GPTNeoXForCausalLM"],
            "model_type": "gpt_neox",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "rotary_pct": self.rotary_pct,
            "rotary_emb_base": self.rotary_emb_base,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rotary_emb_base,
                                "partial_rotary_factor": self.rotary_pct},
            "layer_norm_eps": self.layer_norm_eps,
            "use_parallel_residual": self.use_parallel_residual,
            "hidden_act": self.hidden_act,
            "max_position_embeddings": self.max_position_embeddings,
            "attention_bias": self.attention_bias,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": 0,
            "eos_token_id": 0,
            "torch_dtype": "float32",
        }

    def validate(self) -> None:
        if self.hidden_size % self.num_heads:
            raise SeedKLError(f"config: hidden_size {self.hidden_size} is not divisible by "
                              f"num_attention_heads {self.num_heads}; fix the checkpoint's config.json")
        if self.hidden_act not in _ACTIVATIONS:
            raise SeedKLError(f"config: hidden_act={self.hidden_act!r} is not supported; use one of "
                              f"{sorted(_ACTIVATIONS)}")
        if self.rotary_ndims % 2:
            raise SeedKLError(f"config: rotary_pct={self.rotary_pct} gives an odd rotary width "
                              f"{self.rotary_ndims} for head width {self.head_dim}")

    def num_params(self) -> int:
        D, F, V, L = self.hidden_size, self.intermediate_size, self.vocab_size, self.num_layers
        per_layer = 4 * D + (D * 3 * D + 3 * D) + (D * D + D) + (D * F + F) + (F * D + D)
        return 2 * V * D + L * per_layer + 2 * D


def init_params(cfg: NeoXConfig, key: jax.Array, std: float = 0.02) -> Params:
    """Random init like HF's GPT-NeoX (normal(std) weights, zero biases, unit LayerNorm)."""
    D, F, V, L = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_layers
    keys = jax.random.split(key, 6)
    normal = lambda k, shape: std * jax.random.normal(k, shape, jnp.float32)
    zeros, ones = (lambda *s: jnp.zeros(s, jnp.float32)), (lambda *s: jnp.ones(s, jnp.float32))
    return {
        "embed_in": normal(keys[0], (V, D)),
        "layers": {
            "ln1_scale": ones(L, D), "ln1_bias": zeros(L, D),
            "ln2_scale": ones(L, D), "ln2_bias": zeros(L, D),
            "qkv_w": normal(keys[1], (L, D, 3 * D)), "qkv_b": zeros(L, 3 * D),
            "out_w": normal(keys[2], (L, D, D)), "out_b": zeros(L, D),
            "fc_in_w": normal(keys[3], (L, D, F)), "fc_in_b": zeros(L, F),
            "fc_out_w": normal(keys[4], (L, F, D)), "fc_out_b": zeros(L, D),
        },
        "final_ln_scale": ones(D), "final_ln_bias": zeros(D),
        "embed_out": normal(keys[5], (D, V)),
    }


def _layer_norm(x, scale, bias, eps):
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + eps) * scale + bias).astype(x.dtype)


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


def _attention(x, lp, bias_mask, positions, cfg: NeoXConfig, precision):
    """x [B,T,D] -> [B,T,D]. bias_mask [B,1,T,T] additive (0 or dtype-min)."""
    B, T, _ = x.shape
    H, K = cfg.num_heads, cfg.head_dim
    qkv = jnp.einsum("btd,de->bte", x, lp["qkv_w"], precision=precision) + lp["qkv_b"]
    qkv = qkv.reshape(B, T, H, 3, K)  # HF interleaves (q,k,v) per head
    q, k, v = qkv[:, :, :, 0], qkv[:, :, :, 1], qkv[:, :, :, 2]  # [B,T,H,K]
    q, k = _rotary(q, positions, cfg), _rotary(k, positions, cfg)
    out = attention.causal_attention(q, k, v, bias_mask, precision, ATTENTION_BLOCK).reshape(B, T, H * K)
    return jnp.einsum("btd,de->bte", out, lp["out_w"], precision=precision) + lp["out_b"]


def _mlp(x, lp, act, precision):
    h = act(jnp.einsum("btd,df->btf", x, lp["fc_in_w"], precision=precision) + lp["fc_in_b"])
    return jnp.einsum("btf,fd->btd", h, lp["fc_out_w"], precision=precision) + lp["fc_out_b"]


def hidden_states(params: Params, cfg: NeoXConfig, input_ids: jax.Array,
                  attention_mask: jax.Array | None = None, position_ids: jax.Array | None = None,
                  dtype: Any = jnp.float32,
                  precision: jax.lax.Precision = jax.lax.Precision.HIGHEST) -> jax.Array:
    """Final-LayerNorm'd hidden states.

    input_ids [B,T] int; attention_mask [B,T] (1 = real token, 0 = padding; masks keys only, like
    HF); position_ids [B,T] (default arange(T), as HF does even with padding).
    Returns [B,T,D] in `dtype` (float32 default; bfloat16 allowed for speed, never for KLs).
    """
    B, T = input_ids.shape
    if position_ids is None:
        position_ids = jnp.broadcast_to(jnp.arange(T), (B, T))
    neg = jnp.finfo(jnp.float32).min
    allowed = jnp.tril(jnp.ones((T, T), bool))[None, None]  # [1,1,T,T] causal
    if attention_mask is not None:
        allowed = allowed & (attention_mask[:, None, None, :] > 0)
    bias_mask = jnp.where(allowed, 0.0, neg).astype(jnp.float32)
    act = _ACTIVATIONS[cfg.hidden_act]
    cast = lambda t: jax.tree.map(lambda a: a.astype(dtype), t)
    layers = cast(params["layers"])
    x = cast(params["embed_in"])[input_ids]  # [B,T,D]

    def block(x, lp):
        attn = _attention(_layer_norm(x, lp["ln1_scale"], lp["ln1_bias"], cfg.layer_norm_eps),
                          lp, bias_mask, position_ids, cfg, precision)
        if cfg.use_parallel_residual:
            mlp = _mlp(_layer_norm(x, lp["ln2_scale"], lp["ln2_bias"], cfg.layer_norm_eps),
                       lp, act, precision)
            return x + attn + mlp, None
        x = x + attn
        return x + _mlp(_layer_norm(x, lp["ln2_scale"], lp["ln2_bias"], cfg.layer_norm_eps),
                        lp, act, precision), None

    x, _ = jax.lax.scan(block, x, layers)
    return _layer_norm(x, params["final_ln_scale"].astype(dtype),
                       params["final_ln_bias"].astype(dtype), cfg.layer_norm_eps)


def logits(params: Params, cfg: NeoXConfig, input_ids: jax.Array, attention_mask=None,
           position_ids=None, dtype: Any = jnp.float32,
           precision: jax.lax.Precision = jax.lax.Precision.HIGHEST) -> jax.Array:
    """[B,T] ids -> [B,T,V] logits over the padded vocab (float32 accumulation)."""
    h = hidden_states(params, cfg, input_ids, attention_mask, position_ids, dtype, precision)
    return jnp.einsum("btd,dv->btv", h, params["embed_out"].astype(dtype), precision=precision,
                      preferred_element_type=jnp.float32)
