"""Cheap checks of every checkpoint of a suite, run before any compute (`study/run.py: prepare`).

Why: a sweep of 100 groups must not die on group 73 because one checkpoint is truncated, of another
family or vocabulary, or too short-sighted for `--window`. Everything here reads only config.json
files and weight-file headers (a few KB per checkpoint, never the weights), and every problem of the
suite is collected into one SeedKLError, one `; `-separated item per problem:

- each checkpoint's config.json and weight files (hf/checks.py: family, headers against file sizes);
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
from pathlib import Path
from typing import Any

import numpy as np

from seedkl_jax.errors import SeedKLError
from seedkl_jax.hf import hub
from seedkl_jax.hf.checkpoint import CONFIG_FILE, VOCAB_FILES
from seedkl_jax.hf.checks import (config_difference, context_length, hub_checkpoint_problems,
                                  local_checkpoint_problems)

MAX_LISTED = 200


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
    return local_checkpoint_problems(Path(model))


def _hub_config(model: str, revision, cache_dir, dtype) -> tuple[dict | None, list[str]]:
    """config.json of a hub checkpoint without downloading weights; (None, []) when unknowable
    offline (suite.check_complete has already refused checkpoints it could not find)."""
    from seedkl_jax.convert import cache

    entry = cache.entry_dir(cache.cache_root(cache_dir), model, revision, dtype, None)
    path, files = (entry / CONFIG_FILE, None) if cache.is_complete(entry) else hub.hub_config_file(model, revision)
    return hub_checkpoint_problems(hub.ref_string(model, revision), path, files)


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
        files = [os.path.join(folder, f) for f in VOCAB_FILES if os.path.isfile(os.path.join(folder, f))]
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
