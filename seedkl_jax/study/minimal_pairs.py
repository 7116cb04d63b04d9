"""Minimal pairs (`--minimal_pairs`, BLiMP's format): a probe of study/probes.py.

Per (size, step, seed, pair) log P(good) and log P(bad) (kernels/sentences.py: causal LMs score
[start] + the sentence's tokens over the real vocab; masked LMs the pseudo-log-likelihood;
`--compat=paper` as the paper's run-stage/blimp_task.py: start and end token, the end token scored,
softmax over every row of the head), kept in each group's file as mp_logp_good / mp_logp_bad [N_pair,S].
At the end: minimal_pairs.parquet, per task accuracy, seed agreement and the two KLs
(analysis/minimal_pairs.py), a figure over steps and a report section.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import polars as pl

from seedkl_jax.analysis.minimal_pairs import stats_table
from seedkl_jax.config import Compat
from seedkl_jax.data.minimal_pairs import MinimalPairs, read_minimal_pairs
from seedkl_jax.report import mdtable

KEYS = ("mp_logp_good", "mp_logp_bad")
FILE = "minimal_pairs.parquet"
FIGURE = "figures/minimal_pairs.png"
TITLE = "Minimal pairs"


@dataclasses.dataclass(frozen=True)
class PairsInputs:
    """The pairs read and checked, and how to score them."""

    pairs: MinimalPairs
    paper: bool            # --compat=paper: start + end token, end token scored, softmax over the full head
    masked: bool           # masked LM: pseudo-log-likelihood
    eos_id: int            # the start (and, paper, end) token of causal LMs
    cls_id: int | None
    sep_id: int | None
    mask_id: int | None
    pad_id: int


def prepare(cfg, tok, text=None) -> PairsInputs | None:
    """The --minimal_pairs file read and tokenized (None: not asked for); bad lines fail here."""
    path = cfg.measure.minimal_pairs
    if path is None:
        return None
    masked = cfg.scoring.mlm_scoring is not None
    paper = cfg.analysis.compat == Compat.PAPER
    special = 2 if (masked or paper) else 1  # [CLS] [SEP] / start + end / start
    window = cfg.scoring.window
    pairs = read_minimal_pairs(path, tok, max_tokens=None if window is None else int(window) - special)
    pad = tok.pad_id if tok.pad_id is not None else tok.eos_id
    return PairsInputs(pairs, paper, masked, int(tok.eos_id), tok.cls_id, tok.sep_id, tok.mask_id, int(pad))


def record(cfg, prepared: PairsInputs | None) -> dict | None:
    """What study.json records for --minimal_pairs: the file by content (its sha256, read once)."""
    if prepared is None:
        return None
    return {"source": os.path.abspath(cfg.measure.minimal_pairs), "sha256": prepared.pairs.sha256}


def keys(prepared: PairsInputs, model_cfg=None) -> tuple[str, ...]:
    return KEYS


def score(prepared: PairsInputs, params, model_cfg, *, vocab_size: int, seed_names, mesh=None
          ) -> dict[str, np.ndarray]:
    """One group's mp_logp_good / mp_logp_bad [N_pair,S] (float64 sums of float32 log-probs)."""
    from seedkl_jax.kernels.sentences import sentence_logprobs

    p = prepared
    rows = int(model_cfg.vocab_size) if p.paper else int(vocab_size)
    both = sentence_logprobs(params, model_cfg, list(p.pairs.good) + list(p.pairs.bad), vocab_rows=rows,
                             start=p.eos_id, end=p.eos_id if p.paper else None, cls=p.cls_id, sep=p.sep_id,
                             mask=p.mask_id, pad=p.pad_id, seed_names=seed_names)
    N = len(p.pairs)
    return {"mp_logp_good": both[:N], "mp_logp_bad": both[N:]}


def rows(prepared: PairsInputs, groups) -> pl.DataFrame:
    """minimal_pairs.parquet: one row per (size, step, seed, pair)."""
    pairs = prepared.pairs
    frames = []
    for g in groups:
        good, bad = (np.asarray(g.arrays[k], np.float64) for k in KEYS)  # [N,S]
        N, S = good.shape
        named = any(isinstance(s, str) for s in g.seeds)
        seeds = pl.Series([str(s) for s in g.seeds] if named else [int(s) for s in g.seeds],
                          dtype=pl.Utf8 if named else pl.Int64)
        frames.append(pl.DataFrame({
            "size": pl.Series([g.size] * (N * S), dtype=pl.Utf8),
            "step": pl.Series([int(g.step)] * (N * S), dtype=pl.Int64),
            "seed": seeds.gather(np.tile(np.arange(S), N)),
            "task": pl.Series(np.repeat(np.asarray(pairs.task, dtype=object), S).tolist(), dtype=pl.Utf8),
            "pair": pl.Series(np.repeat(pairs.pair, S), dtype=pl.Int64),
            "logp_good": pl.Series(good.ravel(), dtype=pl.Float64),
            "logp_bad": pl.Series(bad.ravel(), dtype=pl.Float64),
        }))
    return pl.concat(frames, how="vertical")


