"""The convergence study: for every (size, step) of a suite, all seeds' KL on one text, then tables,
phases, figures and a report in `--out` (the file contract is in `study/store.py` and docs/outputs.md).

`run_study` is four public steps, which the multi-host code (seedkl_jax/distributed.py) composes
differently: `prepare` (read and check everything, write nothing), `claim` (bind --out to these
settings), `compute_groups` (the groups not yet persisted, or a given share of them) and
`write_outputs` (every final file from the persisted groups). Order of work, chosen so that every
bad input fails before any compute, nothing is left half-written and a crash costs at most one group:
  0. create `--out` and take its lock (study/lock.py): one run writes a folder at a time;
  1. the suite is well formed and every checkpoint exists (all missing listed);
  2. tokenizer (`--tokenizer` or the first checkpoint's) — every checkpoint must carry the same one;
  3. read the text; check every checkpoint cheaply (study/checks.py: family, weight files against
     their headers, one config and vocabulary per group, --window within the context; all listed);
  4. annotate the text once (frequency, PoS, documents), build the unigram reference;
  5. bind `--out` to these settings (`study.json`; a rerun with other settings is refused);
  6. for each unfinished group: load its S seeds (the next group loads in a background thread while
     this one computes; non-finite weights are refused by path and their cache entry dropped),
     `compare_stacked` (at the first step a second time, with the other --compat's unigram:
     analysis/compat.py; at the last step `--surprisal_seed`'s checkpoint joins the group as an extra
     model whose [P] surprisal alone is kept, for the final-surprisal bins), persist
     `groups/<size>/step<step>.npz` atomically;
  7. read all groups back from disk (so a resumed run and an uninterrupted one write identical files)
     and write tokens/pairs/token_meta/summary/phases/findings/figures/report into this run's staging
     folder, then publish them as one set (study/publish.py, manifest.json last). A full disk or
     unwritable folder is one error line (seedkl_jax/disk.py).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from seedkl_jax import config
from seedkl_jax.config import KernelConfig, StudyConfig
from seedkl_jax.data.text import Text, read_text
from seedkl_jax.errors import SeedKLError
from seedkl_jax.study import checks, outputs, store
from seedkl_jax.study.suite import Suite, check_complete, check_configs, resolve_suite

__all__ = ["StudyConfig", "Prepared", "run_study", "open_out", "prepare", "claim", "compute_groups",
           "write_outputs"]  # StudyConfig: seedkl_jax/config.py's, re-exported for `from study.run import`

# Where this run's wall time went (diagnostics, rewritten by every run that aggregates): setup (inputs,
# annotation), per computed group the wait for its params and its compare (the first one of each
# model size includes XLA's compile), saving, and the final outputs; and `kernel_form`, the KL form that ran.
TIMINGS_FILE = "timings.json"


@dataclasses.dataclass
class Prepared:
    """What `prepare` read and checked: all that `claim`, `compute_groups` and `write_outputs` need."""

    cfg: StudyConfig                   # window/overlap/mlm_scoring filled from the model (checks.resolve_model_settings)
    suite: Suite                       # cfg.suite resolved (study/suite.py: resolve_suite)
    kernel: KernelConfig               # cfg.kernel resolved once for this mesh and S (kernels.compare.resolve_kernel)
    out: Path
    tok: Any                           # data.tokenizer.Tokenizer (vocab_size narrowed by --vocab_size)
    tok_source: str
    text: Text
    meta: Any                          # polars frame, one row per predicted position (data/annotate.py)
    reference: np.ndarray              # [V] unigram log-probs of the corpus counts (--compat's choice)
    reference_other: np.ndarray        # [V] the other choice's (compared at the first step only)
    settings: dict[str, Any]           # what study.json records (see _settings)
    timings: dict[str, Any]            # TIMINGS_FILE's content, filled in as the steps run
    t_start: float
    probes: Any = None                 # study/probes.Probes: ICL score, minimal pairs (their inputs, checked)


def run_study(cfg: StudyConfig, *, progress: bool = True,
              on_group: Callable[[str, int], None] | None = None) -> Path:
    """Run (or resume) the study described by `cfg`; returns the path of report.md.

    on_group(size, step) is called after each group is persisted (e.g. to report progress).
    """
    fresh = not Path(cfg.output.out).expanduser().exists()  # created here: removed if the run fails before a write
    out = open_out(cfg)
    from seedkl_jax.study import lock, publish

    with lock.hold(out, wait=cfg.output.wait, new=fresh):
        publish.recover(out)  # outputs whose swap a kill interrupted: one complete set again, before anything else
        prep = prepare(cfg)
        claim(prep)
        compute_groups(prep, progress=progress, on_group=on_group)
        return write_outputs(prep)


def open_out(cfg: StudyConfig) -> Path:
    """Check the suite (the rest was checked when `cfg` was built), then create `--out` and prove it
    writable; its path."""
    resolve_suite(cfg.suite).validate()
    return store.check_writable(Path(cfg.output.out))


def prepare(cfg: StudyConfig, *, check_out: bool = True) -> Prepared:
    """Steps 1-4 of the module docstring: every input read and checked, nothing written to --out.

    check_out=False: this process will not write --out (multi-host, not process 0): not checked.
    """
    from seedkl_jax.convert import cache
    from seedkl_jax.kernels.compare import resolve_kernel

    t_start = time.perf_counter()
    suite = resolve_suite(cfg.suite).validate()
    out_dir, cache_dir, dtype = cfg.output.out, cfg.output.cache_dir, cfg.dtype
    out = store.check_writable(Path(out_dir)) if check_out else Path(out_dir).expanduser().resolve()
    cache_root = cache.cache_root(cache_dir)
    checks.check_cache_dir(cache_root)
    cache.sweep(cache_root)  # .tmp-* folders of writers that died
    check_complete(suite, cache_dir, dtype)
    surprisal_seed = cfg.analysis.surprisal_seed
    if surprisal_seed is not None:  # its checkpoints at the last step must exist too
        check_complete(_held_out_suite(suite, surprisal_seed), cache_dir, dtype)
    tok, tok_source = checks.study_tokenizer(cfg.text.tokenizer, suite)
    vocab_size = cfg.text.vocab_size
    if vocab_size is not None:
        if not 2 <= vocab_size <= tok.vocab_size:
            raise SeedKLError(f"--vocab_size={vocab_size}: must be between 2 and the tokenizer's {tok.vocab_size} ids")
        tok = dataclasses.replace(tok, vocab_size=int(vocab_size))  # one place: every later use sees it
    first = checks.first_config(suite, dtype, cache_dir)  # None: broken (check_suite lists it)
    cfg = cfg if first is None else checks.resolve_model_settings(cfg, first)
    text = read_text(cfg.text.text, tok, masked_lm=cfg.scoring.mlm_scoring is not None)
    checks.check_suite(suite, vocab_size=tok.vocab_size, window=cfg.scoring.window, n_tokens=len(text.ids),
                       cache_dir=cache_dir, dtype=dtype)  # every checkpoint's problems, in one error
    check_configs(suite, cache_dir, dtype)  # family-specific needs (BERT's MLM head), one family
    checks.check_tokenizers(tok, tok_source, suite)
    kernel = resolve_kernel(cfg.kernel, cfg.mesh, len(suite.seeds))  # bad kernel settings fail here, not at group 1

    from seedkl_jax.data.annotate import annotate_tokens, counts_from_ids, load_counts

    counts = None if not cfg.text.counts else load_counts(cfg.text.counts, tok.vocab_size)  # checks the length
    from seedkl_jax.study import probes

    probe_inputs = probes.prepare(cfg, tok, text)  # read and checked once; study.json records them by content
    settings = _settings(cfg, suite, text, tok, probe_inputs)
    store.claim(out, settings, cfg.output.overwrite, write=False)  # refuse a foreign --out before slow annotation
    meta = annotate_tokens(text.ids, text.text, text.offsets, tok, counts, cfg.text.pos, cache_dir=cache_dir,
                           required=cfg.text.pos_required, docs=text.doc_ids)
    from seedkl_jax.analysis.compat import other_choice, unigram_reference
    counts = counts if counts is not None else counts_from_ids(text.ids, tok.vocab_size)
    compat = cfg.analysis.compat
    reference, other = (np.asarray(unigram_reference(c, counts, tok.vocab_size))
                        for c in (compat, config.Compat(other_choice(compat))))
    return Prepared(cfg=cfg, suite=suite, kernel=kernel, out=out, tok=tok, tok_source=tok_source, text=text,
                    meta=meta, reference=reference, reference_other=other, settings=settings,
                    timings={"setup_s": time.perf_counter() - t_start}, t_start=t_start,
                    probes=probe_inputs)


def claim(prep: Prepared, groups: list[tuple[str, int]] | None = None) -> None:
    """Step 5: record the settings in --out (with --overwrite, first delete the finished `groups`:
    all by default, a multi-host process's share when given)."""
    store.claim(prep.out, prep.settings, prep.cfg.output.overwrite, write=True, groups=groups)


def compute_groups(prep: Prepared, groups: list[tuple[str, int]] | None = None, *, write: bool = True,
                   agree: Callable[[np.ndarray], np.ndarray] | None = None, progress: bool = True,
                   on_group: Callable[[str, int], None] | None = None) -> None:
    """Step 6 for `groups` (default: all of the suite's, in `Suite.groups()` order).

    write=False computes but persists nothing (a multi-host process that does not write --out);
    agree(done) -> done maps this process's bool [n_groups] "already persisted" mask to the one
    every process uses, so that all enter the same groups' collectives in the same order.
    """
    groups = prep.suite.groups() if groups is None else list(groups)
    _compute_groups(prep, groups, write=write, agree=agree, progress=progress, on_group=on_group)


def write_outputs(prep: Prepared) -> Path:
    """Step 7: every final file from the persisted groups (all must exist); returns report.md's path.
    A disk or filesystem failure leaves --out's previous outputs as they were (one error line)."""
    from seedkl_jax.disk import disk_errors

    t0 = time.perf_counter()
    try:
        with disk_errors(f"--out={prep.out}", "its previous outputs are intact; free space or "
                                              "choose another --out, then rerun to finish"):
            report = outputs.write(prep.cfg, prep.suite, prep.text, prep.meta, prep.out, probes=prep.probes,
                                   tok=prep.tok)
    finally:
        shutil.rmtree(store.staging_dir(prep.out), ignore_errors=True)
    prep.timings.update(outputs_s=time.perf_counter() - t0, total_s=time.perf_counter() - prep.t_start)
    store.write_text_atomic(prep.out / TIMINGS_FILE, json.dumps(prep.timings, indent=2) + "\n")
    return report


# ---------------------------------------------------------------- inputs


def _file_sha(path: str) -> str:
    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()


def _settings(cfg: StudyConfig, suite: Suite, text: Text, tok, probe_inputs=None) -> dict[str, Any]:
    """What study.json records: under "results", every `results=True` setting of `cfg` (config.py's
    metadata; `cfg` has the model's window/overlap filled in), nested as in the config tree, with the
    settings that name inputs replaced by what those inputs are (below); under "annotation", choices
    that may change between runs (the final files are rebuilt from the groups every run). probe_inputs:
    study/probes.prepare's, whose input files are recorded by content (None: the settings as given)."""
    from seedkl_jax.data.text import text_record
    from seedkl_jax.study import probes

    recorded = {  # a setting that names an input: record the input itself, so that an edited file or
        # another spelling of the same suite (preset + overrides vs templates) is judged by content
        "suite": suite.to_dict(),  # every suite.* setting at once: the resolved checkpoints
        "text.text": text_record(text),
        "text.tokenizer": {"vocab_size": int(tok.vocab_size), "eos_id": int(tok.eos_id),  # after --vocab_size
                           "vocab_sha256": checks.vocab_fingerprint(tok)},
        "text.counts": None if not cfg.text.counts else {"source": os.path.abspath(cfg.text.counts),
                                                         "sha256": _file_sha(cfg.text.counts)},
    }
    if probe_inputs is not None:
        recorded.update(probes.records(probe_inputs, cfg))
    results: dict[str, Any] = {}
    for path, value in config.results_values(cfg).items():
        key = next((k for k in recorded if path == k or path.startswith(k + ".")), path)
        node = results
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = recorded.get(key, value)
    return {"format": store.SETTINGS_FORMAT, "results": results, "annotation": {"pos": cfg.text.pos}}


# ---------------------------------------------------------------- groups


def _compute_groups(prep: Prepared, groups: list[tuple[str, int]], *, write: bool, agree, progress: bool,
                    on_group=None) -> None:
    """Compute and persist every group of `groups` that has no valid file in prep.out/groups yet
    (which ones: this process's view, or `agree`'s; persisted only if `write`). Seconds spent per
    group go into `prep.timings["groups"]` (see TIMINGS_FILE). Groups at the suite's first step also get
    the KL to `prep.reference_other` (reduced in the same pass, kept as compat.OTHER_KL)."""
    from seedkl_jax.analysis.compat import OTHER_KL
    from seedkl_jax.analysis.token_meta import held_out_key
    from tqdm import tqdm

    from seedkl_jax.kernels.compare import compare_stacked
    from seedkl_jax.kernels.windows import MLMSpec
    from seedkl_jax.study import probes

    cfg, suite, text, tok, out = prep.cfg, prep.suite, prep.text, prep.tok, prep.out
    reference, reference_other, timings = prep.reference, prep.reference_other, prep.timings
    timings["kernel_form"] = str(prep.kernel.form)  # what ran
    n_pos = text.n_positions
    mlm_scoring = cfg.scoring.mlm_scoring
    mlm = None if not mlm_scoring else MLMSpec(mlm_scoring, tok.cls_id, tok.sep_id, tok.mask_id, tok.pad_id)
    first = min(suite.steps) if reference_other is not None else None
    held_key = None if cfg.analysis.surprisal_seed is None else held_out_key(cfg.analysis.surprisal_seed)
    probe_keys = probes.keys(prep.probes) if prep.probes is not None else ()
    probe_keys += _measured_keys(cfg.measure)  # not probes, but alike: a group saved without them is recomputed
    need = lambda step: ((OTHER_KL,) if step == first else ()) + probe_keys + (  # noqa: E731
        (held_key,) if held_key and step == max(suite.steps) else ())
    done = np.array([write and store.load_group(out, *g, suite.seeds, n_pos, need(g[1])) is not None
                     for g in groups], bool)
    if agree is not None:
        done = np.asarray(agree(done), bool)
    todo = [g for g, d in zip(groups, done) if not d]
    tok_check = None if suite.is_local else checks.TokenizerCheck(tok, tok_source)
    bar = tqdm(total=len(groups), initial=len(groups) - len(todo), desc="groups", unit="group", disable=not progress)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="seedkl-prefetch")
    try:
        extra = lambda step: (cfg.analysis.surprisal_seed,) if held_key in need(step) else ()  # noqa: E731
        future = pool.submit(_load_group_params, prep, *todo[0], tok_check, progress, extra(todo[0][1])) if todo else None
        per_group = timings.setdefault("groups", [])
        for i, (size, step) in enumerate(todo):
            t_wait = time.perf_counter()
            model_cfg, stacked = future.result()
            t_wait = time.perf_counter() - t_wait
            if i + 1 < len(todo):  # overlap loading the next group with this group's compute
                future = pool.submit(_load_group_params, prep, *todo[i + 1], tok_check, progress, extra(todo[i + 1][1]))
            bar.set_description(f"{size} step {step}")
            t0 = time.perf_counter()
            both = OTHER_KL in need(step)  # the other choice's unigram too, in the same pass (analysis/compat.py)
            refs = np.stack([reference, reference_other]) if both else reference
            arrays = {k: np.asarray(v) for k, v in compare_stacked(
                stacked, model_cfg, text.ids, kernel=prep.kernel, vocab_size=tok.vocab_size, reference_logprobs=refs,
                window=cfg.scoring.window, overlap=cfg.scoring.overlap, mesh=cfg.mesh, mlm=mlm, doc_ids=text.doc_ids,
                metrics=cfg.measure.metrics, topk=cfg.measure.save_topk,
                seed_names=[f"{size} step {step} seed {s}" for s in suite.seeds + extra(step)],
            ).items()}
            if extra(step):  # the held-out seed: keep its surprisal, drop it from every compared array
                arrays = _split_held_out(arrays, len(suite.seeds), held_key)
            if both:
                arrays["kl_unigram"], arrays[OTHER_KL] = arrays["kl_unigram"][..., 0], arrays["kl_unigram"][..., 1]
            if prep.probes is not None:  # ICL score, minimal pairs: the compared seeds only
                arrays.update(probes.score(prep.probes, _compared(stacked, len(suite.seeds)), model_cfg,
                                           vocab_size=tok.vocab_size, seed_names=list(suite.seeds), mesh=cfg.mesh))
            dt = time.perf_counter() - t0
            del stacked
            t_save = time.perf_counter()
            other = {"both_unigrams": True} if both else {}
            if write:
                store.save_group(out, size, step, list(suite.seeds), arrays)
            per_group.append({"size": size, "step": int(step), "params_wait_s": t_wait, "compare_s": dt, **other,
                              "save_s": time.perf_counter() - t_save})
            bar.update(1)
            bar.set_postfix_str(f"{n_pos / dt:,.0f} tok/s, {n_pos * len(suite.seeds) / dt:,.0f} tok*seeds/s")
            if on_group is not None:
                on_group(size, step)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()


