"""The analysis of a study in one call: groups + token meta -> summary, phases, findings (and notes).

Why one function: `seedkl run` (groups read back from disk), `seedkl analyze` (groups built from
per-pair KL tables, analysis/tables.py) and the calibration benchmark (simulated tables) must reach
their verdicts by exactly the same steps, so a verdict never depends on where the KLs came from.

Steps: `summarize` (bootstrap replicates kept, the same draws for every group), `phases_from_summary`
(per size), `findings` (the paper's claims; `phase_steps` None = the suite carries no reference phase
boundaries, so no phase verdict). `input_notes` lists each analysis the inputs cannot support (a
column or metric that is missing), so the report can say what was skipped and why.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import polars as pl

from seedkl_jax.analysis.aggregate import GroupResult, size_order, summarize
from seedkl_jax.analysis.token_meta import present

PHASE_STEPS_HELP = ("three ascending steps: where convergence, divergence and reconvergence start on the "
                    "suite's own step axis, e.g. 16,256,2000 (PolyPythia, the paper's)")


@dataclasses.dataclass
class Analysis:
    """What `analyze_groups` computed; `findings` is findings.json's list."""
    summary: pl.DataFrame
    replicates: dict
    phases: dict
    findings: list[dict]
    sizes: list[str]
    notes: list[str]


def check_phase_steps(phase_steps: Sequence[int] | None, flag: str = "--phase_steps") -> tuple[int, ...] | None:
    """None/empty -> None; else three ascending non-negative integers."""
    from seedkl_jax.errors import SeedKLError

    if not phase_steps:
        return None
    try:
        steps = tuple(int(s) for s in phase_steps)
    except (TypeError, ValueError):
        raise SeedKLError(f"{flag}={phase_steps!r}: not integers; give {PHASE_STEPS_HELP}") from None
    if len(steps) != 3 or list(steps) != sorted(set(steps)) or steps[0] < 0:
        raise SeedKLError(f"{flag}={','.join(map(str, steps))}: give {PHASE_STEPS_HELP}")
    return steps


def analyze_groups(groups: list[GroupResult], token_meta: pl.DataFrame, *, n_boot: int = 1000,
                   phase_steps: Sequence[int] | None = None, sizes: Sequence[str] | None = None,
                   seed: int = 0) -> Analysis:
    """summary (with replicates), phases and findings of the groups. token_meta: analysis/token_meta's
    frame; sizes: display / comparison order, smallest first (default: analysis.aggregate.size_order)."""
    from seedkl_jax.analysis.contrasts import contrasts
    from seedkl_jax.analysis.findings import findings
    from seedkl_jax.analysis.phases import phases_from_summary

    sizes = list(sizes) if sizes is not None else size_order([g.size for g in groups])
    order = {s: i for i, s in enumerate(sizes)}
    groups = sorted(groups, key=lambda g: (order.get(g.size, len(order)), int(g.step)))
    phase_steps = check_phase_steps(phase_steps)
    replicates: dict = {}
    summary = summarize(groups, token_meta, n_boot=n_boot, seed=seed, replicates=replicates)
    phases = phases_from_summary(summary, replicates=replicates, phase_steps=phase_steps)
    con = contrasts(groups, token_meta, n_boot=n_boot, seed=seed)  # frequent/rare, function/content words
    found = findings(summary, phases, sizes=sizes, replicates=replicates, contrasts=con, phase_steps=phase_steps)
    return Analysis(summary, replicates, phases, found, sizes, input_notes(groups, token_meta, phase_steps))


def input_notes(groups: list[GroupResult], token_meta: pl.DataFrame, phase_steps=None) -> list[str]:
    """One line per analysis the inputs cannot support (what is missing, what is skipped)."""
    notes = []
    if not present(token_meta, "count"):
        notes.append("no `count` (corpus count of the target): frequency bins, the frequency findings and the "
                     "regression's log-frequency term are skipped")
    if not present(token_meta, "upos") and not present(token_meta, "xpos"):
        notes.append("no PoS tags (`xpos`, `upos`): PoS categories, the function/content findings and the "
                     "regression's PoS terms are skipped")
    elif not present(token_meta, "xpos"):
        notes.append("no Penn tags (`xpos`): the paper's PoS groups and Penn-tag figures are skipped")
    if not present(token_meta, "final_surprisal"):
        notes.append("no surprisal (SEEDS `surprisal`, META `final_surprisal` or a held-out seed): "
                     "final-surprisal bins are skipped")
    for key, what in (("surprisal", "cross-entropy rows and figures"),
                      ("kl_uniform", "KL to the uniform distribution (baselines)"),
                      ("kl_unigram", "KL to the unigram distribution (baselines)")):
        if not any(g.arrays.get(key) is not None for g in groups):
            notes.append(f"no per-seed `{key}`: {what} skipped")
    if not present(token_meta, "token_str"):
        notes.append("no `token_str`: the divergent-token table names token ids only")
    if not phase_steps:
        notes.append("no reference phase boundaries (`--phase_steps` / the preset's): no phase lines, no phase "
                     "verdict")
    return notes
