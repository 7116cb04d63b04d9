"""Cheap checks of every checkpoint of a suite, run before any compute (`study/run.py: prepare`).

Why: a sweep of 100 groups must not die on group 73 because one checkpoint is truncated, of another
family or vocabulary, or too short-sighted for `--window`. Everything here reads only config.json
files and weight-file headers (a few KB per checkpoint, never the weights), and every problem of the
suite is collected into one SeedKLError, one `; `-separated item per problem:

- config.json parses and its `model_type` is a supported family (`supported_model_types()`);
- the weights exist and their sizes match their headers: a safetensors file's every tensor byte
  range lies inside the file; a sharded index names shards that all exist and are whole; a
  `pytorch_model.bin` zip archive has its central directory (a truncated one has not);
- all seeds of a (size, step) group share family and config (the differing field is named, e.g.
  `vocab_size 832 vs 816`), and each has at least the tokenizer's vocabulary rows;
- the window the text will be scored in, min(--window, tokens), fits each model's context.

- every local checkpoint carries the study's tokenizer (`study_tokenizer`, `TokenizerCheck`).
- the first checkpoint's family sets the window/overlap defaults and checks --mlm_scoring
  (`first_config`, `resolve_model_settings`).

Hub checkpoints: their config.json is read from seedkl's params cache or the local HF cache, or
fetched alone (a few KB) when the hub is reachable; their weights are not downloaded here.
Non-finite weights can only be seen by reading them: `nonfinite_tensors` runs when a group loads.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from seedkl_jax.convert import hub
from seedkl_jax.errors import SeedKLError

# config.json keys that do not change what a checkpoint computes at evaluation time (metadata,
# training-only settings); every other key must agree between the seeds of a group.
IGNORED_CONFIG_KEYS = frozenset({
    "_name_or_path", "transformers_version", "torch_dtype", "dtype", "architectures", "use_cache",
    "initializer_range", "attention_dropout", "hidden_dropout", "classifier_dropout", "bos_token_id",
    "eos_token_id", "pad_token_id",
})
# config.json keys that give the model's context length, first present wins (NeoX/BERT, GPT-2).
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx")
# Checkpoint file names: convert/hub.py, the one home of checkpoint-file knowledge.
WEIGHT_FILES = hub.WEIGHT_FILES  # each may be sharded (<name>.index.json)
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "vocab.txt")  # what defines the vocabulary
MAX_LISTED = 200


def supported_model_types() -> tuple[str, ...]:
    """config.json `model_type`s seedkl can load (the model family registry's keys)."""
    from seedkl_jax.models import FAMILIES

    return tuple(sorted(FAMILIES))


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


# ---------------------------------------------------------------------------- one checkpoint


def read_config(path: Path) -> tuple[dict | None, str | None]:
    """(config.json dict, None) or (None, problem)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return None, f"{path}: unreadable ({type(e).__name__}); re-download it"
    if not isinstance(raw, dict):
        return None, f"{path}: holds a {type(raw).__name__}, not a config object; re-download it"
    kind = raw.get("model_type")
    if kind not in supported_model_types():
        return None, (f"{path}: model_type {kind!r} is not supported (supported: "
                      f"{', '.join(supported_model_types())}); use a checkpoint of a supported family")
    return raw, None


def safetensors_problem(path: Path) -> str | None:
    """None if every tensor of the safetensors file `path` lies inside the file, else the problem."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else None
            if n is None or n > size - 8:
                return f"{path}: truncated ({size} bytes, its header alone needs {8 + (n or 0)}); re-download it"
            header = json.loads(f.read(n))
    except OSError as e:
        return f"{path}: unreadable ({e.strerror or e}); re-download it"
    except ValueError:
        return f"{path}: corrupt safetensors header; re-download it"
    try:
        header.pop("__metadata__", None)
        end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    except (AttributeError, KeyError, TypeError, IndexError, ValueError):
        return f"{path}: corrupt safetensors header; re-download it"
    if 8 + n + end > size:
        return f"{path}: truncated ({size} bytes, its header needs {8 + n + end}); re-download it"
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
    for single in WEIGHT_FILES:
        check = safetensors_problem if single.endswith(".safetensors") else torch_bin_problem
        if (ckpt / single).is_file():
            return [p for p in [check(ckpt / single)] if p]
        index = ckpt / f"{single}.index.json"
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            except (OSError, ValueError, KeyError, AttributeError, TypeError):
                return [f"{index}: unreadable shard index; re-download it"]
            missing = [s for s in shards if not (ckpt / s).is_file()]
            if missing:
                return [f"{index}: shard(s) {', '.join(missing[:3])} missing; re-download them"]
            return [p for p in (check(ckpt / s) for s in shards) if p]
    return [f"{ckpt}: no weights (model.safetensors, its index, or pytorch_model.bin); re-download it"]


def nonfinite_tensors(params: Any) -> list[str]:
    """Paths of the params leaves holding NaN or inf (a float64 sum first: one pass, no copy)."""
    import jax

    bad = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        a = np.asarray(leaf)
        if a.dtype.kind == "f" or a.dtype.name == "bfloat16":
            if not np.isfinite(np.sum(a, dtype=np.float64)):
                bad.append(jax.tree_util.keystr(path))
    return bad


# ---------------------------------------------------------------------------- the suite


def check_suite(suite, *, vocab_size: int, window: int | None, n_tokens: int | None = None, cache_dir=None,
                dtype: str = "float32") -> None:
    """Raise one SeedKLError listing every problem of every checkpoint of `suite` (see module doc).

    vocab_size: the study's vocabulary (each model needs at least that many rows); window: the scoring
    window (None = the model's context, which fits); n_tokens: the text's length, when known (the
    scoring window is then min(window, n_tokens - 1) positions).
    """
    configs, problems = _configs(suite, cache_dir, dtype)
    problems += _group_problems(suite, configs, vocab_size)
    if window is not None:
        span = int(window) if n_tokens is None else min(int(window), max(1, int(n_tokens) - 1))
        problems += _window_problems(suite, configs, span, window)
    if problems:
        shown = problems[:MAX_LISTED] + ([f"... and {len(problems) - MAX_LISTED} more"]
                                         if len(problems) > MAX_LISTED else [])
        raise SeedKLError(f"suite: {len(problems)} problem(s) with its checkpoints, found before any "
                          "compute (fix or replace them, or leave them out of --sizes/--steps/--seeds): "
                          + "; ".join(shown))


def _configs(suite, cache_dir, dtype) -> tuple[dict, list[str]]:
    """{(size, step, seed): config dict} of every checkpoint that could be read, and the problems."""
    items = list(suite.checkpoints())
    read = _local_config if suite.is_local else (lambda m, r: _hub_config(m, r, cache_dir, dtype))
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda it: read(it[3], it[4]), items))
    configs, problems = {}, []
    for (size, step, seed, model, revision), (config, found) in zip(items, results):
        problems += [f"{p} (size {size}, step {step}, seed {seed})" for p in found]
        if config is not None:
            configs[(size, step, seed)] = config
    return configs, problems