def _held_out_suite(suite: Suite, seed) -> Suite:
    """The held-out seed's checkpoints: one per size at the suite's last step (--surprisal_seed)."""
    if seed in suite.seeds:
        raise SeedKLError(f"--surprisal_seed={seed}: it is one of the compared --seeds; give a seed whose KL is not "
                          "measured (e.g. PolyPythia's 2 when comparing 1,3,5,7,9)")
    return dataclasses.replace(suite, steps=(max(suite.steps),), seeds=(seed,))


def _compared(stacked, S: int):
    """The first S seeds of `seed_params`' layout (a held-out seed, when present, comes last)."""
    if isinstance(stacked, tuple):
        return stacked[:S]
    import jax

    return jax.tree.map(lambda x: x[:S], stacked)


def _measured_keys(measure) -> tuple[str, ...]:
    """The group arrays --metrics and --save_topk add to compare()'s (the agreed kernel names)."""
    return ((("top1_agree",) if "top1" in measure.metrics else ()) + (("js",) if "js" in measure.metrics else ())
            + (("topk_ids", "topk_prob") if measure.save_topk > 0 else ()))


def _split_held_out(arrays: dict, S: int, key: str) -> dict:
    """compare() arrays of S compared seeds + 1 held-out one -> the S seeds' arrays + key: its [P] surprisal.
    Pairwise [P,S+1,S+1] arrays (kl, top1_agree, js) lose the held-out row and column; every other array
    ([P,S+1] per seed, [P,S+1,K] top-k) its seed."""
    out = {k: (v[:, :S, :S] if k in ("kl", "top1_agree", "js") else v[:, :S]) for k, v in arrays.items()}
    out[key] = arrays["surprisal"][:, S]
    return out


