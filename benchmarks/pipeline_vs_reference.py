"""End to end, side by side on one local suite: `seedkl run` vs the paper-style pipeline vs seedkl
with the naive (unfused) kernel — wall time, tokens*seeds/s, bytes written, peak RSS, and how far
apart the per-token KLs of seedkl and the fp16-storing reference are.

    python benchmarks/pipeline_vs_reference.py            # 2 sizes x 3 steps x 5 seeds, ~4.7k tokens
    python benchmarks/pipeline_vs_reference.py --quick    # smoke test: 1 size x 2 steps x 3 seeds, ~500 tokens

Modes, each in its own subprocess (so peak RSS is its own) on the same suite and text:
  a       `seedkl run` end to end (api.run_study, --pos=none), cold: includes converting every
          checkpoint into the params cache (its bytes are counted separately from the outputs)
  a_warm  the same with the params cache warm (what every later study on these checkpoints costs)
  b       benchmarks/reference_pipeline.py: torch forward per checkpoint, fp16 full-vocab log-probs
          to disk, then KL pair by pair from the reloaded matrices
  c       `seedkl run` with the naive kernel (all [S,P,V] logits materialised), warm cache
Suite: random-init checkpoints with Pythia shapes and the real vocab (benchmarks/common.py); the
text is ../shared's Pile sample (4,663 ids, the paper's) when present, else a synthetic one.
Nothing here asserts a time: it prints a table (and --out appends it to a file).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags, logging

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
import common  # noqa: E402

_SIZES = flags.DEFINE_list("sizes", ["14m", "31m"], "Pythia shapes (common.SHAPES)")
_STEPS = flags.DEFINE_list("steps", ["0", "1000", "143000"], "steps (labels of the random checkpoints)")
_SEEDS = flags.DEFINE_list("seeds", ["1", "3", "5", "7", "9"], "seeds")
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", None, "cut the text to about this many ids")
_QUICK = flags.DEFINE_boolean("quick", False, "smoke test: 14m only, steps 0,1, seeds 1,2,3, ~500 ids")
_MODES = flags.DEFINE_list("modes", ["a", "a_warm", "b", "c"], "which of a, a_warm, b, c to run")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/seedkl-bench", "suite, outputs and caches go here")
_KEEP = flags.DEFINE_boolean("keep", False, "keep the workdir's outputs (the suite is always kept)")
_WINDOW = flags.DEFINE_integer("window", 2048, "window")
_OVERLAP = flags.DEFINE_integer("overlap", 1024, "overlap")
_OUT = flags.DEFINE_string("out", None, "also append the table and a JSON line to this file")
_CHILD = flags.DEFINE_string("child", None, "internal: run one mode in this process")

LABELS = {"a": "(a) seedkl run, cold cache", "a_warm": "(a) seedkl run, warm cache",
          "b": "(b) reference (fp16 .npy)", "c": "(c) seedkl, naive kernel"}


@dataclasses.dataclass
class Setup:
    sizes: list[str]
    steps: list[int]
    seeds: list[int]
    max_tokens: int | None
    workdir: Path

    @property
    def template(self) -> str:
        return str(self.workdir / "suite" / "{size}" / "seed{seed}" / "step{step}")


def _setup() -> Setup:
    if _QUICK.value:
        return Setup(["14m"], [0, 1], [1, 2, 3], _MAX_TOKENS.value or 500, Path(_WORKDIR.value) / "quick")
    return Setup(list(_SIZES.value), [int(s) for s in _STEPS.value], [int(s) for s in _SEEDS.value],
                 _MAX_TOKENS.value, Path(_WORKDIR.value) / "full")


# ------------------------------------------------------------------ children (one mode each)


def _run_seedkl(st: Setup, out: Path, cache: Path, kernel: str) -> dict:
    from seedkl_jax import api

    suite = api.Suite(sizes=st.sizes, steps=st.steps, seeds=st.seeds, model_template=st.template,
                      revision_template="")
    cfg = api.StudyConfig.from_flat(suite=suite, text=str(st.workdir / "text.txt"), out=str(out), pos="none",
                                    overwrite=True, window=_WINDOW.value, overlap=_OVERLAP.value,
                                    cache_dir=str(cache), kernel=kernel)
    api.run_study(cfg, progress=False)
    import jax

    stats = (jax.local_devices()[0].memory_stats() or {}) if jax.default_backend() != "cpu" else {}
    return {"device_peak_bytes": stats.get("peak_bytes_in_use"),
            "timings": json.loads((out / "timings.json").read_text())}


def _split(t: dict, wall_s: float) -> str:
    """One line from a run's timings.json: where (a)'s wall time went."""
    groups = t["groups"]
    first = {}
    for g in groups:  # the first compare of each size compiles its program
        first.setdefault(g["size"], g["compare_s"])
    compare = sum(g["compare_s"] for g in groups)
    return (f"startup + imports {wall_s - t['total_s']:.1f} s, setup {t['setup_s']:.1f} s, params wait "
            f"{sum(g['params_wait_s'] for g in groups):.1f} s, compare {compare:.1f} s (first group of each "
            f"size, incl. compile: {sum(first.values()):.1f} s), save {sum(g['save_s'] for g in groups):.1f} s, "
            f"outputs {t['outputs_s']:.1f} s")


def _real_vocab(st: Setup) -> int:
    """The vocabulary seedkl normalises over (its tokenizer's ids), so (b) slices the same."""
    from seedkl_jax.data.tokenizer import load_tokenizer

    return load_tokenizer(str(st.workdir / "tokenizer.json")).vocab_size


def _child(mode: str) -> None:
    st = _setup()
    w0 = common.io_bytes_written()
    t0 = time.perf_counter()
    cache = st.workdir / "params-cache"
    out = st.workdir / f"out_{mode}"
    shutil.rmtree(out, ignore_errors=True)
    if mode == "a":
        shutil.rmtree(cache, ignore_errors=True)
    if mode in ("a", "a_warm", "c"):
        cache_before = common.dir_bytes(cache)
        res = _run_seedkl(st, out, cache, "naive" if mode == "c" else "fused")
        res.update(bytes_outputs=common.dir_bytes(out), bytes_cache=common.dir_bytes(cache) - cache_before)
    else:
        import reference_pipeline

        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
        ids = common.encode_text(st.workdir / "text.txt", st.workdir / "tokenizer.json")
        r = reference_pipeline.run_reference(st.template, st.sizes, st.steps, st.seeds, ids, out,
                                             real_vocab=_real_vocab(st), window=_WINDOW.value,
                                             overlap=_OVERLAP.value, progress=False)
        res = {"bytes_outputs": r["bytes_written"], "bytes_cache": 0, "forward_s": r["forward_s"],
               "pairs_s": r["pairs_s"], "device_peak_bytes": r["device_peak_bytes"]}
    res.update(wall_s=time.perf_counter() - t0, peak_rss_mb=common.peak_rss_mb(),
               wchar=common.io_bytes_written() - w0)
    (st.workdir / f"result_{mode}.json").write_text(json.dumps(res))


# ------------------------------------------------------------------ parent


def _spawn(mode: str, argv: list[str]) -> dict:
    st = _setup()
    cmd = [sys.executable, __file__, f"--child={mode}", *sys.argv[1:]]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=os.environ | {"PYTHONUNBUFFERED": "1"})
    res = json.loads((st.workdir / f"result_{mode}.json").read_text())
    res["process_s"] = time.perf_counter() - t0
    return res