def _local_config(model: str, revision) -> tuple[dict | None, list[str]]:
    ckpt = Path(model)
    config, problem = read_config(ckpt / "config.json")
    return config, ([problem] if problem else []) + weights_problems(ckpt)


def _hub_config(model: str, revision, cache_dir, dtype) -> tuple[dict | None, list[str]]:
    """config.json of a hub checkpoint without downloading weights; (None, []) when unknowable
    offline (suite.check_complete has already refused checkpoints it could not find)."""
    from seedkl_jax.convert import cache

    ref = hub.ref_string(model, revision)
    entry = cache.entry_dir(cache.cache_root(cache_dir), model, revision, dtype, None)
    path = entry / "config.json" if cache.is_complete(entry) else None
    files = None
    if path is None:
        try:
            import huggingface_hub as hf

            found = hf.try_to_load_from_cache(model, "config.json", revision=revision)
            path = Path(found) if isinstance(found, str) else None
            if path is None and not hub.is_offline():
                info = hf.HfApi().model_info(model, revision=revision, timeout=hub.HUB_TIMEOUT_S)
                files = {s.rfilename for s in info.siblings or []}
                if "config.json" in files:
                    path = Path(hf.hf_hub_download(model, "config.json", revision=info.sha))
        except Exception:  # unreachable or refused: the load itself will say why
            return None, []
    if files is not None and not any(f in files or f"{f}.index.json" in files for f in WEIGHT_FILES):
        return None, [f"{ref}: the hub repository has no model.safetensors / pytorch_model.bin weights"]
    if path is None:
        return None, ([f"{ref}: the hub repository has no config.json"] if files is not None else [])
    config, problem = read_config(path)
    return config, [f"{ref}: {problem}"] if problem else []


def _group_problems(suite, configs: dict, vocab_size: int) -> list[str]:
    problems = []
    for size, step in suite.groups():
        first = None
        for seed in suite.seeds:
            config = configs.get((size, step, seed))
            if config is None:
                continue
            model = _ref(suite, size, step, seed)
            rows = config.get("vocab_size")
            if isinstance(rows, int) and rows < vocab_size:
                problems.append(f"{model}: vocab_size {rows} but the tokenizer has {vocab_size} ids "
                                f"(size {size}, step {step}, seed {seed}); it does not belong to this "
                                "tokenizer (or pass --vocab_size)")
            if first is None:
                first = seed, config
                continue
            diff = config_difference(first[1], config)
            kinds = first[1].get("model_type"), config.get("model_type")
            if kinds[0] != kinds[1]:
                problems.append(f"size {size} step {step}: seed {seed} ({model}) is a {kinds[1]} checkpoint but "
                                f"seed {first[0]} ({_ref(suite, size, step, first[0])}) a {kinds[0]} one; every "
                                "checkpoint of a group must share family and config")
            elif diff:
                problems.append(f"size {size} step {step}: seed {seed} ({model}) differs from seed {first[0]}: "
                                f"{', '.join(diff[:4])}{' ...' if len(diff) > 4 else ''}; all seeds of a "
                                "group must share one architecture")
    return problems


