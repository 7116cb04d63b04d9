"""Probes: measurements that need the models themselves, not just the fused KL pass over the text.

Why a separate home: the ICL score (study/icl.py) and minimal pairs (study/minimal_pairs.py) score
their own short inputs with each group's S seeds while the group's params are loaded (study/run.py
step 6), persist their arrays in the group's file beside the KL arrays (so they resume with it), and
write their own tables, figure and report section at step 7. This module is the one place study/run.py
and study/outputs.py call: each probe plugs in here with

    prepare(cfg, tok, text)  -> its inputs, read and checked before any compute (None: not asked for)
    keys(prepared, model_cfg)        -> the group arrays it adds (a group file without them is recomputed)
    score(prepared, params, model_cfg, ...) -> {key: array} for one group
    write(prepared, groups, dest, suite) -> [(report title, markdown)]: files written into dest
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass
class Probes:
    """What `prepare` read for the probes a study asked for (None: not asked for / not applicable)."""

    icl: Any = None
    pairs: Any = None

    def active(self) -> list[tuple[Any, Any]]:
        """(probe module, its prepared inputs) for each probe that runs."""
        return [(mod, prep) for mod, prep in zip(_modules(), (self.icl, self.pairs)) if prep is not None]


def _modules() -> tuple:
    """The probe modules, in report order."""
    from seedkl_jax.study import icl, minimal_pairs

    return (icl, minimal_pairs)


def prepare(cfg, tok, text) -> Probes:
    """Every probe's inputs, read and checked before any compute."""
    from seedkl_jax.study import icl, minimal_pairs

    return Probes(icl=icl.prepare(cfg, tok, text), pairs=minimal_pairs.prepare(cfg, tok, text))


def records(probes: Probes, cfg) -> dict[str, Any]:
    """What study.json records for the probes' input files, by dotted setting path: their content as read."""
    from seedkl_jax.study import icl, minimal_pairs

    return {"measure.icl_text": icl.record(cfg, probes.icl),
            "measure.minimal_pairs": minimal_pairs.record(cfg, probes.pairs)}


def keys(probes: Probes, model_cfg=None) -> tuple[str, ...]:
    """The group array keys every active probe adds."""
    return tuple(k for mod, prep in probes.active() for k in mod.keys(prep, model_cfg))


def score(probes: Probes, params, model_cfg, *, vocab_size: int, seed_names, mesh=None) -> dict[str, np.ndarray]:
    """One group's probe arrays (params as kernels.compare.seed_params lays them out)."""
    out: dict[str, np.ndarray] = {}
    for mod, prep in probes.active():
        out.update(mod.score(prep, params, model_cfg, vocab_size=vocab_size, seed_names=seed_names, mesh=mesh))
    return out


def write(probes: Probes, groups, dest, suite) -> list[tuple[str, str]]:
    """Each probe's files in `dest` (a staging folder) and its report sections."""
    sections: list[tuple[str, str]] = []
    for mod, prep in probes.active():
        sections += mod.write(prep, groups, dest, suite)
    return sections
