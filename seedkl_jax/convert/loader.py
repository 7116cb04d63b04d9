"""Load one checkpoint (local HF directory or hub id) of any supported family as Flax params, via the cache.

Why our own reader: transformers >= 5 has no Flax code, and we want float32 numpy params in our
layout (models/*.py) without building a torch model. The path is

    resolve (convert/hub.py: local dir | hub id[@revision] -> files)  ->  cache hit? restore (orbax)
    else: config.json (model_type picks the family: models.FAMILIES)
          ->  weights (safetensors | shards | pytorch_model.bin)
          ->  mapping.state_dict_to_params (names/shapes checked, upcast float32)  ->  cache.store

Every bad input raises SeedKLError naming the input and the fix, before anything is cached.
Hub access touches the network only on a cache miss: a cached (id, revision) loads offline.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import types
from pathlib import Path
from typing import Any

import jax
import ml_dtypes
import numpy as np
from tqdm.auto import tqdm

from seedkl_jax.convert import cache
from seedkl_jax.convert.hub import (TOKENIZER_FILES, has_tokenizer, hub_snapshot, parse_ref, pick_checkpoint_files,
                                    weight_files)
from seedkl_jax.convert.mapping import state_dict_to_params
from seedkl_jax.errors import SeedKLError
from seedkl_jax.models import family as families
from seedkl_jax.models import gpt_neox

DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16)}
# "cache" or "convert": how the most recent `load` got its params (also `Model.source`).
LAST_LOAD_SOURCE: str | None = None

# safetensors dtype tags -> numpy (little-endian on disk).
_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": ml_dtypes.bfloat16, "I64": "<i8",
              "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}
_FLOAT_TAGS = {"F64", "F32", "F16", "BF16"}
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
    source: str = "convert"  # "cache" (orbax restore) or "convert" (read + converted this time)
    cache_entry: str | None = None

    @functools.cached_property
    def hf_config(self) -> Any:
        """transformers' config of the checkpoint (dtype float32). Built on first use: importing
        transformers (and torch, which it pulls in) costs seconds that a cache hit need not pay."""
        if self.config.model_type == "gpt_neox":
            return configs(self.hf_dict, self.name)[0]
        from transformers import AutoConfig

        return AutoConfig.for_model(**self.hf_dict)

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

    def mlm_spec(self, mode: str = "unmasked"):
        """How a masked LM's windows are built (kernels/windows.MLMSpec), from the tokenizer beside it."""
        from seedkl_jax.kernels.windows import MLMSpec

        tok = self.local_tokenizer
        if tok is None or tok.cls_id is None:
            raise SeedKLError(f"{self.name}: no tokenizer with [CLS]/[SEP]/[MASK]/[PAD] beside the checkpoint; "
                              "pass mlm=MLMSpec(...) to compare explicitly")
        return MLMSpec(mode, tok.cls_id, tok.sep_id, tok.mask_id, tok.pad_id)

    @functools.cached_property
    def local_tokenizer(self):
        """The tokenizer in `local_dir` (tokenizer.json, vocab.txt or vocab.json + merges.txt), or None."""
        folder = Path(self.local_dir)
        if not folder.is_dir() or not has_tokenizer({p.name for p in folder.iterdir()}):
            return None
        from seedkl_jax.data.tokenizer import load_tokenizer

        return load_tokenizer(str(folder))

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
    global LAST_LOAD_SOURCE
    if dtype not in DTYPES:
        raise SeedKLError(f"dtype={dtype!r}: not supported; use one of {sorted(DTYPES)}")
    name, revision, is_local = parse_ref(model, revision)
    fingerprint = None
    if is_local:
        ckpt = Path(name)
        weights = weight_files(ckpt)
        fingerprint = [(f.name, f.stat().st_size, f.stat().st_mtime_ns)
                       for f in [ckpt / "config.json", *weights]]
    entry = cache.entry_dir(cache.cache_root(cache_dir), name, revision, dtype, fingerprint)
    info = {"model": name, "revision": revision, "dtype": dtype, "fingerprint": fingerprint}
    hit = cache.restore(entry)
    # The same files (one inode, e.g. a checkpoint hard-linked as several steps) cached under another
    # path: hard-link that entry's params (`cache.clone`) rather than converting and storing a copy.
    same = _same_files_pointer(entry, dtype, [ckpt / "config.json", *weights]) if is_local else None
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
    # A cache entry's config passed transformers' checks when it was stored: read it directly.
    cfg = model_config(config, name, checked=hit is not None)
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
        except PermissionError as e:
            raise SeedKLError(f"{entry.parent}: cannot write the cache ({e.strerror}); pass cache_dir=... "
                              "or set SEEDKL_CACHE to a writable directory") from e
    LAST_LOAD_SOURCE = "convert" if hit is None else "cache"
    # On the device once, here: every compare would otherwise copy the host arrays over again.
    return Model(config=cfg, hf_dict=config, params=jax.device_put(params), name=name, revision=revision,
                 local_dir=str(ckpt if is_local or stored is None else entry), dtype=dtype, source=LAST_LOAD_SOURCE,
                 cache_entry=str(entry))


