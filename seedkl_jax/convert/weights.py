"""Read a checkpoint's weight files into numpy (HF tensor name -> array) and convert them to our params.

Why our own reader: safetensors' numpy API cannot return bfloat16 (Pythia's fp16/bf16 checkpoints), and
reading the bytes at the offsets `hf.checkpoint.safetensors_header` checked needs no torch. A
pytorch_model.bin (old Pythia, MultiBERTs) needs torch, an optional extra.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import ml_dtypes
import numpy as np
from tqdm.auto import tqdm

from seedkl_jax.errors import SeedKLError
from seedkl_jax.hf.checkpoint import safetensors_header
from seedkl_jax.hf.mapping import state_dict_to_params

DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16)}
# safetensors dtype tags -> numpy (little-endian on disk).
_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": ml_dtypes.bfloat16, "I64": "<i8",
              "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}
_FLOAT_TAGS = {"F64", "F32", "F16", "BF16"}


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
        tags |= {tag for tag, *_ in safetensors_header(f).tensors.values() if tag in _FLOAT_TAGS}
    half = {"F16": np.dtype(np.float16), "BF16": np.dtype(ml_dtypes.bfloat16)}
    return half.get(tags.pop()) if len(tags) == 1 else None


def read_state_dict(files: list[Path], bar: tqdm | None = None) -> dict[str, np.ndarray]:
    """HF tensor name -> numpy array (floats upcast to float32) over all weight files."""
    sd: dict[str, np.ndarray] = {}
    for f in files:
        sd.update(_read_safetensors(f, bar) if f.suffix == ".safetensors" else _read_torch_bin(f, bar))
    return sd


def _read_safetensors(path: Path, bar: tqdm | None) -> dict[str, np.ndarray]:
    """Every tensor of safetensors file `path` (floats upcast to float32), at its checked offsets."""
    header = safetensors_header(path)
    if bar is not None:
        bar.total += len(header.tensors)
        bar.refresh()
    out = {}
    with open(path, "rb") as f:
        for key, (tag, shape, begin, end) in header.tensors.items():
            if tag not in _ST_DTYPES:
                raise SeedKLError(f"{path}: tensor {key} has unsupported dtype {tag}; re-save it as float32")
            f.seek(8 + header.n + begin)
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
