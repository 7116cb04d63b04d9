"""Load one GPT-NeoX checkpoint (local HF directory or hub id) as our params pytree, via the cache.

Why our own reader: transformers >= 5 has no Flax code, and we want float32 numpy params in our
layout (models/gpt_neox.py) without building a torch model. The path is

    resolve (local dir | hub id[@revision] -> files)  ->  cache hit? restore (orbax)
    else: config.json (must be gpt_neox)  ->  weights (safetensors | shards | pytorch_model.bin)
          ->  mapping.state_dict_to_params (names/shapes checked, upcast float32)  ->  cache.store

Every bad input raises SeedKLError naming the input and the fix, before anything is cached.
Hub access touches the network only on a cache miss: a cached (id, revision) loads offline.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import types
from pathlib import Path
from typing import Any, Callable

import jax
import ml_dtypes
import numpy as np
from tqdm.auto import tqdm

from seedkl_jax.convert import cache
from seedkl_jax.convert.mapping import state_dict_to_params
from seedkl_jax.errors import SeedKLError
from seedkl_jax.models import gpt_neox

DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16)}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # preference order; each may be sharded
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
HUB_TIMEOUT_S = 10.0
# "cache" or "convert": how the most recent `load` got its params (also `Model.source`).
LAST_LOAD_SOURCE: str | None = None

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# safetensors dtype tags -> numpy (little-endian on disk).
_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": ml_dtypes.bfloat16, "I64": "<i8",
              "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}
_FLOAT_TAGS = {"F64", "F32", "F16", "BF16"}
# One compiled forward per (config, dtype): jit's cache is keyed on the static args.
_logits = jax.jit(gpt_neox.logits, static_argnums=1, static_argnames=("dtype", "precision"))


@dataclasses.dataclass
class Model:
    """A loaded checkpoint. `params` has numpy leaves (no leading seed axis) in `dtype`, except that a
    checkpoint stored wholly in float16 or bfloat16 keeps that dtype at dtype="float32" (the same
    values exactly; the params cache then holds half the bytes): computations upcast on device."""

    config: gpt_neox.NeoXConfig
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
        """transformers.GPTNeoXConfig of the checkpoint (dtype float32). Built on first use: importing
        transformers (and torch, which it pulls in) costs seconds that a cache hit need not pay."""
        return configs(self.hf_dict, self.name)[0]

    @functools.cached_property
    def real_vocab_size(self) -> int | None:
        """Ids of the checkpoint's tokenizer (tokenizer.json in `local_dir`; Pythia: 50,277 of 50,304
        rows), or None without one. `compare` normalises over these by default."""
        if not (Path(self.local_dir) / "tokenizer.json").is_file():
            return None
        from seedkl_jax.data.tokenizer import load_tokenizer

        return load_tokenizer(str(self.local_dir)).vocab_size

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
            ckpt = hub_snapshot(name, revision, _pick_checkpoint_files)
            weights = weight_files(ckpt)
        config = read_config(ckpt)
    # A cache entry's config passed transformers' checks when it was stored: read it directly.
    cfg = configs(config, name)[1] if hit is None else neox_config(config, name)
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
    return Model(config=cfg, hf_dict=config, params=params, name=name, revision=revision,
                 local_dir=str(ckpt if is_local or stored is None else entry), dtype=dtype, source=LAST_LOAD_SOURCE,
                 cache_entry=str(entry))


def _same_files_pointer(entry: Path, dtype: str, files: list[Path]) -> Path:
    """Where the name of the cache entry converted from exactly these files (same inodes, sizes and
    mtimes: e.g. one checkpoint hard-linked as several steps) is kept; a later load of the same files
    under another path hard-links that entry's params (`cache.clone`) instead of storing a copy."""
    key = cache._hash(dtype, [(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) for st in map(os.stat, files)])
    return entry.parent / ".same-files" / key


