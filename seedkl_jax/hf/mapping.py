"""HF state dicts <-> our Flax params, for every family (see models/*.py for each params layout).

One table per family (hf/families.py) says which HF tensor fills which params leaf; this engine checks
names and shapes and builds the tree. The expected shapes come from the Linen module itself (`jax.eval_shape`
of its init), so a table cannot disagree with the forward it feeds.

HF `nn.Linear` weights are [out, in] and get transposed to our [in, out] kernels; GPT-2's `Conv1D`
weights are stored [in, out] already. Tied output layers (GPT-2's lm_head, BERT's decoder, a tied
GPT-NeoX embed_out) are copies of the input embedding on disk and are dropped. Per-layer tensors
(`{i}` in the HF name) are stacked on a leading L axis.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

from seedkl_jax.errors import SeedKLError
from seedkl_jax.hf.families import TABLES, Table
from seedkl_jax.models import family as families

Params = dict[str, Any]


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
