"""The report section on `--compat`: how much each of the paper's choices moves this run's numbers.

For the three choices of analysis/compat.py: both binnings of the final surprisal and of the top
frequency bin at each size's last step (E[conv] and n per bin), and for the unigram the models' mean
KL at the suite's first step to both references: the run's own (`kl_unigram`) and the other choice's
(`kl_unigram_other` [P,S], from one extra compare per size at the first step, study/run.py), with
their difference; as context, the exact change the other reference makes for a uniform prediction,
Σ_v (1/V)(log q_a(v) − log q_b(v)).
"""
from __future__ import annotations

import numpy as np
import polars as pl

from seedkl_jax.analysis.aggregate import _meta_for, category_order, size_order
from seedkl_jax.analysis.compat import OTHER_KL, REPLICATES, final_surprisal, paper_unigram_logprobs
from seedkl_jax.data.annotate import PAPER_TOP_BIN, freq_bin, surprisal_bin
from seedkl_jax.report.mdtable import table as _table


def _bin_means(tok: np.ndarray, labels: list) -> dict[str, tuple[int, float]]:
    out = {}
    arr = np.asarray(labels, dtype=object)
    for lab in dict.fromkeys(x for x in labels if x is not None):
        m = arr == lab
        out[lab] = (int(m.sum()), -float(tok[m].mean()))
    return out


def _rows_both(tok, ours: list, paper: list, order) -> list[list[str]]:
    a, b = _bin_means(tok, ours), _bin_means(tok, paper)
    rows = []
    for lab in order(list(dict.fromkeys(list(a) + list(b)))):
        ca = f"{a[lab][1]:.4g} (n={a[lab][0]})" if lab in a else "–"
        cb = f"{b[lab][1]:.4g} (n={b[lab][0]})" if lab in b else "–"
        rows.append([lab, ca, cb])
    return rows


def _unigram_cells(arrays: dict, compat: str) -> list[str]:
    """[KL to ours, KL to the paper's, difference, KL to uniform] of one first-step group, formatted."""
    own = float(np.mean(np.asarray(arrays["kl_unigram"], np.float64)))
    other = arrays.get(OTHER_KL)
    other = None if other is None else float(np.mean(np.asarray(other, np.float64)))
    ours, paper = (own, other) if compat == "none" else (other, own)
    uniform = arrays.get("kl_uniform")
    return [f"{ours:.6g}" if ours is not None else "–", f"{paper:.6g}" if paper is not None else "–",
            f"{paper - ours:+.6g}" if None not in (ours, paper) else "–",
            f"{float(np.mean(uniform)):.4g}" if uniform is not None else "–"]


def choice_effects(groups, meta: pl.DataFrame, compat: str, counts: np.ndarray | None,
                   vocab_size: int | None) -> str:
    """Markdown: how much each corrected choice moves this run's numbers (module docstring)."""
    lines = [("This run uses the paper's choices (`--compat=paper`): " + REPLICATES + ".") if compat == "paper"
             else "This run uses our corrected defaults (`--compat=none`); `--compat=paper` replicates the paper's: "
                  + REPLICATES + ".",
             "", "E[conv] at each size's last step under both choices (point estimates, nats):", ""]
    last, first = {}, {}
    for g in groups:
        last[g.size] = g if g.size not in last or g.step > last[g.size].step else last[g.size]
        first[g.size] = g if g.size not in first or g.step < first[g.size].step else first[g.size]
    sur_rows, freq_rows, uni_rows = [], [], []
    for size in size_order(list(last)):
        g = last[size]
        kl = np.asarray(g.arrays["kl"], np.float64)
        S = kl.shape[1]
        tok = kl.sum((1, 2)) / (S * (S - 1))
        m = _meta_for(meta, size, kl.shape[0])
        s = g.arrays.get("surprisal")  # absent: per-pair KLs from elsewhere without seed metrics
        order = lambda labs, kind="final_surprisal_bin": category_order(kind, labs)  # noqa: E731
        for r in (_rows_both(tok, surprisal_bin(final_surprisal(s, "none")),
                             surprisal_bin(final_surprisal(s, "paper")), order) if s is not None else ()):
            sur_rows.append([f"{size} @ {g.step}"] + r)
        cnt = m["count"].to_numpy() if "count" in m.columns else None
        if cnt is not None:
            for r in _rows_both(tok, freq_bin(cnt), freq_bin(cnt, top=PAPER_TOP_BIN),
                                lambda labs: category_order("freq_bin", labs)):
                if r[0].startswith(">=") or (r[0].startswith("1e") and int(r[0][2:].split("-")[0]) >= 5):
                    freq_rows.append([f"{size} @ {g.step}"] + r)
        if first[size].arrays.get("kl_unigram") is not None:
            uni_rows.append([f"{size} @ {first[size].step}"] + _unigram_cells(first[size].arrays, compat))
    if sur_rows:
        lines += ["**Final-surprisal bins** (ours: mean over the compared seeds; paper: first seed)", "",
                  _table(["size @ step", "bin", "ours", "paper's"], sur_rows), ""]
    if freq_rows:
        lines += ["**Top frequency bin** (ours: decades; paper: one bin >= 1e5)", "",
                  _table(["size @ step", "bin", "ours", "paper's"], freq_rows), ""]
    if uni_rows:
        lines += ["**Unigram baseline**: the models' mean KL (nats, over seeds and positions) at the first step to "
                  "our smoothed unigram and to the paper's unsmoothed one (both measured by this run), "
                  "and to uniform (how close to uniform the models are):", "",
                  _table(["size @ step", "KL to ours", "KL to the paper's", "paper's − ours", "KL to uniform"],
                         uni_rows), ""]
    if counts is not None and vocab_size:
        from seedkl_jax.kernels.reference import unigram_logprobs
        ours = unigram_logprobs(counts, vocab_size).astype(np.float64)
        ours -= np.log(np.exp(ours).sum())
        paper = paper_unigram_logprobs(counts, vocab_size)
        n0 = int((np.asarray(counts)[:vocab_size] < 1).sum())
        d = float(np.mean(ours - paper))
        lines.append(f"For a uniform prediction over the {vocab_size:,} ids, KL to the paper's unigram minus KL to "
                     f"ours = {d:+.4g} nats ({n0} ids have zero count and get the paper's floor "
                     f"{float(paper.min()):.1f}); a model near uniform at step 0 moves by about that much.")
    return "\n".join(lines)
