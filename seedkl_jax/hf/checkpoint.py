"""What a Hugging Face checkpoint folder holds, read once here: config.json and the weight files.

    config.json            architecture; `model_type` picks the family (models.FAMILIES)
    weights                model.safetensors | pytorch_model.bin (WEIGHT_FILES, in preference order),
                           each maybe sharded: <name>.index.json names the shard files
    tokenizer              tokenizer.json (any family) | vocab.txt (BERT WordPiece) | vocab.json + merges.txt
                           (GPT-2 byte-level BPE) — VOCAB_FILES —, + tokenizer_config.json and
                           special_tokens_map.json (TOKENIZER_FILES); read by hf/tokenizer.py

A safetensors file is an 8-byte little-endian header length n, a JSON header {name: {dtype, shape,
data_offsets [begin, end)}} (plus "__metadata__"), then the tensor bytes; `safetensors_header` reads
and checks that header for every user (the loader, the pre-run checks, the dtype probe).
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from seedkl_jax.errors import SeedKLError

CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # preference order; each may be sharded
# The files a tokenizer is built from, in preference order, each with the files it needs beside it.
TOKENIZER_SOURCES = {"tokenizer.json": (), "vocab.txt": (), "vocab.json": ("merges.txt",)}
VOCAB_FILES = tuple(f for k, v in TOKENIZER_SOURCES.items() for f in (k, *v))  # what defines the vocabulary
TOKENIZER_FILES = (*VOCAB_FILES, "tokenizer_config.json", "special_tokens_map.json")  # all worth keeping


def supported_model_types() -> tuple[str, ...]:
    """config.json `model_type`s seedkl can load (the model family registry's keys)."""
    from seedkl_jax.models.family import FAMILIES  # on use: reading a config needs no jax

    return tuple(sorted(FAMILIES))


def read_config(path: Path) -> dict:
    """config.json (`path`: the file or its checkpoint folder) as a dict, checked to be an object of a
    supported family, with dtype forced to float32 (old Pythia configs say float16; we always convert
    to float32, and the dtype keys are not architecture: `checks.IGNORED_CONFIG_KEYS`)."""
    path = Path(path)
    path = path / CONFIG_FILE if path.is_dir() else path
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SeedKLError(f"{path}: unreadable ({type(e).__name__}: {e}); re-download it") from e
    if not isinstance(raw, dict):
        raise SeedKLError(f"{path}: holds a {type(raw).__name__}, not a config object; re-download it")
    kind = raw.get("model_type")
    if kind not in supported_model_types():
        raise SeedKLError(f"{path}: model_type {kind!r} is not supported (supported: "
                          f"{', '.join(supported_model_types())}); use a checkpoint of a supported family")
    raw.pop("torch_dtype", None)
    raw["dtype"] = "float32"
    return raw


# ---------------------------------------------------------------------------- weight files


def local_problem(path: str) -> str | None:
    """Why local folder `path` is not a loadable checkpoint (None: it looks fine). Cheap: no reads."""
    p = Path(path)
    if not p.is_dir():
        return "no such directory"
    if not (p / CONFIG_FILE).is_file():
        return f"no {CONFIG_FILE}"
    names = {f.name for f in p.iterdir()}
    if not any(w in names or f"{w}.index.json" in names for w in WEIGHT_FILES):
        return "no weights (model.safetensors or pytorch_model.bin)"
    return None


def weight_files(ckpt: Path) -> list[Path]:
    """The weight files of a local checkpoint dir: the first of WEIGHT_FILES present, or its shards."""
    ckpt = Path(ckpt)
    if not ckpt.is_dir():
        raise SeedKLError(f"{ckpt}: not a directory; pass the checkpoint directory (config.json + weights)")
    if not (ckpt / CONFIG_FILE).is_file():
        raise SeedKLError(f"{ckpt}: no config.json; pass a HF checkpoint directory (config.json + weights)")
    return find_weight_files(ckpt)


def find_weight_files(ckpt: Path) -> list[Path]:
    """The first of WEIGHT_FILES in folder `ckpt`, or the shards its index names (all present)."""
    for single in WEIGHT_FILES:
        if (ckpt / single).is_file():
            return [ckpt / single]
        index = ckpt / f"{single}.index.json"
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            except (OSError, ValueError, KeyError, AttributeError, TypeError) as e:
                raise SeedKLError(f"{index}: unreadable shard index ({e}); re-download it") from e
            missing = [s for s in shards if not (ckpt / s).is_file()]
            if missing:
                raise SeedKLError(f"{index}: shard(s) {', '.join(missing[:3])} missing; re-download them")
            return [ckpt / s for s in shards]
    raise SeedKLError(f"{ckpt}: no weights (model.safetensors, model.safetensors.index.json or "
                      "pytorch_model.bin); re-download or re-save the checkpoint")


def has_weights(names: set[str]) -> bool:
    """Whether a listing of file names holds weights (single or sharded)."""
    return any(w in names or f"{w}.index.json" in names for w in WEIGHT_FILES)


def pick_weight_files(names: set[str]) -> list[str]:
    """config.json + one weight format (as `weight_files` prefers), from a hub repository's listing."""
    if CONFIG_FILE not in names:
        raise SeedKLError("no config.json in the hub repo; it is not a transformers checkpoint")
    for single in WEIGHT_FILES:
        if single in names:
            return [CONFIG_FILE, single]
        stem, ext = single.rsplit(".", 1)
        shards = sorted(n for n in names if re.fullmatch(rf"{stem}-\d+-of-\d+\.{ext}", n))
        if shards and f"{single}.index.json" in names:
            return [CONFIG_FILE, f"{single}.index.json", *shards]
    raise SeedKLError("the hub repo has no model.safetensors / pytorch_model.bin weights")


def has_tokenizer(names: set[str]) -> bool:
    """Whether a listing holds a tokenizer `hf.tokenizer` can read."""
    return any(k in names and set(v) <= names for k, v in TOKENIZER_SOURCES.items())


def pick_tokenizer_files(names: set[str]) -> list[str]:
    """The tokenizer files of a hub repository's listing (SeedKLError when it has no tokenizer)."""
    if not has_tokenizer(names):
        raise SeedKLError("no tokenizer.json, vocab.txt or vocab.json + merges.txt in the hub repo; pass "
                          "--tokenizer=path/to/tokenizer.json")
    return [n for n in TOKENIZER_FILES if n in names]


def pick_checkpoint_files(names: set[str]) -> list[str]:
    """config.json + one weight format + the tokenizer files there are, from a hub repository's listing."""
    return [*pick_weight_files(names), *(n for n in TOKENIZER_FILES if n in names)]


# ---------------------------------------------------------------------------- safetensors headers


@dataclasses.dataclass(frozen=True)
class SafetensorsHeader:
    """A safetensors file's header: `n` its JSON length (tensor bytes start at 8 + n) and, per tensor
    name, (dtype tag "F32"/"BF16"/..., shape, begin, end) with [begin, end) relative to 8 + n."""

    n: int
    tensors: dict[str, tuple[str, tuple[int, ...], int, int]]


def safetensors_header(path: Path) -> SafetensorsHeader:
    """Read and check the header of safetensors file `path`: it parses, and every tensor's byte range
    lies inside the file (a truncated download fails here, before any tensor is read)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else None
            if n is None or n > size - 8:
                raise SeedKLError(f"{path}: truncated or corrupt ({size} bytes, its header needs "
                                  f"{8 + (n or 0)}); re-download it")
            raw = f.read(n)
    except OSError as e:
        raise SeedKLError(f"{path}: unreadable ({e.strerror or e}); re-download it") from e
    try:
        header = json.loads(raw)
        header.pop("__metadata__", None)
        tensors = {k: (str(v["dtype"]), tuple(int(d) for d in v["shape"]), int(v["data_offsets"][0]),
                       int(v["data_offsets"][1])) for k, v in header.items()}
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise SeedKLError(f"{path}: corrupt safetensors header ({e}); re-download it") from e
    need = 8 + n + max((end for *_, end in tensors.values()), default=0)
    if need > size:
        raise SeedKLError(f"{path}: truncated or corrupt ({size} bytes, its header needs {need}); re-download it")
    return SafetensorsHeader(n, tensors)