def checkpoint_config(model: str, revision: str | None = None, *, dtype: str = "float32",
                      cache_dir: str | os.PathLike | None = None) -> Any:
    """Our config of a checkpoint without loading its weights: from the local config.json, a cache
    entry, or the hub's config.json alone. Raises SeedKLError for an unsupported model_type."""
    name, revision, is_local = parse_ref(model, revision)
    if is_local:
        config = read_config(Path(name))
        cfg = model_config(config, name, checked=True)  # no transformers import; `load` checks it fully
        _check_tensor_names(Path(name), cfg, config)
        return cfg
    entry = cache.entry_dir(cache.cache_root(cache_dir), name, revision, dtype, None)
    if cache.is_complete(entry):
        try:
            return model_config(json.loads((entry / "config.json").read_text()), name, checked=True)
        except (OSError, ValueError):
            pass  # an unreadable entry: ask the hub
    return model_config(read_config(hub_snapshot(name, revision, lambda names: ["config.json"])), name)


def _check_tensor_names(ckpt: Path, cfg: Any, config: dict) -> None:
    """The cheap part of the weights check, without reading tensors: a family's required tensor (BERT's
    MLM head) must be there — from the safetensors headers, else config.json's `architectures`."""
    from seedkl_jax.convert.mapping import TABLES

    table = TABLES[cfg.model_type]
    if not table.required:
        return
    weights = weight_files(ckpt)
    if all(f.suffix == ".safetensors" for f in weights):
        names = {table.rename(k) for f in weights for k in _safetensors_names(f)}
        present = table.required in names
    else:  # pytorch_model.bin: the names need the whole file; the declared architecture says it too
        present = config.get("architectures") not in (["BertModel"],)
    if not present:
        raise SeedKLError(f"{ckpt}: {table.missing_hint}")


def _safetensors_names(path: Path) -> list[str]:
    with open(path, "rb") as f:
        head = f.read(8)
        try:
            return [k for k in json.loads(f.read(int.from_bytes(head, "little"))) if k != "__metadata__"]
        except (ValueError, MemoryError, OverflowError):
            return []  # a corrupt header is reported by the full read


def _same_files_pointer(entry: Path, dtype: str, files: list[Path]) -> Path:
    """Where the name of the cache entry converted from exactly these files (same inodes, sizes and
    mtimes: e.g. one checkpoint hard-linked as several steps) is kept; a later load of the same files
    under another path hard-links that entry's params (`cache.clone`) instead of storing a copy."""
    key = cache._hash(cache.LAYOUT_VERSION, dtype, [(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) for st in map(os.stat, files)])
    return entry.parent / ".same-files" / key


def convert(ckpt: Path, weights: list[Path], cfg: Any, dtype: str,
            progress: bool = False) -> dict:
    """Read `weights` of checkpoint dir `ckpt` and build the params pytree in `dtype`."""
    with tqdm(total=0, unit="tensor", desc="read weights", disable=not progress) as bar:
        sd = read_state_dict(weights, bar)
        bar.set_description("convert")
        params = state_dict_to_params(sd, cfg, where=str(ckpt))
    narrow = stored_half_dtype(weights) if dtype == "float32" else DTYPES[dtype]
    if narrow is not None:  # float32 from fp16/bf16 weights: back to their own dtype, exactly
        params = jax.tree.map(lambda a: a.astype(narrow), params)
    return params


def stored_half_dtype(weights: list[Path]) -> np.dtype | None:
    """float16 / bfloat16 when every floating tensor of the safetensors `weights` is stored in that
    one dtype (Pythia's checkpoints), else None (float32, mixed, or pytorch_model.bin)."""
    tags = set()
    for f in weights:
        if f.suffix != ".safetensors":
            return None
        with open(f, "rb") as fh:  # already read and validated by read_state_dict
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        tags |= {v["dtype"] for k, v in header.items() if k != "__metadata__" and v["dtype"] in _FLOAT_TAGS}
    half = {"F16": np.dtype(np.float16), "BF16": np.dtype(ml_dtypes.bfloat16)}
    return half.get(tags.pop()) if len(tags) == 1 else None


# --------------------------------------------------------------------------- resolution

def read_config(ckpt: Path) -> dict:
    """config.json as a dict, checked to be of a supported family, with dtype forced to float32."""
    path = ckpt / "config.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SeedKLError(f"{path}: unreadable ({e}); re-download the checkpoint's config.json") from e
    if not isinstance(raw, dict) or raw.get("model_type") not in families.FAMILIES:
        kind = raw.get("model_type") if isinstance(raw, dict) else type(raw).__name__
        raise SeedKLError(f"{path}: model_type is {kind!r}, which seedkl does not read; supported model "
                          f"types: {', '.join(sorted(families.FAMILIES))}")
    raw.pop("torch_dtype", None)  # old Pythia configs say float16; we always convert to float32
    raw["dtype"] = "float32"
    return raw


