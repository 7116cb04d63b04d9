"""`analyze`: the whole analysis and report from per-pair KL tables computed anywhere (`seedkl analyze`).

The tables (schema: analysis/tables.py, docs/analyze.md) become the study's groups and token meta,
and then go through the same writer as `seedkl run` (report/outputs.write_outputs), so the same KLs
give the same tables, verdicts, figures and report wherever they were computed. Outputs are staged
in `out` and published as one set under `out`'s lock, as a run's are (study/publish.py: manifest.json,
an interrupted swap finished by the next writer).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

from seedkl_jax.errors import SeedKLError


def analyze(pairs, meta, seed_metrics=None, *, out, sizes: Sequence[str] | None = None, n_boot: int = 1000,
            compat: str = "none", phase_steps: Sequence[int] | None = None, surprisal_seed=None,
            wait: bool = False) -> Path:
    """Analyse PAIRS (+ META, optional SEEDS: parquet paths or polars frames) into `out`; returns
    report.md's path. sizes: order (a subset selects; default by the parameter count in the labels);
    compat: "none" | "paper" (analysis/compat.py); phase_steps: the suite's reference phase boundaries
    (three steps; None: no phase lines, no phase verdict); surprisal_seed: a seed of SEEDS not among the
    compared ones whose last-step surprisal defines the final-surprisal bins; wait: queue behind
    another writer of `out` instead of refusing."""
    from seedkl_jax.analysis.bootstrap import SCHEME
    from seedkl_jax.analysis.pipeline import check_phase_steps
    from seedkl_jax.analysis.tables import prepare
    from seedkl_jax.disk import disk_errors
    from seedkl_jax.report.choices import choice_effects
    from seedkl_jax.report.outputs import write_outputs
    from seedkl_jax.study import lock, publish, store

    if int(n_boot) < 1:
        raise SeedKLError(f"--n_boot={n_boot}: must be >= 1; use ~1000 for a 95% interval")
    phase_steps = check_phase_steps(phase_steps)
    t, tmeta, source = prepare(pairs, meta, seed_metrics, sizes=sizes, compat=compat, surprisal_seed=surprisal_seed)
    fresh = not Path(out).expanduser().exists()  # created here: removed again if nothing gets written
    out = store.check_writable(Path(out))
    if (out / store.SETTINGS_FILE).exists():
        raise SeedKLError(f"--out={out}: holds a `seedkl run` study ({store.SETTINGS_FILE}); analyze into "
                          "another folder so the run's outputs stay its own")
    compat = str(getattr(compat, "value", compat))
    steps = sorted({g.step for g in t.groups})
    settings = "\n".join([
        f"- inputs: PAIRS {_name(pairs)}; META {_name(meta)}; SEEDS {_name(seed_metrics)}",
        f"- sizes: {', '.join(t.sizes)}; steps {', '.join(map(str, steps))}; seeds "
        f"{', '.join(map(str, t.groups[0].seeds))}",
        f"- compat: {compat}; uncertainty: {SCHEME} ({n_boot} replicates); phase steps: "
        + ("/".join(map(str, phase_steps)) if phase_steps else "none"),
    ])
    extra = [("Analysis settings", settings),
             ("What this run replicates" if compat == "paper" else "How much each corrected choice moves the results",
              choice_effects(t.groups, tmeta, compat, None, None))]
    digest = {"pairs": _name(pairs), "meta": _name(meta), "seed_metrics": _name(seed_metrics), "sizes": t.sizes,
              "compat": compat, "n_boot": int(n_boot), "phase_steps": phase_steps, "surprisal_seed": surprisal_seed}
    with lock.hold(out, wait=wait, new=fresh):
        stage = store.new_staging(out)
        try:
            with disk_errors(f"--out={out}", "its previous outputs are intact; free space or choose another --out"):
                report = write_outputs(stage, t.groups, tmeta, n_boot=n_boot, phase_steps=phase_steps, sizes=t.sizes,
                                       final_source=source, extra=extra)
                publish.publish(stage, out, settings=digest)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return out / Path(report).relative_to(stage)


def _name(source) -> str:
    if source is None:
        return "none"
    return f"`{source}`" if isinstance(source, (str, Path)) else "(a frame given in Python)"
