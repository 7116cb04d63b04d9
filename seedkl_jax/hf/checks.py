"""Cheap checks of one Hugging Face checkpoint, from config.json and weight-file headers only (a few KB,
never the weights): the study runs them on every checkpoint of a suite before any compute
(study/checks.py collects the problems), the loader the one it is about to read.

Each check returns problems as strings (one line each, naming the file and the fix) rather than
raising, so that a suite's problems are all reported at once:

- config.json parses and its `model_type` is a supported family (`checkpoint.read_config`);
- the weights exist and their sizes match their headers: a safetensors file's every tensor byte range
  lies inside the file; a sharded index names shards that all exist and are whole; a
  `pytorch_model.bin` zip archive has its central directory (a truncated one has not);
- a family's required tensor is there (BERT's masked-LM head), from the safetensors headers;
- `config_difference` names the fields in which two checkpoints' configs differ (seeds of a group
  must share one architecture), `context_length` the context a config.json gives.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from seedkl_jax.errors import SeedKLError
from seedkl_jax.hf.checkpoint import (CONFIG_FILE, find_weight_files, has_weights, read_config, safetensors_header,
                                       weight_files)
from seedkl_jax.hf.families import TABLES

# config.json keys that do not change what a checkpoint computes at evaluation time (metadata,
# training-only settings); every other key must agree between the seeds of a group.
IGNORED_CONFIG_KEYS = frozenset({
    "_name_or_path", "transformers_version", "torch_dtype", "dtype", "architectures", "use_cache",
    "initializer_range", "attention_dropout", "hidden_dropout", "classifier_dropout", "bos_token_id",
    "eos_token_id", "pad_token_id",
})
# config.json keys that give the model's context length, first present wins (NeoX/BERT, GPT-2).
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx")


def context_length(config: dict) -> int | None:
    """The model's context in tokens, from its config.json dict (None if it names none)."""
    for key in CONTEXT_KEYS:
        if isinstance(config.get(key), int):
            return int(config[key])
    return None


def config_difference(a: dict, b: dict) -> list[str]:
    """'key A vs B' for every key (not in IGNORED_CONFIG_KEYS) whose value differs between a and b."""
    keys = sorted((set(a) | set(b)) - IGNORED_CONFIG_KEYS)
    return [f"{k} {_show(a.get(k))} vs {_show(b.get(k))}" for k in keys if a.get(k) != b.get(k)]


def _show(v: Any) -> str:
    s = "missing" if v is None else json.dumps(v) if isinstance(v, (dict, list)) else str(v)
    return s if len(s) <= 40 else s[:37] + "..."


def config_or_problem(path: Path) -> tuple[dict | None, str | None]:
    """(config.json dict, None) or (None, problem): `checkpoint.read_config` without raising."""
    try:
        return read_config(path), None
    except SeedKLError as e:
        return None, str(e)


def safetensors_problem(path: Path) -> str | None:
    """None if every tensor of the safetensors file `path` lies inside the file, else the problem."""
    try:
        safetensors_header(path)
    except SeedKLError as e:
        return str(e)
    return None


def torch_bin_problem(path: Path) -> str | None:
    """A zip-format pytorch_model.bin must have its central directory (lost when truncated)."""
    if path.stat().st_size == 0:
        return f"{path}: empty; re-download it"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path):
                return None
        except (zipfile.BadZipFile, OSError):
            pass
    with open(path, "rb") as f:
        if f.read(2) == b"\x80\x02":  # a legacy (pre-zip) torch pickle: no cheap check exists
            return None
    return f"{path}: truncated or corrupt (not a readable torch archive); re-download it"


def weights_problems(ckpt: Path) -> list[str]:
    """Problems of a local checkpoint folder's weight files (see the module docstring)."""
    try:
        files = find_weight_files(Path(ckpt))
    except SeedKLError as e:
        return [str(e)]
    check = lambda f: safetensors_problem(f) if f.suffix == ".safetensors" else torch_bin_problem(f)
    return [p for p in map(check, files) if p]


def local_checkpoint_problems(ckpt: Path) -> tuple[dict | None, list[str]]:
    """(config.json dict or None, problems) of local checkpoint folder `ckpt`: config and weights."""
    config, problem = config_or_problem(Path(ckpt) / CONFIG_FILE)
    return config, ([problem] if problem else []) + weights_problems(Path(ckpt))


def hub_checkpoint_problems(ref: str, path: Path | None, files: set[str] | None) -> tuple[dict | None, list[str]]:
    """(config.json dict or None, problems) of hub checkpoint `ref` from its config.json at `path`
    (None: not found) and the repository's listing `files` (None: the hub was not asked)."""
    if files is not None and not has_weights(files):
        return None, [f"{ref}: the hub repository has no model.safetensors / pytorch_model.bin weights"]
    if path is None:
        return None, ([f"{ref}: the hub repository has no config.json"] if files is not None else [])
    config, problem = config_or_problem(path)
    return config, [f"{ref}: {problem}"] if problem else []


def required_tensor_problem(ckpt: Path, config: dict) -> str | None:
    """The cheap part of the weights check, without reading tensors: a family's required tensor (BERT's
    MLM head) must be there — from the safetensors headers, else config.json's `architectures`."""
    table = TABLES[config["model_type"]]
    if not table.required:
        return None
    weights = weight_files(ckpt)
    if all(f.suffix == ".safetensors" for f in weights):
        present = table.required in {table.rename(k) for f in weights for k in safetensors_header(f).tensors}
    else:  # pytorch_model.bin: the names need the whole file; the declared architecture says it too
        present = config.get("architectures") not in (["BertModel"],)
    return None if present else f"{ckpt}: {table.missing_hint}"
