"""The convergence study: for every (size, step) of a suite, all seeds' KL on one text, then tables,
phases, figures and a report in `--out` (the file contract is in SPEC.md / `study/store.py`).

Order of work, chosen so that every bad input fails before any compute and a crash costs at most one group:
  1. check `--out` is writable, the suite is well formed and every checkpoint exists (all missing listed);
  2. tokenizer (`--tokenizer` or the first checkpoint's) — every checkpoint must carry the same one;
  3. read the text, annotate it once (frequency, PoS, documents), build the unigram reference;
  4. bind `--out` to these settings (`study.json`; a rerun with other settings is refused);
  5. for each unfinished group: load its S seeds (the next group loads in a background thread while
     this one computes), `compare_stacked`, persist `groups/<size>/step<step>.npz` atomically;
  6. read all groups back from disk (so a resumed run and an uninterrupted one write identical files)
     and write tokens/pairs/token_meta/summary/phases/findings/figures/report, each atomically.
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

from seedkl_jax.data.text import Text, read_text
from seedkl_jax.errors import SeedKLError
from seedkl_jax.study import store
from seedkl_jax.study.suite import Suite, check_complete

# Test hook: exit abruptly (no cleanup, like a kill) right after this many groups were persisted.
EXIT_AFTER_GROUPS_ENV = "SEEDKL_TEST_EXIT_AFTER_GROUPS"
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt")
# Where this run's wall time went (diagnostics, rewritten by every run that aggregates): setup (inputs,
# annotation), per computed group the wait for its params and its compare (the first one of each
# model size includes XLA's compile), saving, and the final outputs.
TIMINGS_FILE = "timings.json"


@dataclasses.dataclass
class StudyConfig:
    """Everything `seedkl run` needs; one field per flag (see cli/run.py for their meaning)."""

    suite: Suite
    text: str
    out: str
    tokenizer: str | None = None       # tokenizer.json / model dir / hub id; default: the first checkpoint's
    counts: str | None = None          # .npy of per-id corpus counts; default: counted over the text
    pos: str = "stanza"                # "stanza" | "none" | FILE (see data/annotate.py)
    pos_required: bool = False         # stanza unavailable: False = warn and go on untagged, True = error
    overwrite: bool = False
    window: int = 2048
    overlap: int = 1024
    vocab_chunk: int | None = None
    kernel: str = "fused"              # "fused" | "naive" (materialises [S,P,V]: a baseline for benchmarks)
    kernel_form: str | None = None     # "pair" | "einsum" | "onepass"; None: the backend's default (kernels/divergence.py)
    position_block: int | None = None  # the kernel's Pb; None: its default for the form
    cache_logits: bool | None = None   # two-pass forms: keep pass 1's logits; None: the backend's default
    vocab_size: int | None = None      # normalise over ids < vocab_size; default: every id the tokenizer defines
    cache_dir: str | None = None
    save_pair_positions: bool = False
    n_boot: int = 1000
    dtype: str = "float32"             # params dtype of the loads (the kernel stacks and computes in float32)
    mesh: Any = None                   # jax.sharding.Mesh for compare_stacked; None = default devices


def run_study(cfg: StudyConfig, *, progress: bool = True, shard: tuple[int, int] = (0, 1),
              aggregate: bool = True, write: bool = True,
              agree: Callable[[np.ndarray], np.ndarray] | None = None) -> Path | None:
    """Run (or resume) the study described by `cfg`; returns the path of report.md.

    Multi-host (seedkl_jax.distributed): `shard=(index, count)` computes and persists only the groups
    whose position i in `Suite.groups()` has i % count == index (and `--overwrite` clears only those);
    `aggregate=False` returns None after persisting, before the final outputs.
    Global-mesh mode runs this on every process at once (cfg.mesh spanning them all): `write=False`
    computes but writes nothing into --out (no study.json, groups or outputs; returns None), and
    `agree(done) -> done` maps this process's bool [n_groups] "already persisted" mask to the one every
    process uses (process 0's), so that all enter the same groups' collectives in the same order.
    """
    from seedkl_jax.kernels.windows import check_window

    t_start = time.perf_counter()
    suite = cfg.suite.validate()
    check_window(cfg.window, cfg.overlap)
    out = store.check_writable(Path(cfg.out)) if write else Path(cfg.out).expanduser().resolve()
    check_complete(suite, cfg.cache_dir, cfg.dtype)
    tok, tok_source = _tokenizer(cfg, suite)
    if cfg.vocab_size is not None:
        if not 2 <= cfg.vocab_size <= tok.vocab_size:
            raise SeedKLError(f"--vocab_size={cfg.vocab_size}: must be between 2 and the tokenizer's {tok.vocab_size} ids")
        tok = dataclasses.replace(tok, vocab_size=int(cfg.vocab_size))  # one place: every later use sees it
    text = read_text(cfg.text, tok)

    from seedkl_jax.data.annotate import annotate_tokens, counts_from_ids, load_counts
    from seedkl_jax.kernels.divergence import unigram_logprobs

    counts = None if not cfg.counts else load_counts(cfg.counts, tok.vocab_size)  # checks the length
    settings = _settings(cfg, suite, text, tok)
    store.claim(out, settings, cfg.overwrite, write=False)  # refuse a foreign --out before slow annotation
    meta = annotate_tokens(text.ids, text.text, text.offsets, tok, counts, cfg.pos, cache_dir=cfg.cache_dir,
                           required=cfg.pos_required)
    reference = unigram_logprobs(counts if counts is not None else counts_from_ids(text.ids, tok.vocab_size),
                                 tok.vocab_size)
    mine = suite.groups()[shard[0]::shard[1]]
    if write:
        store.claim(out, settings, cfg.overwrite, write=True, groups=mine)

    timings: dict[str, Any] = {"setup_s": time.perf_counter() - t_start}
    _compute_groups(cfg, suite, mine, text, tok, tok_source, np.asarray(reference), out, progress, write, agree,
                    timings)
    if not aggregate or not write:
        return None
    t0 = time.perf_counter()
    report = _write_outputs(cfg, suite, text, meta, out)
    timings.update(outputs_s=time.perf_counter() - t0, total_s=time.perf_counter() - t_start)
    store.write_text_atomic(out / TIMINGS_FILE, json.dumps(timings, indent=2) + "\n")
    return report


# ---------------------------------------------------------------- inputs


def _tokenizer(cfg: StudyConfig, suite: Suite):
    """The study's tokenizer, and a check that every local checkpoint carries the same one."""
    from seedkl_jax.data.tokenizer import load_tokenizer

    if cfg.tokenizer:
        source, tok = cfg.tokenizer, load_tokenizer(cfg.tokenizer)
    else:
        size, step, seed, model, revision = next(suite.checkpoints())
        source = model if revision is None else f"{model}@{revision}"
        tok = load_tokenizer(model, revision)
    if suite.is_local:
        checker = _TokenizerCheck(tok, source)
        for *_, model, _ in suite.checkpoints():
            checker.check(model)
    return tok, source


class _TokenizerCheck:
    """Compares the tokenizer files of checkpoint folders with the study's tokenizer (by vocabulary).

    Identical files are compared once (hash of the bytes); differing files are loaded and compared by
    vocabulary + added tokens, so a reformatted but equal tokenizer.json still passes.
    """

    def __init__(self, tok, source: str):
        self.tok, self.source, self.want = tok, source, _vocab_fingerprint(tok)
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
            self.seen[key] = _vocab_fingerprint(load_tokenizer(folder)) == self.want
        if not self.seen[key]:
            raise SeedKLError(f"tokenizer mismatch: {folder} has a different tokenizer than {self.source}; "
                              "all checkpoints of a suite must share one tokenizer (check the suite, or --tokenizer)")


def _vocab_fingerprint(tok) -> str:
    vocab = tok.backend.get_vocab(with_added_tokens=True)
    return hashlib.sha256(json.dumps(sorted(vocab.items())).encode()).hexdigest()


def _file_sha(path: str) -> str:
    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()


def _settings(cfg: StudyConfig, suite: Suite, text: Text, tok) -> dict[str, Any]:
    """What the persisted groups depend on (a rerun must match it) plus annotation settings (may change)."""
    return {
        "results": {
            "suite": suite.to_dict(),
            "text": {"source": os.path.abspath(text.source), "n_tokens": int(len(text.ids)),
                     "sha256": text.fingerprint()},
            "tokenizer": {"vocab_size": int(tok.vocab_size), "eos_id": int(tok.eos_id),
                          "vocab_sha256": _vocab_fingerprint(tok)},
            "counts": None if not cfg.counts else {"source": os.path.abspath(cfg.counts), "sha256": _file_sha(cfg.counts)},
            "window": int(cfg.window), "overlap": int(cfg.overlap), "dtype": cfg.dtype,
        },
        "annotation": {"pos": cfg.pos},
    }


# ---------------------------------------------------------------- groups


def _compute_groups(cfg, suite, groups, text, tok, tok_source, reference, out, progress, write, agree,
                    timings: dict) -> None:
    """Compute and persist every group of `groups` that has no valid file in out/groups yet
    (which ones: this process's view, or `agree`'s; persisted only if `write`). Seconds spent per
    group go into `timings["groups"]` (see TIMINGS_FILE)."""
    from tqdm import tqdm

    from seedkl_jax.kernels.compare import compare_stacked, use_compilation_cache

    use_compilation_cache(cfg.cache_dir)  # a second process reuses this one's compiled steps

    n_pos = text.n_positions
    done = np.array([write and store.load_group(out, *g, suite.seeds, n_pos) is not None for g in groups], bool)
    if agree is not None:
        done = np.asarray(agree(done), bool)
    todo = [g for g, d in zip(groups, done) if not d]
    exit_after = int(os.environ.get(EXIT_AFTER_GROUPS_ENV, "0") or 0)
    tok_check = None if suite.is_local else _TokenizerCheck(tok, tok_source)
    bar = tqdm(total=len(groups), initial=len(groups) - len(todo), desc="groups", unit="group", disable=not progress)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="seedkl-prefetch")
    try:
        future = pool.submit(_load_group_params, cfg, suite, *todo[0], tok, tok_check) if todo else None
        per_group = timings.setdefault("groups", [])
        for i, (size, step) in enumerate(todo):
            t_wait = time.perf_counter()
            model_cfg, stacked = future.result()
            t_wait = time.perf_counter() - t_wait
            if i + 1 < len(todo):  # overlap loading the next group with this group's compute
                future = pool.submit(_load_group_params, cfg, suite, *todo[i + 1], tok, tok_check)
            bar.set_description(f"{size} step {step}")
            t0 = time.perf_counter()
            arrays = compare_stacked(stacked, model_cfg, text.ids, vocab_size=tok.vocab_size,
                                     reference_logprobs=reference, window=cfg.window, overlap=cfg.overlap,
                                     vocab_chunk=cfg.vocab_chunk, mesh=cfg.mesh, form=cfg.kernel_form, kernel=cfg.kernel,
                                     position_block=cfg.position_block, cache_logits=cfg.cache_logits,
                                     seed_names=[f"{size} step {step} seed {s}" for s in suite.seeds])
            arrays = {k: np.asarray(v) for k, v in arrays.items()}
            dt = time.perf_counter() - t0
            del stacked
            t_save = time.perf_counter()
            if write:
                store.save_group(out, size, step, list(suite.seeds), arrays)
            per_group.append({"size": size, "step": int(step), "params_wait_s": t_wait, "compare_s": dt,
                              "save_s": time.perf_counter() - t_save})
            bar.update(1)
            bar.set_postfix_str(f"{n_pos / dt:,.0f} tok/s, {n_pos * len(suite.seeds) / dt:,.0f} tok*seeds/s")
            if exit_after and i + 1 >= exit_after:
                os._exit(3)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()


