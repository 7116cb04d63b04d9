"""Calibration of the findings table: simulated per-pair KL studies with a known truth, run through
the analysis many times, and the rate at which each verdict comes out wrong.

    python benchmarks/calibration.py                      # 200 studies per case (docs/verdicts.md)
    python benchmarks/calibration.py --studies 20 --quick # a smoke run

A simulated study (`simulate`) is what `seedkl run` / `seedkl analyze` see: for each (size, step) the
per-position KL between every ordered seed pair, kl [P,S,S], plus a token meta table (position,
token_id, doc_id, freq_bin, xpos, paper_pos). The KL of token p between seeds a and b is
    kl[p,a,b] = level_{c(p)}(size, step) * exp(z_p + g_doc + s_c (u_a + u_b) / sqrt 2 + e_pab - var / 2)
with z_p a token difficulty and g_doc a document effect (fixed over steps and sizes), u a seed effect
(persistent per size plus a per-step part), e_pab the token-by-pair noise (a part symmetric in a, b),
and level the mean KL: four phases in log2(step) (flat 0.02 to step 16, down to 0.005 at 256, up to 0.3
at 2000, then recovering the size's `fraction` of that divergence by the last step), or a flat or a
monotone curve. Categories: ~1,400 frequent vs ~190 rare tokens (freq_bin) and ~420 function vs ~900
content words (Penn xpos), assigned at random. An effect makes A (frequent / function) better: level
x (1 - more/2) vs x (1 + more/2), the curve shifted `faster/2` log2 steps earlier vs later, and seed
effect s_c x (1 -+ reliable/2).

`run` sends each simulated study through `analysis.pipeline.analyze_groups` (summarize ->
phases_from_summary -> contrasts -> findings), the one analysis call that both `seedkl run`
(report/outputs.py) and `seedkl analyze` (analysis/tables.py) make.

Cases and what each measures (claim ids of analysis.findings):
  null       four phases, every size recovers 60%, categories from one distribution (different token
             counts): false "reproduced" and false "not reproduced" of the six token claims; false
             "not reproduced" and power of phases
  size_low   as null but every size recovers 20%: false "reproduced" of size (only the trend can fail)
  flat       E[conv] flat: false "reproduced" of phases
  monotone   E[conv] rising throughout: false "reproduced" of phases
  effect     fractions 10% / 50% / 90%, A better on every token claim (level 30% lower, curve 2 log2 steps
             earlier, seed effect 0.02 vs 0.14): power and false "not reproduced" of every claim but
             phases (the shifted categories blur the all-token curve's convergence dip at step 256,
             so there its truth is not the paper's four phases)
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seedkl_jax.analysis.aggregate import GroupResult  # noqa: E402
from seedkl_jax.analysis.findings import FINDINGS  # noqa: E402
from seedkl_jax.analysis.phases import PAPER_PHASE_STEPS  # noqa: E402
from seedkl_jax.analysis.pipeline import analyze_groups  # noqa: E402
from seedkl_jax.data.annotate import paper_pos  # noqa: E402

STEPS = (0, 4, 16, 64, 256, 1000, 2000, 8000, 32000, 143000)
SIZES = ("14m", "160m", "1b")
SIGMA_E, SIGMA_SEED = 1.0, 0.08      # token-by-pair noise dominates a rare bin's SD over pairs, as in real data
TOKEN_IDS = ("freq_more", "freq_faster", "freq_reliable", "function_more", "function_faster", "function_reliable")


@dataclasses.dataclass(frozen=True)
class Case:
    shape: str = "four"                        # "four" | "flat" | "monotone"
    fractions: tuple = (0.6, 0.6, 0.6)         # recovered fraction per size (four phases only)
    more: float = 0.0                          # relative level gap B over A
    faster: float = 0.0                        # log2-step shift between A and B
    reliable: float = 0.0                      # relative seed-effect gap B over A
    false_reproduced: tuple = ()               # claims for which this case is a null
    false_not_reproduced: tuple = ()           # claims for which "not reproduced" is wrong here
    power: tuple = ()                          # claims that are true here


CASES = {
    "null": Case(false_reproduced=TOKEN_IDS, false_not_reproduced=TOKEN_IDS + ("phases",), power=("phases",)),
    "size_low": Case(fractions=(0.2, 0.2, 0.2), false_reproduced=("size",), false_not_reproduced=("size",)),
    "flat": Case(shape="flat", false_reproduced=("phases",)),
    "monotone": Case(shape="monotone", false_reproduced=("phases",)),
    "effect": Case(fractions=(0.1, 0.5, 0.9), more=0.3, faster=2.0, reliable=1.5,
                   false_not_reproduced=tuple(FINDINGS)[1:], power=tuple(FINDINGS)[1:]),
}


def level(shape: str, x: np.ndarray, fraction: float) -> np.ndarray:
    """Mean KL over x = log2(step) (step 0 at -1)."""
    if shape == "flat":
        return np.full_like(x, 0.1)
    if shape == "monotone":
        return 0.3 - 0.25 * np.clip((x + 1) / 18.2, 0, 1)
    xu, xc, xd, xe = 4.0, 8.0, np.log2(2000), np.log2(143000)
    k0, k1, kd = 0.02, 0.005, 0.3
    ke = kd - fraction * (kd - k1)
    return np.interp(x, [xu, xc, xd, xe], [k0, k1, kd, ke])


def token_meta(P: int, D: int, rng) -> pl.DataFrame:
    """~1400 frequent / ~190 rare tokens; ~420 function / ~900 content Penn tags, at random."""
    n_rare = round(P * 190 / 1600)
    freq = np.array(["1e4-1e5"] * (P - n_rare - P // 100) + ["1-9"] * n_rare + ["100-999"] * (P // 100))
    n_fun, n_con = round(P * 420 / 1600), round(P * 900 / 1600)
    tags = np.array(list(np.resize(["IN", "DT", "MD", "PRP"], n_fun)) + list(np.resize(["NN", "NNS", "VB", "VBD", "JJ"], n_con))
                    + list(np.resize(["RB", ",", "CD"], P - n_fun - n_con)))
    freq, tags = rng.permutation(freq), rng.permutation(tags)
    return pl.DataFrame({"position": np.arange(1, P + 1), "token_id": rng.integers(0, 50000, P),
                         "doc_id": np.arange(P) * D // P, "freq_bin": freq, "xpos": tags,
                         "paper_pos": [paper_pos(t) for t in tags]})


def simulate(case: Case, seed: int, *, P: int = 1600, S: int = 5, D: int = 10, steps=STEPS, sizes=SIZES):
    """(groups, meta) of one simulated study (module docstring)."""
    rng = np.random.default_rng(seed)
    meta = token_meta(P, D, rng)
    xs = np.log2(np.maximum(np.asarray(steps, np.float64), 0.5))
    a_freq = (meta["freq_bin"] == "1e4-1e5").to_numpy()
    b_freq = (meta["freq_bin"] == "1-9").to_numpy()
    a_fun = np.isin(meta["paper_pos"].to_numpy(), ["IN", "DT", "MD", "PRP"])
    b_fun = np.isin(meta["paper_pos"].to_numpy(), ["Nouns", "Verbs", "JJ"])
    side = np.where(a_freq, -1.0, np.where(b_freq, 1.0, 0.0)) + np.where(a_fun, -1.0, np.where(b_fun, 1.0, 0.0))
    z = rng.normal(0, 0.5, P) + rng.normal(0, 0.2, D)[meta["doc_id"].to_numpy()]
    s_seed = SIGMA_SEED * (1 + case.reliable / 2 * side)                 # [P]
    groups = []
    iu = np.triu_indices(S, 1)
    for size, frac in zip(sizes, case.fractions):
        u_keep = rng.normal(0, 1, S)
        for st, x in zip(steps, xs):
            lv = level(case.shape, x - case.faster / 2 * side, frac) * (1 + case.more / 2 * side)   # [P]
            u = 0.7 * u_keep + 0.7 * rng.normal(0, 1, S)
            pair = (u[:, None] + u[None, :]) / np.sqrt(2)                  # [S,S]
            sym = np.zeros((P, S, S))
            sym[:, iu[0], iu[1]] = rng.normal(0, 1, (P, len(iu[0])))
            sym = sym + sym.transpose(0, 2, 1)
            e = SIGMA_E * (sym + rng.normal(0, 1, (P, S, S))) / np.sqrt(2)
            logk = z[:, None, None] + s_seed[:, None, None] * pair[None] + e
            var = 0.29 + SIGMA_E ** 2 + s_seed ** 2
            kl = (lv * np.exp(-var / 2))[:, None, None] * np.exp(logk)
            kl[:, np.arange(S), np.arange(S)] = 0.0
            groups.append(GroupResult(size, int(st), list(range(S)), {"kl": kl.astype(np.float32)}))
    return groups, meta


def run(groups, meta, n_boot: int) -> list[dict]:
    """One simulated study through `analysis.pipeline.analyze_groups`: the one analysis call that
    `seedkl run` (study/outputs.py) and `seedkl analyze` (analysis/tables.py) both make."""
    return analyze_groups(groups, meta, n_boot=n_boot, phase_steps=PAPER_PHASE_STEPS, seed=0).findings


def calibrate(cases: dict, studies: int, n_boot: int, P: int, seed: int = 0, log=None) -> dict:
    """{case: {claim id: {verdict: count}}} over `studies` simulated studies per case."""
    out = {}
    for name, case in cases.items():
        counts = {cid: {"reproduced": 0, "not reproduced": 0, "inconclusive": 0} for cid in FINDINGS}
        t0 = time.time()
        for i in range(studies):
            groups, meta = simulate(case, seed * 100003 + i, P=P)
            for f in run(groups, meta, n_boot):
                counts[f["id"]][f["verdict"]] += 1
        out[name] = counts
        if log:
            log(f"{name}: {studies} studies in {time.time() - t0:.0f} s")
    return out


def table(cases: dict, counts: dict, studies: int) -> str:
    """Markdown: per claim, false "reproduced" under its null(s), false "not reproduced", and power."""
    rows = ["| claim | false reproduced (case) | false not reproduced (case) | power (case) |", "|---|---|---|---|"]

    def cell(cid, attr, verdict):
        got = [f"{counts[n][cid][verdict] / studies:.1%} ({n})" for n, c in cases.items() if cid in getattr(c, attr)]
        return ", ".join(got) or "–"
    for cid in FINDINGS:
        rows.append(f"| {cid} | {cell(cid, 'false_reproduced', 'reproduced')} | "
                    f"{cell(cid, 'false_not_reproduced', 'not reproduced')} | {cell(cid, 'power', 'reproduced')} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=200, help="simulated studies per case")
    ap.add_argument("--n_boot", type=int, default=200)
    ap.add_argument("--P", type=int, default=1600, help="positions per study")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cases = {n: CASES[n] for n in args.cases.split(",")}
    counts = calibrate(cases, args.studies, args.n_boot, args.P, args.seed, log=lambda s: print(s, flush=True))
    print(f"\n{args.studies} studies per case, n_boot={args.n_boot}, P={args.P}, S=5, D=10, "
          f"{len(SIZES)} sizes x {len(STEPS)} steps\n")
    print(table(cases, counts, args.studies))
    return 0


if __name__ == "__main__":
    sys.exit(main())