def write(prepared: PairsInputs, groups, dest, suite) -> list[tuple[str, str]]:
    """minimal_pairs.parquet and the figure into `dest`; the report section."""
    dest = Path(dest)
    rows(prepared, groups).write_parquet(dest / FILE)
    stats = stats_table([(g.size, g.step, g.arrays[KEYS[0]], g.arrays[KEYS[1]]) for g in groups],
                        prepared.pairs.task)
    sizes = [s for s in suite.sizes if s in set(stats["size"])]
    (dest / FIGURE).parent.mkdir(parents=True, exist_ok=True)
    _figure(stats, sizes, suite.phase_steps, dest / FIGURE)
    return [(TITLE, _section(prepared, stats, sizes))]


def _overall(stats: pl.DataFrame) -> pl.DataFrame:
    """Per (size, step) the mean over tasks (each task weighs the same, as the paper's figure)."""
    cols = ["accuracy", "agreement", "kl_paper", "kl_pair"]
    return stats.group_by(["size", "step"]).agg([pl.col(c).mean() for c in cols]).sort(["size", "step"])


def _figure(stats: pl.DataFrame, sizes: list[str], phase_steps, path: Path) -> None:
    from matplotlib.figure import Figure

    from seedkl_jax.report.plotting import phase_lines, save, step_axis

    means = _overall(stats)
    steps = sorted(set(stats["step"].to_list()))
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    panels = [("accuracy", "accuracy (mean over seeds, tasks)"), ("agreement", "seed agreement on pairs"),
              ("kl_paper", "KL between seeds (2-way, nats)")]
    for ax, (col, label) in zip(axes, panels):
        for i, size in enumerate(sizes):
            m = means.filter(pl.col("size") == size).sort("step")
            ax.plot(m["step"].to_numpy(), m[col].to_numpy(), marker="o", ms=3, color=f"C{i}", label=size)
            if col == "kl_paper":
                ax.plot(m["step"].to_numpy(), m["kl_pair"].to_numpy(), ls="--", color=f"C{i}",
                        label="per pair" if i == 0 else None)
        step_axis(ax, steps)
        phase_lines(ax, steps, phase_steps, label=ax is axes[0])
        ax.set_ylabel(label)
        if col != "kl_paper":  # shares of pairs
            ax.set_ylim(-0.02, 1.02)
    axes[-1].set_title("solid: paper (averaged), dashed: per pair", fontsize=8)
    axes[0].legend(fontsize=7)
    fig.suptitle("Minimal pairs over training", fontsize=10)
    save(fig, path)


def _section(prepared: PairsInputs, stats: pl.DataFrame, sizes: list[str]) -> str:
    p = prepared
    how = ("as the paper's script (--compat=paper): start and end token added, the end token scored, softmax "
           "over every row of the head" if p.paper and not p.masked else
           "pseudo-log-likelihood: each token masked in turn in [CLS] sentence [SEP]" if p.masked else
           "causal: [start token] + the sentence's tokens, log-probs over the real vocabulary, summed over the "
           "sentence's tokens")
    last = int(stats["step"].max())
    lines = [f"`{p.pairs.source}`: {len(p.pairs)} pairs in {len(p.pairs.tasks())} tasks; log P(sentence) {how}. "
             "Per task: accuracy = share of pairs with log P(good) > log P(bad) (mean over seeds, [min, max]); "
             "agreement = share of pairs on which two seeds prefer the same sentence (mean over seed pairs); "
             "KL paper = the paper's statistic (each seed's 2-way softmax averaged over the task's pairs, KL over "
             "unordered seed pairs); KL per pair = the mean over pairs of the KL between the seeds' 2-way "
             f"distributions (docs/method.md). Rows per (size, step, seed, pair): `{FILE}`.",
             "", f"![minimal pairs]({FIGURE})", "", f"At the last step ({last}):", ""]
    table = []
    means = _overall(stats.filter(pl.col("step") == last))
    for size in sizes:
        st = stats.filter((pl.col("size") == size) & (pl.col("step") == last))
        for r in st.iter_rows(named=True):
            table.append([size, r["task"], str(r["n_pairs"]),
                          f"{r['accuracy']:.3f} [{r['accuracy_min']:.3f}, {r['accuracy_max']:.3f}]",
                          f"{r['agreement']:.3f}", f"{r['kl_paper']:.4g}", f"{r['kl_pair']:.4g}"])
        m = means.filter(pl.col("size") == size).row(0, named=True)
        table.append([size, "all (mean over tasks)", str(int(st["n_pairs"].sum())), f"{m['accuracy']:.3f}",
                      f"{m['agreement']:.3f}", f"{m['kl_paper']:.4g}", f"{m['kl_pair']:.4g}"])
    lines.append(mdtable.table(["size", "task", "pairs", "accuracy", "agreement", "KL paper", "KL per pair"], table))
    return "\n".join(lines)