def _load_group_params(cfg: StudyConfig, suite: Suite, size: str, step: int, tok, tok_check):
    """Load the S seeds of one group (orbax-cached) and stack them: (model config, stacked params)."""
    from seedkl_jax.convert.loader import load
    from seedkl_jax.kernels.compare import stack_params

    models = []
    for seed in suite.seeds:
        model, revision = suite.checkpoint(size, step, seed)
        m = load(model, revision, dtype=cfg.dtype, cache_dir=cfg.cache_dir)
        if tok_check is not None and getattr(m, "local_dir", None):
            tok_check.check(m.local_dir)
        if m.config.vocab_size < tok.vocab_size:
            raise SeedKLError(f"{model}{'@' + revision if revision else ''}: {m.config.vocab_size} vocab rows but the "
                              f"tokenizer has {tok.vocab_size} ids; the checkpoint does not belong to this tokenizer")
        models.append(m)
    first = models[0]
    for seed, m in zip(suite.seeds[1:], models[1:]):
        if m.config != first.config:
            raise SeedKLError(f"size {size} step {step}: seed {seed} has a different architecture than seed "
                              f"{suite.seeds[0]}; all seeds of a size must share one config")
    stacked = stack_params([m.params for m in models])
    return first.config, stacked


# ---------------------------------------------------------------- outputs


