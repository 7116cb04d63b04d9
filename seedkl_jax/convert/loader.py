"""Load one checkpoint (local HF directory or hub id) of any supported family as Flax params, via the cache.

Why our own reader: transformers >= 5 has no Flax code, and we want float32 numpy params in our
layout (models/*.py) without building a torch model. The path is

    resolve (hf/hub.py: local dir | hub id[@revision] -> files)  ->  cache hit? restore (orbax; checksums
          verified, a corrupt entry is dropped with one warning and counts as a miss)
    else: config.json (hf/checkpoint.py; model_type picks the family, hf/families.py builds its config)
          ->  weights (weights.py: safetensors | shards | pytorch_model.bin)
          ->  hf/mapping.state_dict_to_params (names/shapes checked, upcast float32)  ->  cache.store

Every bad input raises SeedKLError naming the input and the fix, before anything is cached.
Hub access touches the network only on a cache miss: a cached (id, revision) loads offline.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from seedkl_jax.convert import cache
from seedkl_jax.convert.weights import DTYPES, convert
from seedkl_jax.errors import SeedKLError
from seedkl_jax.hf.checkpoint import CONFIG_FILE, TOKENIZER_FILES, pick_checkpoint_files, read_config, weight_files
from seedkl_jax.hf.checks import required_tensor_problem
from seedkl_jax.hf.families import model_config, transformers_config
from seedkl_jax.hf.hub import hub_snapshot, parse_ref
from seedkl_jax.hf.tokenizer import folder_tokenizer
from seedkl_jax.models import family as families
# One compiled forward per (config, dtype): jit's cache is keyed on the static args.
_logits = jax.jit(families.logits, static_argnums=1, static_argnames=("dtype", "precision"))


@dataclasses.dataclass
class Model:
    """A loaded checkpoint of any family. `params` has jax.Array leaves on the default device (no
    leading seed axis) in `dtype`, except that a checkpoint stored wholly in float16 or bfloat16 keeps
    that dtype at dtype="float32" (the same values exactly; the params cache then holds half the
    bytes): computations upcast on device.

    `config` is the family's config (NeoXConfig, GPT2Config, BertConfig); `logits(ids)` gives
    next-token logits (causal) or the masked-LM head's logits at every position of the unmasked ids."""

    config: Any
    hf_dict: dict  # config.json as read (dtype forced to float32); `hf_config` builds on it
    params: dict
    name: str  # absolute local path, or hub id
    revision: str | None
    local_dir: str  # holds config.json (+ tokenizer files: local dir, or the cache entry for hub ids)
    dtype: str = "float32"
    source: str = "convert"  # "cache" (orbax restore, checksums verified) or "convert" (read + converted this time)
    cache_entry: str | None = None  # None when nothing was stored (a read-only cache; processes other than 0)

    @functools.cached_property
    def hf_config(self) -> Any:
        """transformers' config of the checkpoint (dtype float32). Built on first use: importing
        transformers (and torch, which it pulls in) costs seconds that a cache hit need not pay."""
        return transformers_config(self.hf_dict)

    @property
    def family(self) -> families.Family:
        return families.family_of(self.config)

    def num_params(self) -> int:
        return int(sum(np.size(x) for x in jax.tree.leaves(self.params)))

    @functools.cached_property
    def real_vocab_size(self) -> int | None:
        """Ids of the checkpoint's tokenizer (tokenizer.json in `local_dir`; Pythia: 50,277 of 50,304
        rows), or None without one. `compare` normalises over these by default."""
        return None if self.local_tokenizer is None else self.local_tokenizer.vocab_size

    def mlm_token_ids(self) -> tuple[int, int, int, int]:
        """(cls, sep, mask, pad) ids of the tokenizer beside a masked LM: what its windows are built
        with (kernels/compare.py makes them an MLMSpec)."""
        tok = self.local_tokenizer
        if tok is None or tok.cls_id is None:
            raise SeedKLError(f"{self.name}: no tokenizer with [CLS]/[SEP]/[MASK]/[PAD] beside the checkpoint; "
                              "pass mlm=MLMSpec(...) to compare explicitly")
        return tok.cls_id, tok.sep_id, tok.mask_id, tok.pad_id

    @functools.cached_property
    def local_tokenizer(self):
        """The tokenizer in `local_dir` (tokenizer.json, vocab.txt or vocab.json + merges.txt), or None."""
        return folder_tokenizer(self.local_dir)

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
        """ids [B,T] (mask [B,T], 1 = token) -> float32 logits [B,T,V]. Small inputs and tests."""
        ids = np.asarray(input_ids)
        if ids.ndim != 2 or ids.size == 0 or ids.min() < 0 or ids.max() >= self.config.vocab_size:
            raise SeedKLError(f"input_ids: need a non-empty [B,T] array of ids in [0, "
                              f"{self.config.vocab_size}), got shape {ids.shape}; reshape or fix the ids")
        mask = None if attention_mask is None else np.asarray(attention_mask, np.int32)
        out = _logits(self.params, self.config, ids.astype(np.int32), mask, dtype=DTYPES[self.dtype])
        return np.asarray(out, np.float32)


