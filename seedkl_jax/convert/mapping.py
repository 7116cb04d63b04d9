"""HF state dicts <-> our Flax params, for every family (see models/*.py for each params layout).

One table per family says which HF tensor fills which params leaf; one engine checks names and
shapes and builds the tree. The expected shapes come from the Linen module itself (`jax.eval_shape`
of its init), so a table cannot disagree with the forward it feeds.

HF `nn.Linear` weights are [out, in] and get transposed to our [in, out] kernels; GPT-2's `Conv1D`
weights are stored [in, out] already. Tied output layers (GPT-2's lm_head, BERT's decoder, a tied
GPT-NeoX embed_out) are copies of the input embedding on disk and are dropped. Per-layer tensors
(`{i}` in the HF name) are stacked on a leading L axis.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Callable

import jax
import numpy as np

from seedkl_jax.errors import SeedKLError
from seedkl_jax.models import family as families

Params = dict[str, Any]


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


@functools.lru_cache(maxsize=64)
def param_shapes(cfg: Any) -> dict[str, tuple[int, ...]]:
    """Our leaf path "a/b/c" -> shape, for a model of `cfg` (abstract: nothing is allocated)."""
    tree = jax.eval_shape(lambda: families.init_params(cfg, jax.random.key(0)))
    return {"/".join(str(k.key) for k in path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _plan(cfg: Any) -> tuple[Table, list[tuple[str, str, bool, bool]]]:
    """(table, [(our path, HF name template, transpose, per_layer)] for the leaves this cfg has)."""
    table = TABLES[families.family_of(cfg).model_type]
    shapes = param_shapes(cfg)
    return table, [(ours, hf, t, "{i}" in hf) for ours, hf, t in table.rules if ours in shapes]


def expected_shapes(cfg: Any) -> dict[str, tuple[int, ...]]:
    """HF name -> shape, for every tensor a checkpoint of `cfg` must hold."""
    table, plan = _plan(cfg)
    shapes, want = param_shapes(cfg), {}
    for ours, hf, t, per_layer in plan:
        shape = shapes[ours][1:] if per_layer else shapes[ours]
        shape = shape[::-1] if t else shape
        for i in range(cfg.num_layers) if per_layer else (None,):
            want[hf.format(i=i)] = shape
    return want


def state_dict_to_params(sd: dict[str, np.ndarray], cfg: Any, where: str = "checkpoint") -> Params:
    """Check names and shapes, upcast to float32, build the params pytree (numpy leaves)."""
    table, plan = _plan(cfg)
    sd = {table.rename(k): v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if not table.ignored.match(k)}
    if cfg.tie_word_embeddings:
        for k in table.tied:
            sd.pop(k, None)
    if table.required and table.required not in sd:
        raise SeedKLError(f"{where}: {table.missing_hint}")
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
    f32 = lambda k, t: np.asarray(sd[k], dtype=np.float32).T if t else np.asarray(sd[k], dtype=np.float32)
    params: Params = {}
    for ours, hf, t, per_layer in plan:
        leaf = (np.stack([f32(hf.format(i=i), t) for i in range(cfg.num_layers)]) if per_layer
                else np.ascontiguousarray(f32(hf, t)))
        _set(params, ours, leaf)
    return params


def params_to_state_dict(params: Params, cfg: Any) -> dict[str, np.ndarray]:
    """Inverse of `state_dict_to_params` (float32, contiguous) — what `save_pretrained` would write."""
    np32 = lambda a, t: np.ascontiguousarray(np.asarray(a, dtype=np.float32).T if t else np.asarray(a, np.float32))
    sd = {}
    for ours, hf, t, per_layer in _plan(cfg)[1]:
        leaf = _get(params, ours)
        if per_layer:
            sd.update({hf.format(i=i): np32(leaf[i], t) for i in range(cfg.num_layers)})
        else:
            sd[hf] = np32(leaf, t)
    return sd


def _set(tree: dict, path: str, value) -> None:
    *parents, last = path.split("/")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[last] = value


def _get(tree: dict, path: str):
    for p in path.split("/"):
        tree = tree[p]
    return tree
