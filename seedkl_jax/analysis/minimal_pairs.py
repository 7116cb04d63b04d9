"""Minimal-pair statistics per task from the seeds' sentence log-probabilities (docs/method.md).

For one (size, step) and one task with pairs n = 1..N and seeds s = 1..S, d[n,s] = log P(good) − log P(bad):
  accuracy[s]   = mean_n [d[n,s] > 0]                       (a tie counts as wrong)
  agreement     = mean over unordered seed pairs i<j of mean_n [(d[n,i] > 0) == (d[n,j] > 0)]
  kl_paper      = the paper's statistic (run-stage/blimp_task.py): per seed the 2-way softmax over
                  [log P(good), log P(bad)] averaged over the task's pairs, P_s = mean_n σ(d[n,s]) (good's
                  share); then KL(P_i || P_j) for every unordered seed pair i<j in the suite's seed order
                  (the script's itertools.combinations with F.kl_div(q.log(), p)), averaged over those pairs
  kl_pair       = mean_n of the same mean over i<j of KL(p[n,i] || p[n,j]) between the seeds' 2-way
                  distributions of each pair (the averaged P_s hides pairs on which seeds disagree)
Both KLs are between Bernoulli distributions, in float64, from log σ(±d) so that saturated pairs stay finite.
"""
from __future__ import annotations

import numpy as np
import polars as pl

STAT_COLUMNS = ["size", "step", "task", "n_pairs", "accuracy", "accuracy_min", "accuracy_max", "agreement",
                "kl_paper", "kl_pair"]


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    """log σ(x) without overflow (float64)."""
    x = np.asarray(x, np.float64)
    return np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))


def bernoulli_kl(logp: np.ndarray, log1mp: np.ndarray, logq: np.ndarray, log1mq: np.ndarray) -> np.ndarray:
    """KL(Bern(p) || Bern(q)) from the four logs (elementwise; a zero-probability side contributes 0)."""
    p, p1 = np.exp(logp), np.exp(log1mp)
    with np.errstate(invalid="ignore"):  # 0 * -inf where a side has no mass: replaced by 0
        return np.where(p > 0, p * (logp - logq), 0.0) + np.where(p1 > 0, p1 * (log1mp - log1mq), 0.0)


def task_stats(good: np.ndarray, bad: np.ndarray) -> dict[str, float | np.ndarray]:
    """good/bad [N,S] log-probs of one task's pairs -> accuracy [S], agreement, kl_paper, kl_pair."""
    d = np.asarray(good, np.float64) - np.asarray(bad, np.float64)  # [N,S]
    N, S = d.shape
    right = d > 0
    ia, ib = np.triu_indices(S, k=1)  # unordered pairs, i < j in seed order
    agree = (right[:, ia] == right[:, ib]).mean(0)  # [pairs]
    lp, l1p = log_sigmoid(d), log_sigmoid(-d)  # [N,S] log of good's / bad's 2-way share
    per_pair = bernoulli_kl(lp[:, ia], l1p[:, ia], lp[:, ib], l1p[:, ib])  # [N,pairs]
    P, P1 = np.exp(lp).mean(0), np.exp(l1p).mean(0)  # [S] averaged 2-way distribution per seed
    with np.errstate(divide="ignore"):
        LP, LP1 = np.log(P), np.log(P1)
    paper = bernoulli_kl(LP[ia], LP1[ia], LP[ib], LP1[ib])  # [pairs]
    return {"accuracy": right.mean(0), "agreement": float(agree.mean()), "kl_paper": float(paper.mean()),
            "kl_pair": float(per_pair.mean())}


def stats_table(groups: list[tuple[str, int, np.ndarray, np.ndarray]], tasks: tuple[str, ...]) -> pl.DataFrame:
    """groups: (size, step, logp_good [N,S], logp_bad [N,S]) with seeds in the suite's order (the KL
    direction follows it); tasks [N]: each pair's task -> one row per (size, step, task), STAT_COLUMNS,
    tasks in order of first appearance."""
    task_arr = np.asarray(tasks)
    out = []
    for size, step, good, bad in groups:
        for task in dict.fromkeys(tasks):
            m = task_arr == task
            st = task_stats(np.asarray(good)[m], np.asarray(bad)[m])
            acc = st["accuracy"]
            out.append({"size": size, "step": int(step), "task": task, "n_pairs": int(m.sum()),
                        "accuracy": float(acc.mean()), "accuracy_min": float(acc.min()),
                        "accuracy_max": float(acc.max()), "agreement": st["agreement"], "kl_paper": st["kl_paper"],
                        "kl_pair": st["kl_pair"]})
    return pl.DataFrame(out, schema={"size": pl.Utf8, "step": pl.Int64, "task": pl.Utf8, "n_pairs": pl.Int64,
                                     **{c: pl.Float64 for c in STAT_COLUMNS[4:]}})