def _load_group_params(prep: Prepared, size: str, step: int, tok_check, progress=False, extra_seeds: tuple = ()):
    """Load the S seeds of one group (orbax-cached), then `extra_seeds` (a held-out seed): (model config,
    their params as `seed_params` lays them out for compare: on the device, stacked or not).

    A seed with NaN/inf weights restored from the params cache is converted afresh (the entry dropped);
    NaN/inf weights in a fresh conversion are refused by size/step/seed and path (the checkpoint is
    broken), and its params-cache entry is dropped (a re-downloaded or re-saved checkpoint is then
    converted afresh)."""
    from tqdm import tqdm

    from seedkl_jax.convert import cache
    from seedkl_jax.convert.loader import load
    from seedkl_jax.hf import hub
    from seedkl_jax.kernels.compare import seed_params

    suite, tok, dtype, cache_dir = prep.suite, prep.tok, prep.cfg.dtype, prep.cfg.output.cache_dir
    models = []
    seeds = tuple(suite.seeds) + tuple(extra_seeds)
    with tqdm(total=len(seeds), desc=f"params {size} step {step}", unit="ckpt", position=1, leave=False,
              disable=not progress) as bar:
        for seed in seeds:
            model, revision = suite.checkpoint(size, step, seed)
            where = f"size {size} step {step} seed {seed} ({hub.ref_string(model, revision)})"
            m = load(model, revision, dtype=dtype, cache_dir=cache_dir)
            bar.update(1)
            bar.set_postfix_str(m.source)  # "cache" (restored) or "convert" (read and converted now); redraws
            if tok_check is not None and getattr(m, "local_dir", None):
                tok_check.check(m.local_dir)
            if m.config.vocab_size < tok.vocab_size:
                raise SeedKLError(f"{where}: vocab_size {m.config.vocab_size} but the tokenizer has {tok.vocab_size} "
                                  "ids; the checkpoint does not belong to this tokenizer")
            bad = checks.nonfinite_tensors(m.params)
            if bad and m.source == "cache":  # a cached copy: drop it and judge the checkpoint by a fresh conversion
                cache.drop(Path(m.cache_entry))
                m = load(model, revision, dtype=dtype, cache_dir=cache_dir)
                bad = checks.nonfinite_tensors(m.params)
            if bad:
                if m.cache_entry:
                    cache.drop(Path(m.cache_entry))
                raise SeedKLError(f"{where}: NaN/inf weights in {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}; "
                                  "the checkpoint is broken (its params-cache entry was dropped): re-download "
                                  "or re-save it, or leave this seed out")
            models.append(m)
    first = models[0]
    for seed, m in zip(seeds[1:], models[1:]):
        if m.config != first.config:
            diff = checks.config_difference(first.hf_dict, m.hf_dict) or [f"{first.config} vs {m.config}"]
            raise SeedKLError(f"size {size} step {step}: seed {seed} has a different architecture than seed "
                              f"{suite.seeds[0]} ({', '.join(diff[:4])}); all seeds of a size must share one config")
    return first.config, seed_params([m.params for m in models], prep.cfg.mesh)