def _window_problems(suite, configs: dict, span: int, window: int) -> list[str]:
    problems, seen = [], set()
    for (size, step, seed), config in configs.items():
        ctx = context_length(config)
        if ctx is not None and span > ctx and size not in seen:
            seen.add(size)
            problems.append(f"--window={window}: the text is scored in windows of {span} tokens, longer than "
                            f"the {ctx}-token context of size {size} ({_ref(suite, size, step, seed)}); "
                            f"pass --window={ctx} or less (and --overlap below it)")
    return problems


def _ref(suite, size, step, seed) -> str:
    return hub.ref_string(*suite.checkpoint(size, step, seed))


# ---------------------------------------------------------------------------- tokenizer


def study_tokenizer(tokenizer: str | None, suite):
    """The study's tokenizer (`--tokenizer`, else the first checkpoint's) and its source."""
    from seedkl_jax.data.tokenizer import load_tokenizer

    if tokenizer:
        return load_tokenizer(tokenizer), tokenizer
    size, step, seed, model, revision = next(suite.checkpoints())
    return load_tokenizer(model, revision), hub.ref_string(model, revision)


def check_tokenizers(tok, source: str, suite) -> None:
    """Every local checkpoint carries the study's tokenizer (hub ones are checked as they load)."""
    if suite.is_local:
        checker = TokenizerCheck(tok, source)
        for *_, model, _ in suite.checkpoints():
            checker.check(model)


class TokenizerCheck:
    """Compares the tokenizer files of checkpoint folders with the study's tokenizer (by vocabulary).

    Identical files are compared once (hash of the bytes); differing files are loaded and compared by
    vocabulary + added tokens, so a reformatted but equal tokenizer.json still passes.
    """

    def __init__(self, tok, source: str):
        self.tok, self.source, self.want = tok, source, vocab_fingerprint(tok)
        self.seen: dict[str, bool] = {}

    def check(self, folder: str) -> None:
        files = [os.path.join(folder, f) for f in TOKENIZER_FILES if os.path.isfile(os.path.join(folder, f))]
        if not files:
            return  # a checkpoint without tokenizer files cannot disagree
        h = hashlib.sha256()
        for f in files:
            h.update(Path(f).read_bytes())
        key = h.hexdigest()
        if key not in self.seen:
            from seedkl_jax.data.tokenizer import load_tokenizer
            self.seen[key] = vocab_fingerprint(load_tokenizer(folder)) == self.want
        if not self.seen[key]:
            raise SeedKLError(f"tokenizer mismatch: {folder} has a different tokenizer than {self.source}; "
                              "all checkpoints of a suite must share one tokenizer (check the suite, or --tokenizer)")


def vocab_fingerprint(tok) -> str:
    vocab = tok.backend.get_vocab(with_added_tokens=True)
    return hashlib.sha256(json.dumps(sorted(vocab.items())).encode()).hexdigest()


def check_cache_dir(root: Path) -> None:
    """The params cache root must be (or be creatable as) a folder: refuse e.g. $SEEDKL_CACHE=a file."""
    p = Path(root)
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise SeedKLError(f"params cache {root}: {p} is a file, not a folder; point --cache_dir or "
                          "$SEEDKL_CACHE at a folder")


def first_config(suite, dtype: str, cache_dir: str | None):
    """The suite's first checkpoint's config, or None if it cannot be read (check_suite says why)."""
    from seedkl_jax.convert.loader import checkpoint_config

    model, revision = suite.checkpoint(suite.sizes[0], suite.steps[0], suite.seeds[0])
    try:
        return checkpoint_config(model, revision, dtype=dtype, cache_dir=cache_dir)
    except SeedKLError:
        return None


def resolve_model_settings(cfg, model_cfg):
    """The StudyConfig `cfg` with window/overlap defaults from the model's context and mlm_scoring
    checked against its family (study/run.py: prepare)."""
    from seedkl_jax.kernels.windows import MLM_SCORING, check_window, default_window
    from seedkl_jax.models import family_of

    causal = family_of(model_cfg).causal
    sc = cfg.scoring
    if causal and sc.mlm_scoring is not None:
        raise SeedKLError(f"--mlm_scoring={sc.mlm_scoring}: the suite is {model_cfg.model_type}, a causal LM; "
                          "drop the flag (it applies to masked LMs such as BERT)")
    if not causal and (sc.mlm_scoring or "unmasked") not in MLM_SCORING:
        raise SeedKLError(f"--mlm_scoring={sc.mlm_scoring!r}: use one of {list(MLM_SCORING)}")
    window, overlap = default_window(model_cfg.context, causal, sc.window, sc.overlap)
    check_window(window, overlap)
    scoring = dataclasses.replace(sc, window=window, overlap=overlap,
                                  mlm_scoring=None if causal else (sc.mlm_scoring or "unmasked"))
    return dataclasses.replace(cfg, scoring=scoring)