def _kl(st: Setup, mode: str, size: str, step: int):
    import numpy as np

    if mode == "b":
        return np.load(st.workdir / "out_b" / "kl" / f"{size}_step{step}.npy")
    with np.load(st.workdir / f"out_{mode}" / "groups" / size / f"step{step}.npz") as z:
        return z["kl"]


def _max_delta(st: Setup, x: str, y: str) -> tuple[float, float, float]:
    """max |KL_x - KL_y| over groups, positions and ordered pairs; the largest KL; max relative."""
    import numpy as np

    worst = big = rel = 0.0
    for size, step in itertools.product(st.sizes, st.steps):
        a, b = _kl(st, x, size, step).astype(np.float64), _kl(st, y, size, step)
        d = np.abs(a - b)
        worst, big = max(worst, float(d.max())), max(big, float(np.abs(a).max()))
        rel = max(rel, float((d / np.maximum(np.abs(a), 1e-3)).max()))
    return worst, big, rel


def main(argv):
    logging.set_verbosity(logging.WARNING)  # orbax logs every save/restore at INFO
    if _CHILD.value:
        return _child(_CHILD.value)
    st = _setup()
    t0 = time.perf_counter()
    text_path, tok_path = common.prepare_text(st.workdir, st.max_tokens)
    ids = common.encode_text(text_path, tok_path)
    common.build_suite(st.workdir / "suite", st.sizes, st.steps, st.seeds, tok_path)
    print(f"suite: sizes {st.sizes} x steps {st.steps} x seeds {st.seeds} (vocab {common.PYTHIA_VOCAB} rows, "
          f"{_real_vocab(st)} real ids), "
          f"text {len(ids)} ids ({'shared Pile sample' if common.shared_dir() else 'synthetic'}), "
          f"built in {time.perf_counter() - t0:.0f} s; {os.cpu_count()} CPUs")
    results = {}
    for mode in _MODES.value:
        if mode not in LABELS:
            raise app.UsageError(f"--modes: unknown mode {mode!r}; use a, a_warm, b, c")
        print(f"running {LABELS[mode]} ...", flush=True)
        results[mode] = r = _spawn(mode, argv)
        # One line per finished mode, also into --out: a run cut off by a time limit keeps these.
        done = (f"   {mode}: wall {r['wall_s']:.1f} s, outputs {common.human_bytes(r['bytes_outputs'])}, "
                f"peak RSS {r['peak_rss_mb'] / 1000:.2f} GB")
        print(done, flush=True)
        if _OUT.value:
            with open(_OUT.value, "a") as fh:
                fh.write(done + "\n")
    n_groups = len(st.sizes) * len(st.steps)
    tok_seeds = (len(ids) - 1) * len(st.seeds) * n_groups
    rows = []
    for mode, r in results.items():
        rows.append({"mode": LABELS[mode], "wall s": f"{r['wall_s']:.1f}",
                     "tok*seeds/s": f"{tok_seeds / r['wall_s']:,.0f}",
                     "written: outputs": common.human_bytes(r["bytes_outputs"]),
                     "+ params cache": common.human_bytes(r["bytes_cache"]),
                     "write() total": common.human_bytes(r["wchar"]),
                     "peak RSS": f"{r['peak_rss_mb'] / 1000:.2f} GB"})
        if r.get("device_peak_bytes"):
            rows[-1]["peak device mem"] = common.human_bytes(r["device_peak_bytes"])
    lines = [common.table(rows)]
    ratio = lambda x, y, k: results[x][k] / results[y][k]
    for a in ("a", "a_warm"):
        if a in results and "b" in results:
            with_cache = results[a]["bytes_outputs"] + results[a]["bytes_cache"]
            lines.append(f"{LABELS[a]} vs (b): {ratio('b', a, 'wall_s'):.1f}x faster (b_time/a_time); "
                         f"{ratio('b', a, 'bytes_outputs'):,.0f}x fewer output bytes, "
                         f"{results['b']['bytes_outputs'] / with_cache:,.1f}x fewer counting the params cache; "
                         f"peak RSS ratio a/b {ratio(a, 'b', 'peak_rss_mb'):.2f}")
    base = "a_warm" if "a_warm" in results else "a"
    if "c" in results and base in results:
        lines.append(f"(c)/{LABELS[base]}: time {ratio('c', base, 'wall_s'):.2f}x, "
                     f"peak RSS {ratio('c', base, 'peak_rss_mb'):.2f}x")
    for mode in ("a", "a_warm", "c"):
        if mode in results and "timings" in results[mode]:
            lines.append(f"{LABELS[mode]} split: {_split(results[mode]['timings'], results[mode]['wall_s'])}")
    if "b" in results:
        lines.append(f"(b) split: forward + fp16 save {results['b']['forward_s']:.1f} s, "
                     f"pairwise KL from reloads {results['b']['pairs_s']:.1f} s")
    fused = [m for m in ("a", "a_warm") if m in results]
    if fused and "b" in results:
        worst, big, rel = _max_delta(st, fused[0], "b")
        lines.append(f"max |KL_a - KL_b| = {worst:.2e} nats (largest KL {big:.2f}; max relative "
                     f"{rel:.1e}): the cost of fp16 log-prob storage in (b)")
    if fused and "c" in results:
        worst, _, rel = _max_delta(st, fused[0], "c")
        lines.append(f"max |KL_a - KL_c| = {worst:.2e} nats (max relative {rel:.1e}): fused vs naive kernel")
    text = "\n".join(lines)
    print(text)
    if _OUT.value:
        with open(_OUT.value, "a") as fh:
            fh.write(text + "\n" + json.dumps({"setup": dataclasses.asdict(st) | {"workdir": str(st.workdir)},
                                               "tokens": len(ids), "results": results}) + "\n")
    if not _KEEP.value:
        for mode in results:
            shutil.rmtree(st.workdir / f"out_{mode}", ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
