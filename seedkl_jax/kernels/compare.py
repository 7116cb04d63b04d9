"""compare(): all S seeds' forward passes + the divergence kernel in one jitted step, over a mesh.

Why one step: the S models share a config, so their params stack on a leading seed axis and one
`jax.vmap`ped forward runs them together; the hidden states [S,B,T,D] go straight into the
vocab-chunked kernel (kernels/divergence.py) and only per-position [S,S] results leave the device.

Shapes: windows are fed in batches of a fixed size (`window_batch`, default = the mesh's data-axis
size; the last batch is padded with empty windows) so every call of a compare with the same model
config, window length and options reuses one compiled step — also across calls. A batch whose
windows all keep ≤ `Windows.keep_max` slots (every batch but a text's first, with sliding windows)
runs a second compiled step that gathers just those slots after the forward, so the overlap the
windows drop skips the unembedding and the KL.

Kernel options arrive as one `KernelConfig`, resolved once (`resolve_kernel`, kernels/defaults.py)
at the top of `compare_stacked`; the jitted step takes the resolved config as a static argument.

Sharding: with `mesh` (a `jax.sharding.Mesh` with a "data" axis and optionally a "seed" axis),
window batches are split over "data" and the stacked params are replicated, or split over "seed"
when the mesh has one (S must then be divisible by its size). The same program runs on 1 device
when `mesh` is None; results agree to float32 rounding (tests/test_sharding.py checks ≤ 1e-6).
The mesh may span the devices of several processes (multi-host, seedkl_jax.distributed "global"
mode): every process then calls compare_stacked with the same inputs, each places only the slices
its own devices hold, and every process gets the full results (an all-gather per batch).
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as PS
from tqdm.auto import tqdm

from seedkl_jax.config import METRICS, KernelConfig
from seedkl_jax.errors import SeedKLError
from seedkl_jax.kernels.defaults import resolve_kernel  # noqa: F401  (also imported from here)
from seedkl_jax.kernels.divergence import KERNELS
from seedkl_jax.kernels.metrics import check_metrics
from seedkl_jax.kernels.reference import check_reference
from seedkl_jax.kernels.windows import MLMSpec, default_window, make_windows, mlm_windows
from seedkl_jax.kernels.xla_cache import use_compilation_cache  # noqa: F401  (moved there; re-exported)
from seedkl_jax.models import family as families

PER_SEED = ("surprisal", "entropy", "kl_uniform", "kl_unigram")
def check_seed_params(params_list: Sequence[Any]) -> None:
    """≥ 2 params pytrees of one structure and shape (the seeds of one model size), else a named error."""
    if len(params_list) < 2:
        raise SeedKLError(f"models: got {len(params_list)} seed(s); KL between seeds needs ≥ 2 checkpoints")
    ref = jax.tree.structure(params_list[0])
    shapes0 = [np.shape(x) for x in jax.tree.leaves(params_list[0])]
    for i, p in enumerate(params_list[1:], 1):
        if jax.tree.structure(p) != ref or [np.shape(x) for x in jax.tree.leaves(p)] != shapes0:
            raise SeedKLError(f"models: seed {i} has differently shaped parameters than seed 0; "
                              "compare only checkpoints of one model size")


def stack_params(params_list: Sequence[Any]) -> dict:
    """S params pytrees of one config -> one pytree whose leaves have a leading S axis (float32).

    Leaves go to the device in their own dtype (fp16/bf16 params stay half the bytes on the way)
    and are upcast there."""
    check_seed_params(params_list)
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]).astype(jnp.float32), *params_list)


def seed_params(params_list: Sequence[Any], mesh: Mesh | None = None, backend: str | None = None):
    """The S seeds' params as `compare_stacked` runs them fastest on this backend.

    CPU without a "seed" mesh axis: a tuple of the S pytrees on the device, as they are: no stacked
    copy per call (stacking 70m-sized params costs a noticeable fraction of a step), and one forward
    per seed ran faster than the vmapped forward at the Pythia shapes (docs/performance.md).
    Elsewhere (GPU/TPU, or a mesh that splits the seeds): `stack_params`, one vmapped forward.
    """
    on_cpu = (backend or jax.default_backend()) == "cpu"
    if on_cpu and (mesh is None or "seed" not in mesh.axis_names):
        check_seed_params(params_list)
        return tuple(jax.device_put(p) for p in params_list)
    return stack_params(params_list)  # checks them too


def _forward(params, cfg: Any, ids, valid):
    """h [S,Bw,T,D'], W [S,D',V] of the seeds in `params` (see `seed_params`): a tuple runs one
    forward per seed, stacked params one vmapped forward."""
    if isinstance(params, tuple):
        h = jnp.stack([families.hidden_states(p, cfg, ids, valid) for p in params])
        w = jnp.stack([families.unembedding(p, cfg) for p in params])  # the kernel upcasts fp16/bf16
        return h, w
    h = jax.vmap(lambda p: families.hidden_states(p, cfg, ids, valid))(params)
    return h, jax.vmap(lambda p: families.unembedding(p, cfg))(params)


@functools.partial(jax.jit, static_argnames=("cfg", "vocab_size", "kernel", "metrics", "topk"))
def _step(stacked, ids, targets, ref, valid=None, slots=None, *, cfg: Any, vocab_size: int, kernel: KernelConfig,
          metrics: tuple[str, ...] = ("kl",), topk: int = 0):
    """ids/targets [Bw,T] (valid [Bw,T]: real tokens, bidirectional models) -> kl [Bw,T',S,S], per-seed
    [Bw,T',S] (and the opt-in metrics / top-k, [Bw,T',S,S] / [Bw,T',S,K]): T' = T, or with slots
    [Bw,T'] (int32 slot indices per window) only those slots.

    The forward always sees the whole window (the kept slots' context); the unembedding and the KL run
    only on the slots the kernel is given, so a later window's overlap half costs no kernel time.
    Family-agnostic: the kernel sees h [S,Bw,T',D'] and W [S,D',V] with logits = h W (models/family.py)."""
    h, w = _forward(stacked, cfg, ids, valid)  # [S,Bw,T,D'], [S,D',V]
    if slots is not None:
        h = jnp.take_along_axis(h, slots[None, :, :, None], axis=2)
        targets = jnp.take_along_axis(targets, slots, axis=1)
    return KERNELS[kernel.kernel.value](h, w, targets, vocab_size=vocab_size, reference_logprobs=ref,
                                        vocab_chunk=kernel.vocab_chunk, position_block=kernel.position_block,
                                        form=kernel.form.value, cache_logits=kernel.cache_logits,
                                        metrics=metrics, topk=topk)


def _check_mesh(mesh: Mesh | None, S: int) -> tuple[int, str | None]:
    """(data-axis size, seed axis name or None)."""
    if mesh is None:
        return 1, None
    if "data" not in mesh.axis_names or set(mesh.axis_names) - {"data", "seed"}:
        raise SeedKLError(f"mesh: axes {mesh.axis_names}; use a Mesh with a 'data' axis and optionally a "
                          "'seed' axis, e.g. Mesh(np.array(jax.devices()), ('data',))")
    seed_axis = "seed" if "seed" in mesh.axis_names else None
    if seed_axis and S % mesh.shape["seed"]:
        raise SeedKLError(f"mesh: its 'seed' axis has {mesh.shape['seed']} devices, which does not divide "
                          f"{S} seeds; use a seed axis size dividing S or a data-only mesh")
    return mesh.shape["data"], seed_axis


def _put(x, sharding: NamedSharding) -> jax.Array:
    """Host (or local-device) array -> array laid out by `sharding`.

    A mesh of this process's devices takes the plain `device_put`; one spanning other processes'
    devices cannot (it would need their data), so each process builds the global array from the
    slices its own devices hold (every process has all of `x`: same inputs everywhere)."""
    if sharding.is_fully_addressable:
        return jax.device_put(x, sharding)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def _fetch(x: jax.Array) -> np.ndarray:
    """Device -> host numpy; all-gathers an array whose shards live on other processes too
    (a collective: every process fetches the same arrays in the same order)."""
    if x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _check_ids(input_ids, vocab_size: int) -> np.ndarray:
    ids = np.asarray(input_ids)
    if ids.ndim not in (1, 2) or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
        raise SeedKLError(f"input_ids: {ids.dtype} array of shape {ids.shape}; pass integer token ids [N] or [B,N]")
    if ids.shape[-1] < 2:
        raise SeedKLError(f"input_ids: a text of {ids.shape[-1]} token(s) has nothing to predict; pass ≥ 2 tokens")
    if ids.min() < 0 or ids.max() >= vocab_size:
        bad = ids[(ids < 0) | (ids >= vocab_size)]
        raise SeedKLError(f"input_ids: token id {int(bad.flat[0])} is outside the vocabulary [0, {vocab_size}); "
                          "encode the text with the models' tokenizer (or pass the right vocab_size)")
    return ids


def _check_finite(kept: dict[str, np.ndarray], seed_names: Sequence[str]) -> None:
    """A seed whose own outputs (at kept slots: [n,S,...]) are NaN/inf has a broken checkpoint: name it.
    Integer outputs (topk_ids) cannot be NaN and are skipped."""
    kept = {k: v for k, v in kept.items() if not np.issubdtype(v.dtype, np.integer)}
    broken = [s for s in range(len(seed_names))
              if any(not np.all(np.isfinite(kept[k][:, s])) for k in PER_SEED if k in kept)]
    if broken:
        names = ", ".join(f"seed {s} ({seed_names[s]})" for s in broken)
        raise SeedKLError(f"models: {names} produced NaN/inf logits; the checkpoint is broken — "
                          "re-download or re-convert it")
    if not all(np.all(np.isfinite(v)) for v in kept.values()):
        raise SeedKLError("models: the KL came out NaN/inf although every seed's log-probs are finite; "
                          "report this with the checkpoints used")


def _windows(cfg: Any, ids: np.ndarray, window, overlap, mlm: MLMSpec | None, doc_ids):
    """The windows a text [N] / [B,N] is scored in (kernels/windows.py), checked against the model."""
    causal = families.family_of(cfg).causal
    window, overlap = default_window(cfg.context, causal, window, overlap)
    if causal:
        win = make_windows(ids, window, overlap)
    elif mlm is None:
        raise SeedKLError(f"mlm: {cfg.model_type} is a masked LM; pass mlm=MLMSpec(mode, [CLS], [SEP], [MASK], [PAD] ids)")
    else:
        win = mlm_windows(ids, np.zeros(np.shape(ids), np.int64) if doc_ids is None else doc_ids, mlm, window)
    if win.ids.shape[1] > cfg.max_position_embeddings:
        raise SeedKLError(f"window: {window} tokens exceed the model's context of {cfg.max_position_embeddings}; "
                          f"pass window ≤ {cfg.max_position_embeddings} (and overlap < window)")
    return win


def _kept_slots(win, i: int, bw: int):
    """(slots, keep, dest) of the window batch starting at window i: slots [bw,L] int32, the L =
    `win.keep_max` slots of each window the kernel scores (its kept ones, padded with slot 0), or
    None to score all T when some window keeps more (a text's first); keep [bw,L|T] which results
    are kept, dest [bw,L|T] their index in the flattened output."""
    mask, dest = win.mask[i:i + bw], win.dest[i:i + bw]
    L = win.keep_max
    if L is None or mask.sum(1).max() > L:
        return None, mask, dest
    slots, keep = np.zeros((bw, L), np.int32), np.zeros((bw, L), bool)
    for b, row in enumerate(mask):
        idx = np.flatnonzero(row)
        slots[b, :len(idx)], keep[b, :len(idx)] = idx, True
    return slots, keep, np.take_along_axis(dest, slots, 1)


def compare_stacked(stacked: dict, model_cfg: Any, input_ids, *, kernel: KernelConfig | None = None,
                    vocab_size: int | None = None, reference_logprobs=None, window: int | None = None,
                    overlap: int | None = None, mesh: Mesh | None = None, mlm: MLMSpec | None = None,
                    doc_ids=None, seed_names: Sequence[str] | None = None, window_batch: int | None = None,
                    progress: bool = False, metrics: Sequence[str] = ("kl",), topk: int = 0,
                    last_only: bool = False) -> dict[str, np.ndarray]:
    """Per-position divergences between the S seeds in `stacked`: params stacked on a leading seed
    axis (`stack_params`) or a tuple of S params pytrees (`seed_params` gives what runs fastest here).

    input_ids [N] (one text; P = N−1 predictions) or [B,N] (each row a text; -> [B,N−1,...]).
    kernel: how the divergence kernel runs (form, vocab chunk, position block, logits cache, fused or
    naive); None fields are resolved once here (`resolve_kernel`: the backend's measured choices).
    vocab_size: real vocab (normalise over ids < vocab_size); default model_cfg.vocab_size.
    reference_logprobs [vocab_size]: adds kl_unigram (renormalised; must be finite, see
    `reference.unigram_logprobs`); [K, vocab_size]: K references in the same pass, kl_unigram [P,S,K].
    window_batch: windows per jitted step (default: the mesh's data-axis size).
    last_only: score only each text's last prediction (causal models; a probe's target): the models still
    see every token, the unembedding and the kernel run on one slot per text, and the outputs lose their
    position axis (kl [B,S,S] for input_ids [B,N]).
    window/overlap: default the model's context / half of it (kernels/windows.default_window).
    Masked LMs (model_cfg of a non-causal family) need `mlm` (how to score) and take one text [N] laid
    out as data/text.py's masked-LM text, `doc_ids` [N] its documents (default: one document); outputs
    are then per wordpiece p = 1..N−1 (its own distribution, not the next token's).
    metrics: pairwise metrics besides the KL (a subset of config.METRICS with "kl"): "top1" adds
    top1_agree [P,S,S] (1 where seeds i and j have the same most likely id), "js" adds js [P,S,S]
    (Jensen–Shannon divergence, nats); topk=K > 0 adds topk_ids [P,S,K] (int32) and topk_prob [P,S,K]
    (each seed's K most likely real ids and their probabilities, descending). All from the same pass.
    Returns float32 numpy: kl [P,S,S] (KL(p_i‖p_j), diagonal exactly 0, never negative),
    surprisal, entropy, kl_uniform[, kl_unigram] [P,S], and the opt-in arrays above (topk_ids int32).
    """
    if isinstance(stacked, tuple):  # checked, and stacked where this backend / mesh wants it
        stacked = seed_params(stacked, mesh)
    S = len(stacked) if isinstance(stacked, tuple) else int(np.shape(jax.tree.leaves(stacked)[0])[0])
    kernel = resolve_kernel(kernel, mesh, S)  # a resolved config comes back unchanged (checked only)
    seed_names = [str(i) for i in range(S)] if seed_names is None else list(seed_names)
    if len(seed_names) != S:
        raise SeedKLError(f"seed_names: {len(seed_names)} names for {S} stacked seeds")
    vocab_size = model_cfg.vocab_size if vocab_size is None else int(vocab_size)
    if not 1 <= vocab_size <= model_cfg.vocab_size:
        raise SeedKLError(f"vocab_size: {vocab_size} must be in [1, {model_cfg.vocab_size}] (the model's vocab rows)")
    ids = _check_ids(input_ids, vocab_size)
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    check_metrics(metrics, topk, vocab_size)
    metrics = tuple(m for m in METRICS if m in metrics)  # one order, hashable: a static argument of the step
    ref = None if reference_logprobs is None else check_reference(reference_logprobs, vocab_size)
    win = _windows(model_cfg, ids, window, overlap, mlm, doc_ids)
    if last_only:
        if not families.family_of(model_cfg).causal:
            raise SeedKLError(f"last_only: {model_cfg.model_type} is a masked LM; it scores every wordpiece")
        win = win.last_only()
    n_data, seed_axis = _check_mesh(mesh, S)
    bw = n_data if window_batch is None else int(window_batch)
    if bw < 1 or bw % n_data:
        raise SeedKLError(f"window_batch: {bw} must be a positive multiple of the mesh's data axis ({n_data})")
    win = win.pad_to(-(-win.num_windows // bw) * bw)

    if mesh is None:
        put_params = put_batch = jnp.asarray
    else:
        params_sh = NamedSharding(mesh, PS(seed_axis))
        batch_sh = NamedSharding(mesh, PS("data", None))
        put_params = lambda x: _put(x, params_sh)
        put_batch = lambda x: _put(x, batch_sh)
    params = jax.tree.map(put_params, stacked)
    ref_dev = None if ref is None else (jnp.asarray(ref) if mesh is None else _put(ref, NamedSharding(mesh, PS())))
    step = functools.partial(_step, cfg=model_cfg, vocab_size=vocab_size, kernel=kernel, metrics=metrics,
                             topk=int(topk))
    # Dispatch every batch (async), then collect: the device never waits for the host.
    valid = (lambda i: None) if win.valid is None else (lambda i: put_batch(win.valid[i:i + bw]))
    pending = []
    for i in range(0, win.num_windows, bw):
        slots, keep, dest = _kept_slots(win, i, bw)
        res = step(params, put_batch(win.ids[i:i + bw]), put_batch(win.targets[i:i + bw]), ref_dev, valid(i),
                   None if slots is None else put_batch(slots))
        pending.append((res, keep, dest))
    out: dict[str, np.ndarray] = {}
    n_out = int(np.prod(win.out_shape))
    for res, keep, dest in tqdm(pending, desc="compare", unit="batch", disable=not progress, leave=False):
        # one transfer of the batch's results (all arrays at once); other processes' shards gathered
        res = jax.device_get(res) if mesh is None else {k: _fetch(v) for k, v in res.items()}
        kept = {k: np.asarray(v[keep], np.int32 if np.issubdtype(v.dtype, np.integer) else np.float32)
                for k, v in res.items()}  # topk_ids stay integer ids
        _check_finite(kept, seed_names)
        for k, v in kept.items():
            out.setdefault(k, np.empty((n_out,) + v.shape[1:], v.dtype))[dest[keep]] = v
    return {k: v.reshape(win.out_shape + v.shape[1:]) for k, v in out.items()}


def _real_vocab_size(model) -> int | None:
    """The real vocab of a model: its `real_vocab_size` (a loaded Model reads the tokenizer files beside
    it; Pythia: 50,277 of 50,304 rows), else None (= the config's vocab rows). The kernel itself reads
    no tokenizer: it imports nothing from data/."""
    v = getattr(model, "real_vocab_size", None)
    return int(v) if v else None


def compare(models: Sequence[Any], input_ids, *, reference_logprobs=None, vocab_size: int | None = None,
            window: int | None = None, overlap: int | None = None, vocab_chunk: int | None = None,
            mesh: Mesh | None = None, kernel: KernelConfig | str | None = None, form: str | None = None,
            position_block: int | None = None, cache_logits: bool | None = None,
            metrics: Sequence[str] = ("kl",), topk: int = 0, **options) -> dict[str, np.ndarray]:
    """`compare_stacked` on loaded models (`seedkl_jax.api.load`): same config, ≥ 2 seeds.

    vocab_size defaults to the models' real vocab (`Model.real_vocab_size`: the tokenizer beside the
    checkpoint), else their config's vocab rows. kernel: a `KernelConfig`, or "fused"/"naive" with
    vocab_chunk, form, position_block, cache_logits as loose keywords (the same fields; not both).
    metrics / topk: the opt-in outputs, as in `compare_stacked`. `options` go to `compare_stacked`
    (window_batch, mlm, ...); a masked LM's `mlm` defaults to
    unmasked scoring with `Model.mlm_token_ids()`. The persistent compilation cache is the caller's choice
    (`use_compilation_cache`; the CLI turns it on).
    """
    loose = dict(form=form, vocab_chunk=vocab_chunk, position_block=position_block, cache_logits=cache_logits)
    if isinstance(kernel, KernelConfig):
        if any(v is not None for v in loose.values()):
            raise SeedKLError("kernel: pass either a KernelConfig or the loose vocab_chunk/form/position_block/"
                              "cache_logits keywords, not both")
    else:
        kernel = KernelConfig(**({} if kernel is None else {"kernel": kernel}), **loose)
    models = list(models)
    if len(models) < 2:
        raise SeedKLError(f"models: got {len(models)} model(s); KL between seeds needs ≥ 2 checkpoints")
    names = [str(getattr(m, "name", i)) + (f"@{m.revision}" if getattr(m, "revision", None) else "")
             for i, m in enumerate(models)]
    cfg = models[0].config
    for m, name in zip(models[1:], names[1:]):
        if type(m.config) is not type(cfg):
            raise SeedKLError(f"models: {name} is a {m.config.model_type} but {names[0]} a {cfg.model_type}; "
                              "compare seeds of one model family, size and config only")
        if m.config != cfg:
            diff = [f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(m.config, f.name)]
            raise SeedKLError(f"models: {name} differs from {names[0]} in {', '.join(diff)}; "
                              "compare seeds of one model size and config only")
    vocabs = {_real_vocab_size(m) for m in models}
    if len(vocabs) > 1:
        raise SeedKLError(f"models: their tokenizers have different vocab sizes {sorted(v or 0 for v in vocabs)}; "
                          "compare checkpoints that share one tokenizer")
    if vocab_size is None:
        vocab_size = vocabs.pop()
    if not families.family_of(cfg).causal and options.get("mlm") is None:
        options["mlm"] = MLMSpec("unmasked", *models[0].mlm_token_ids())
    return compare_stacked(tuple(m.params for m in models), cfg, input_ids,  # laid out there by seed_params
                           kernel=kernel, vocab_size=vocab_size, reference_logprobs=reference_logprobs,
                           window=window, overlap=overlap, mesh=mesh, seed_names=names, metrics=metrics,
                           topk=topk, **options)