def _write_outputs(cfg: StudyConfig, suite: Suite, text: Text, meta, out: Path) -> Path:
    """All final files from the persisted groups, staged in out/.staging and moved in file by file."""
    import polars as pl

    from seedkl_jax.analysis.aggregate import GroupResult, pair_rows, summarize, token_rows
    from seedkl_jax.analysis.findings import findings
    from seedkl_jax.analysis.phases import phases_from_summary
    from seedkl_jax.data.annotate import surprisal_bin
    from seedkl_jax.report.figures import make_figures
    from seedkl_jax.report.markdown import write_report

    groups = []
    for size, step in suite.groups():
        arrays = store.load_group(out, size, step, suite.seeds, text.n_positions)
        if arrays is None:  # cannot happen after _compute_groups unless someone deletes files meanwhile
            raise SeedKLError(f"--out={out}: group {size} step {step} vanished during the run; rerun to recompute it")
        groups.append(GroupResult(size=size, step=step, seeds=list(suite.seeds), arrays=arrays))

    stage = out / ".staging"
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "figures").mkdir(parents=True)

    token_meta = _token_meta(meta, groups, suite, surprisal_bin)
    tables = {
        "tokens.parquet": pl.concat([token_rows(g, meta) for g in groups], how="vertical"),
        "pairs.parquet": pl.concat([pair_rows(g) for g in groups], how="vertical"),
        "token_meta.parquet": token_meta,
    }
    if cfg.save_pair_positions:
        tables["pair_positions.parquet"] = pl.concat([_pair_positions(g) for g in groups], how="vertical")
    summary = summarize(groups, token_meta, n_boot=cfg.n_boot, seed=0)
    tables["summary.parquet"] = summary
    for name, df in tables.items():
        df.write_parquet(stage / name)
    summary.write_csv(stage / "summary.csv")

    phases = phases_from_summary(summary)  # per size; a too-short sweep gets status "too_short"
    (stage / "phases.json").write_text(json.dumps(phases, indent=2) + "\n", encoding="utf-8")
    found = findings(summary, phases)  # the paper's findings checked on this suite (also in report.md)
    (stage / "findings.json").write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
    figures = make_figures(summary, phases, stage / "figures")
    report = write_report(stage, summary, phases, figures, findings=found,
                          extra=_extra_sections(cfg, suite, text, int(meta["doc_id"].max()) + 1))

    produced = [p for p in sorted(stage.rglob("*")) if p.is_file()]
    for p in produced:  # each final file appears complete (one rename) or keeps its previous version
        dest = out / p.relative_to(stage)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(p, dest)
    fresh = {out / p.relative_to(stage) for p in produced}
    for old in (out / "figures").glob("*.png"):  # figures of sizes no longer in the study
        if old not in fresh:
            old.unlink()
    shutil.rmtree(stage, ignore_errors=True)
    return out / Path(report).relative_to(stage)


