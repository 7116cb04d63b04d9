"""`--compat=paper`: the paper's own choices where our defaults correct them, and what each moves.

Why this file exists: a researcher must be able to redraw the paper's figures with the paper's
statistics *and* see, with this run's numbers, where our defaults differ. Three choices differ:

  choice                 paper (compat="paper")                      ours (compat="none", default)
  final-surprisal bins   surprisal under the last checkpoint of the  mean over seeds of the surprisal
                         FIRST seed of the size                      at the size's last checkpoint
  top frequency bin      every count >= 1e5 in one bin ">=1e5"       decade bins all the way up
  unigram baseline       log(count / sum), no smoothing; zero-count  add-0.5 smoothing
                         ids get log(6e-312 / sum) ~ -736 (the        (kernels.reference.unigram_logprobs)
                         denormal its counts file holds there)

`choice_effects` writes the report section that quantifies each on this run: both binnings of the
final surprisal and of the top frequency bin at each size's last step (E[conv] and n per bin), and
for the unigram the models' mean KL at the suite's first step to both references: the run's own
(`kl_unigram`) and the other choice's (`kl_unigram_other` [P,S], from one extra compare per size at
the first step, study/run.py), with their difference; as context, the exact change the other
reference makes for a uniform prediction, Σ_v (1/V)(log q_a(v) − log q_b(v)).
"""
from __future__ import annotations

import numpy as np
import polars as pl

from seedkl_jax.data.annotate import PAPER_TOP_BIN, freq_bin, surprisal_bin
from seedkl_jax.errors import SeedKLError

CHOICES = ("none", "paper")
OTHER_KL = "kl_unigram_other"  # [P,S] KL to the other choice's unigram; first-step groups only
PAPER_ZERO_COUNT = 6e-312
REPLICATES = ("final-surprisal bins from the first seed's last checkpoint; every count >= 1e5 in one "
              "frequency bin; the unsmoothed unigram with zero-count ids at log(6e-312 / total) ≈ −736")


def check(compat: str) -> str:
    if compat not in CHOICES:
        raise SeedKLError(f"--compat={compat!r}: choose one of {list(CHOICES)} (paper = the paper's own choices)")
    return compat


def paper_unigram_logprobs(counts: np.ndarray, vocab_size: int | None = None) -> np.ndarray:
    """The paper's unigram log-probs [V] float64: log(c/Σc); counts < 1 become PAPER_ZERO_COUNT."""
    c = np.asarray(counts, np.float64).reshape(-1)
    V = len(c) if vocab_size is None else int(vocab_size)
    if len(c) > V:
        raise SeedKLError(f"counts: {len(c)} entries but the vocabulary has {V} ids; pass counts for the real vocabulary")
    c = np.concatenate([np.where(c < 1, 0.0, c), np.zeros(V - len(c))])
    return np.log(np.where(c > 0, c, PAPER_ZERO_COUNT)) - np.log(c.sum())


def unigram_reference(compat: str, counts: np.ndarray, vocab_size: int) -> np.ndarray:
    """The reference log-probs the kernel compares with: ours (smoothed) or the paper's."""
    from seedkl_jax.kernels.reference import unigram_logprobs
    if check(compat) == "paper":
        return paper_unigram_logprobs(counts, vocab_size)
    return unigram_logprobs(counts, vocab_size)


def other_choice(compat: str) -> str:
    """The choice a run does not use ("none" <-> "paper"): its unigram is measured at the first step too."""
    return "none" if check(compat) == "paper" else "paper"


def final_surprisal(surprisal: np.ndarray, compat: str) -> np.ndarray:
    """[P,S] surprisal at a size's last step -> [P] defining the final-surprisal bins."""
    s = np.asarray(surprisal, np.float64)
    return s[:, 0] if check(compat) == "paper" else s.mean(axis=1)


def freq_top(compat: str) -> int | None:
    return PAPER_TOP_BIN if check(compat) == "paper" else None


# ------------------------------------------------------------------------------ report section
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
    from seedkl_jax.analysis.aggregate import _meta_for, category_order, size_order
    from seedkl_jax.report.markdown import _table

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
        s = g.arrays["surprisal"]
        order = lambda labs, kind="final_surprisal_bin": category_order(kind, labs)
        for r in _rows_both(tok, surprisal_bin(final_surprisal(s, "none")), surprisal_bin(final_surprisal(s, "paper")),
                            order):
            sur_rows.append([f"{size} @ {g.step}"] + r)
        cnt = m["count"].to_numpy() if "count" in m.columns else None
        if cnt is not None:
            for r in _rows_both(tok, freq_bin(cnt), freq_bin(cnt, top=PAPER_TOP_BIN),
                                lambda labs: category_order("freq_bin", labs)):
                if r[0].startswith(">=") or (r[0].startswith("1e") and int(r[0][2:].split("-")[0]) >= 5):
                    freq_rows.append([f"{size} @ {g.step}"] + r)
        if first[size].arrays.get("kl_unigram") is not None:
            uni_rows.append([f"{size} @ {first[size].step}"] + _unigram_cells(first[size].arrays, compat))
    lines += ["**Final-surprisal bins** (ours: mean over seeds; paper: first seed)", "",
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