def convert(ckpt: Path, weights: list[Path], cfg: gpt_neox.NeoXConfig, dtype: str,
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

def parse_ref(model: str, revision: str | None) -> tuple[str, str | None, bool]:
    """-> (absolute local path or hub id, revision or None, is_local)."""
    revision = revision or None
    path = Path(model).expanduser()
    if path.exists():
        if revision:
            raise SeedKLError(f"{model}: a local directory takes no revision (got {revision!r}); drop "
                              "the revision, or point at that revision's own directory")
        return str(path.resolve()), None, True
    name, at, rev = model.partition("@")
    if at:
        if not rev or (revision and revision != rev):
            raise SeedKLError(f"{model}: revision after '@' is empty or contradicts revision="
                              f"{revision!r}; give it once, e.g. EleutherAI/pythia-70m@step1000")
        revision = rev
    if _HUB_ID.match(name):
        return name, revision, False
    raise SeedKLError(f"{model}: no such directory (and not a hub id like "
                      "EleutherAI/pythia-70m-seed3@step1000); check the path")


def weight_files(ckpt: Path) -> list[Path]:
    """The weight files of a local checkpoint dir: the first of WEIGHT_FILES present, or its shards."""
    if not ckpt.is_dir():
        raise SeedKLError(f"{ckpt}: not a directory; pass the checkpoint directory (config.json + weights)")
    if not (ckpt / "config.json").is_file():
        raise SeedKLError(f"{ckpt}: no config.json; pass a HF checkpoint directory (config.json + weights)")
    for single in WEIGHT_FILES:
        if (ckpt / single).is_file():
            return [ckpt / single]
        index = ckpt / f"{single}.index.json"
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (ValueError, KeyError, AttributeError) as e:
                raise SeedKLError(f"{index}: unreadable shard index ({e}); re-download it") from e
            missing = [s for s in shards if not (ckpt / s).is_file()]
            if missing:
                raise SeedKLError(f"{index}: shard(s) {missing[:3]} missing; re-download them")
            return [ckpt / s for s in shards]
    raise SeedKLError(f"{ckpt}: no weights (model.safetensors, model.safetensors.index.json or "
                      "pytorch_model.bin); re-download or re-save the checkpoint")


def read_config(ckpt: Path) -> dict:
    """config.json as a dict, checked to be GPT-NeoX, with dtype forced to float32."""
    path = ckpt / "config.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SeedKLError(f"{path}: unreadable ({e}); re-download the checkpoint's config.json") from e
    if not isinstance(raw, dict) or raw.get("model_type") != "gpt_neox":
        kind = raw.get("model_type") if isinstance(raw, dict) else type(raw).__name__
        raise SeedKLError(f"{path}: model_type is {kind!r}, not 'gpt_neox'; seedkl reads only "
                          "GPT-NeoX (Pythia) checkpoints")
    raw.pop("torch_dtype", None)  # old Pythia configs say float16; we always convert to float32
    raw["dtype"] = "float32"
    return raw


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


# --------------------------------------------------------------------------- hub

def _pick_checkpoint_files(names: set[str]) -> list[str]:
    """config.json + one weight format (as `weight_files` prefers) + tokenizer files, from a listing."""
    if "config.json" not in names:
        raise SeedKLError("no config.json in the hub repo; it is not a transformers checkpoint")
    for single in WEIGHT_FILES:
        if single in names:
            weights = [single]
            break
        stem, ext = single.rsplit(".", 1)
        shards = sorted(n for n in names if re.fullmatch(rf"{stem}-\d+-of-\d+\.{ext}", n))
        if shards and f"{single}.index.json" in names:
            weights = [f"{single}.index.json", *shards]
            break
    else:
        raise SeedKLError("the hub repo has no model.safetensors / pytorch_model.bin weights")
    return ["config.json", *weights, *(t for t in TOKENIZER_FILES if t in names)]


def hub_snapshot(repo_id: str, revision: str | None, pick: Callable[[set[str]], list[str]]) -> Path:
    """Download the files `pick(repo listing)` chooses into HF's cache; return their directory.

    Offline (or hub unreachable), a revision already in HF's local cache is used as is.
    """
    import huggingface_hub as hf

    ref = f"{repo_id}@{revision}" if revision else repo_id
    try:
        info = hf.HfApi().model_info(repo_id, revision=revision, timeout=HUB_TIMEOUT_S)
    except Exception as e:
        err = _hub_error(ref, revision, e)
        try:  # unreachable: a revision already in HF's local cache still works
            snap = Path(hf.snapshot_download(repo_id, revision=revision, local_files_only=True))
            pick({p.name for p in snap.iterdir()})
            return snap
        except Exception:
            raise err from e
    try:
        files = pick({s.rfilename for s in info.siblings or []})
    except SeedKLError as e:
        raise SeedKLError(f"{ref}: {e}; pass a GPT-NeoX checkpoint") from None
    path = None
    for name in files:
        try:
            path = hf.hf_hub_download(repo_id, name, revision=info.sha)
        except Exception as e:
            raise _hub_error(ref, revision, e) from e
    return Path(path).parent


def _hub_error(ref: str, revision: str | None, e: Exception) -> SeedKLError:
    """Translate a huggingface_hub / network failure into one actionable line (or re-raise bugs)."""
    from huggingface_hub import errors as he

    if isinstance(e, he.RevisionNotFoundError):
        return SeedKLError(f"{ref}: revision {revision!r} not found on the hub; use an existing branch "
                           "or tag (Pythia checkpoints: step0 ... step143000)")
    if isinstance(e, he.RepositoryNotFoundError):
        return SeedKLError(f"{ref}: no such (public) model on the hub and no such local directory; "
                           "check the id or path")
    if isinstance(e, he.HfHubHTTPError):
        return SeedKLError(f"{ref}: the hub refused the request ({str(e).splitlines()[0]}); check the "
                           "id/revision or pass a local checkpoint directory")
    if isinstance(e, (OSError, TimeoutError)) or type(e).__module__.split(".")[0] in ("httpx", "httpx2",
                                                                                        "requests"):
        return SeedKLError(f"{ref}: not a local directory, and the Hugging Face hub was unreachable "
                           f"({type(e).__name__}); pass a local checkpoint directory (config.json + "
                           "weights) or retry online")
    raise e