def _token_meta(meta, groups, suite: Suite, surprisal_bin):
    """meta per size + final_surprisal (mean over seeds at the size's largest step) and its bin."""
    import polars as pl

    last = {g.size: g for g in groups if g.step == max(suite.steps)}
    parts = []
    for size in suite.sizes:
        final = np.asarray(last[size].arrays["surprisal"], np.float64).mean(axis=1)  # [P,S] -> [P]
        parts.append(meta.with_columns(
            pl.lit(size).alias("size"),
            pl.Series("final_surprisal", final),
            pl.Series("final_surprisal_bin", surprisal_bin(final), dtype=pl.Utf8),
        ))
    df = pl.concat(parts, how="vertical")
    return df.select(["size"] + [c for c in df.columns if c != "size"])


def _pair_positions(group):
    """Per-position KL of every ordered seed pair (--save_pair_positions): [P*S*(S-1)] rows."""
    import polars as pl

    kl = np.asarray(group.arrays["kl"])  # [P,S,S]
    n_pos, n_seeds = kl.shape[:2]
    a, b = np.nonzero(~np.eye(n_seeds, dtype=bool))
    seeds = np.asarray(group.seeds)
    return pl.DataFrame({
        "size": [group.size] * (n_pos * len(a)),
        "step": np.full(n_pos * len(a), group.step, np.int64),
        "position": np.repeat(np.arange(1, n_pos + 1, dtype=np.int64), len(a)),
        "seed_a": np.tile(seeds[a], n_pos), "seed_b": np.tile(seeds[b], n_pos),
        "kl": kl[:, a, b].reshape(-1),
    })


def _extra_sections(cfg: StudyConfig, suite: Suite, text: Text, n_docs: int) -> list[tuple[str, str]]:
    s = suite
    lines = [
        f"- suite: sizes {', '.join(s.sizes)}; steps {', '.join(map(str, s.steps))}; seeds {', '.join(map(str, s.seeds))}",
        f"- checkpoints: `{s.model_template}`" + (f" at revision `{s.revision_template}`" if s.revision_template else ""),
        f"- text: `{text.source}`, {len(text.ids):,} tokens ({text.n_positions:,} predictions, "
        f"{n_docs} documents)",
        f"- window {cfg.window}, overlap {cfg.overlap}; PoS: {cfg.pos}; counts: {cfg.counts or 'counted over the text'}",
    ]
    return [("Study settings", "\n".join(lines))]