def model_config(config: dict, name: str, checked: bool = False) -> Any:
    """Our config (of the family config.json's model_type names) from a config.json dict of `name`.
    `checked`: the dict comes from a cache entry (it passed transformers' checks when stored)."""
    fam = families.family_of(config.get("model_type"))
    if fam.model_type == "gpt_neox":
        return neox_config(config, name) if checked else configs(config, name)[1]
    try:
        return fam.config.from_hf_dict(config)
    except SeedKLError as e:
        raise SeedKLError(f"{name}: {str(e).removeprefix('config: ')}") from e
    except (ValueError, TypeError) as e:
        raise SeedKLError(f"{name}: config.json rejected ({e}); fix or re-download it") from e


def configs(config: dict, name: str) -> tuple[Any, gpt_neox.NeoXConfig]:
    """(transformers GPTNeoXConfig, our NeoXConfig) from a config.json dict of checkpoint `name`."""
    from transformers import GPTNeoXConfig

    try:
        hf_config = GPTNeoXConfig.from_dict(dict(config))
        return hf_config, gpt_neox.NeoXConfig.from_hf(hf_config)
    except SeedKLError as e:
        raise SeedKLError(f"{name}: {str(e).removeprefix('config: ')}") from e
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise SeedKLError(f"{name}: config.json rejected ({e}); fix or re-download it") from e


def neox_config(config: dict, name: str) -> gpt_neox.NeoXConfig:
    """Our NeoXConfig straight from a config.json dict that names every field `from_hf` reads
    (Pythia's do, v4 or v5 style); else via transformers, whose GPTNeoXConfig fills the defaults."""
    if not _NEOX_KEYS <= config.keys():
        return configs(config, name)[1]
    try:
        return gpt_neox.NeoXConfig.from_hf(types.SimpleNamespace(**config))
    except SeedKLError as e:
        raise SeedKLError(f"{name}: {str(e).removeprefix('config: ')}") from e
    except (ValueError, TypeError) as e:
        raise SeedKLError(f"{name}: config.json rejected ({e}); fix or re-download it") from e


# The config.json keys NeoXConfig.from_hf reads without a default of its own.
_NEOX_KEYS = frozenset({"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                        "intermediate_size", "layer_norm_eps", "use_parallel_residual", "hidden_act",
                        "max_position_embeddings"})


# --------------------------------------------------------------------------- weights

def read_state_dict(files: list[Path], bar: tqdm | None = None) -> dict[str, np.ndarray]:
    """HF tensor name -> numpy array (floats upcast to float32) over all weight files."""
    sd: dict[str, np.ndarray] = {}
    for f in files:
        sd.update(_read_safetensors(f, bar) if f.suffix == ".safetensors" else _read_torch_bin(f, bar))
    return sd


def _read_safetensors(path: Path, bar: tqdm | None) -> dict[str, np.ndarray]:
    """Minimal safetensors reader: safetensors' numpy API cannot return bfloat16 (Pythia fp16/bf16)."""
    size = path.stat().st_size
    truncated = lambda need: SeedKLError(f"{path}: truncated or corrupt ({size} bytes, needs {need}); "
                                         "re-download or re-save it")
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else size
        if n > size - 8:
            raise truncated(8 + n)
        try:
            header = json.loads(f.read(n))
            header.pop("__metadata__", None)
            spans = {k: (v["dtype"], tuple(v["shape"]), *v["data_offsets"]) for k, v in header.items()}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise SeedKLError(f"{path}: corrupt safetensors header ({e}); re-download it") from e
        need = 8 + n + max((end for *_, end in spans.values()), default=0)
        if need > size:
            raise truncated(need)
        if bar is not None:
            bar.total += len(spans)
            bar.refresh()
        out = {}
        for key, (tag, shape, begin, end) in spans.items():
            if tag not in _ST_DTYPES:
                raise SeedKLError(f"{path}: tensor {key} has unsupported dtype {tag}; re-save it as float32")
            f.seek(8 + n + begin)
            try:
                a = np.frombuffer(f.read(end - begin), _ST_DTYPES[tag]).reshape(shape)
            except ValueError as e:
                raise SeedKLError(f"{path}: tensor {key} is corrupt ({e}); re-download it") from e
            out[key] = a.astype(np.float32) if tag in _FLOAT_TAGS else a
            if bar is not None:
                bar.update()
    return out


def _read_torch_bin(path: Path, bar: tqdm | None) -> dict[str, np.ndarray]:
    try:
        import torch  # only for pytorch_model.bin: torch is an optional extra
    except ImportError as e:
        raise SeedKLError(f"{path}: reading pytorch_model.bin needs torch; pip install "
                          "'seedkl_jax[torch]', or use a safetensors checkpoint") from e
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError/EOFError/UnpicklingError/... for bad files
        msg = str(e).splitlines()[0] if str(e) else ""
        raise SeedKLError(f"{path}: unreadable ({type(e).__name__}: {msg}); the file is truncated or "
                          "corrupt, re-download it") from e
    if not isinstance(sd, dict):
        raise SeedKLError(f"{path}: holds a {type(sd).__name__}, not a state dict; re-save it")
    out = {k: (v.to(torch.float32) if v.is_floating_point() else v).numpy()
           for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if bar is not None:
        bar.total += len(out)
        bar.update(len(out))
    return out