def load(model: str, revision: str | None = None, *, dtype: str = "float32",
         cache_dir: str | os.PathLike | None = None, progress: bool = False) -> Model:
    """Load `model` (local HF dir, or hub id, "id@revision" accepted) in `dtype`, cached.

    dtype: "float32" (default; use it for KLs) or "bfloat16" (params cast after conversion).
    cache_dir: default $SEEDKL_CACHE or ~/.cache/seedkl (see cache.py). progress: tqdm bar.
    """
    if dtype not in DTYPES:
        raise SeedKLError(f"dtype={dtype!r}: not supported; use one of {sorted(DTYPES)}")
    name, revision, is_local = parse_ref(model, revision)
    fingerprint = None
    if is_local:
        ckpt = Path(name)
        weights = weight_files(ckpt)
        fingerprint = [(f.name, f.stat().st_size, f.stat().st_mtime_ns)
                       for f in [ckpt / CONFIG_FILE, *weights]]
    entry = cache.entry_dir(cache.cache_root(cache_dir), name, revision, dtype, fingerprint)
    info = {"model": name, "revision": revision, "dtype": dtype, "fingerprint": fingerprint}
    hit = cache.restore(entry)
    # The same files (one inode, e.g. a checkpoint hard-linked as several steps) cached under another
    # path: hard-link that entry's params (`cache.clone`) rather than converting and storing a copy.
    same = _same_files_pointer(entry, dtype, [ckpt / CONFIG_FILE, *weights]) if is_local else None
    if hit is None and same is not None and same.is_file():
        if cache.clone(entry.parent / same.read_text(), entry, {**info, "weights": [f.name for f in weights]}):
            hit = cache.restore(entry)
    stored = entry if hit is not None else None
    if hit is not None:
        params, config = hit
    else:
        if not is_local:
            ckpt = hub_snapshot(name, revision, pick_checkpoint_files)
            weights = weight_files(ckpt)
        config = read_config(ckpt)
    cfg = model_config(config, name)
    if hit is None:
        params = convert(ckpt, weights, cfg, dtype, progress)
        extra = [] if is_local else [ckpt / f for f in TOKENIZER_FILES if (ckpt / f).is_file()]
        info["weights"] = [f.name for f in weights]
        if progress:
            tqdm.write(f"saving params to the cache: {entry}")
        try:
            stored = cache.store(entry, params, config, info, extra)  # None on processes other than 0
            if same is not None and stored is not None:
                same.parent.mkdir(exist_ok=True)
                same.write_text(stored.name)
        except PermissionError as e:  # past the cache's own check (cache._start): a folder inside turned unwritable
            raise SeedKLError(f"{entry.parent}: cannot write the cache ({e.strerror}); pass cache_dir=... "
                              "or set SEEDKL_CACHE to a writable directory") from e
    # On the device once, here: every compare would otherwise copy the host arrays over again.
    return Model(config=cfg, hf_dict=config, params=jax.device_put(params), name=name, revision=revision,
                 local_dir=str(ckpt if is_local or stored is None else entry), dtype=dtype,
                 source="convert" if hit is None else "cache", cache_entry=None if stored is None else str(entry))


def checkpoint_config(model: str, revision: str | None = None, *, dtype: str = "float32",
                      cache_dir: str | os.PathLike | None = None) -> Any:
    """Our config of a checkpoint without loading its weights: from the local config.json, a cache
    entry, or the hub's config.json alone. Raises SeedKLError for an unsupported model_type."""
    name, revision, is_local = parse_ref(model, revision)
    if is_local:
        config = read_config(Path(name))
        cfg = model_config(config, name)
        problem = required_tensor_problem(Path(name), config)
        if problem:
            raise SeedKLError(problem)
        return cfg
    entry = cache.entry_dir(cache.cache_root(cache_dir), name, revision, dtype, None)
    config = cache.checked_config(entry)  # None: no entry, or one that fails its checksum -> ask the hub
    if config is not None:
        return model_config(config, name)
    return model_config(read_config(hub_snapshot(name, revision, lambda names: [CONFIG_FILE])), name)


def _same_files_pointer(entry: Path, dtype: str, files: list[Path]) -> Path:
    """Where the name of the cache entry converted from exactly these files (same inodes, sizes and
    mtimes: e.g. one checkpoint hard-linked as several steps) is kept; a later load of the same files
    under another path hard-links that entry's params (`cache.clone`) instead of storing a copy."""
    stats = [(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) for st in map(os.stat, files)]
    key = cache._hash(cache.LAYOUT_VERSION, dtype, stats)
    return entry.parent / ".same-files" / key
