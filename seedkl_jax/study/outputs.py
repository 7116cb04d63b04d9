"""Step 7 of a study (study/run.py): every final file of `--out` from the persisted groups — tables,
phases, findings, figures, report.md — staged in this run's staging folder and moved in as one set
(study/publish.py: a reader sees the old set or the new one; a kill in the swap is finished by the next run).

The files themselves come from report/outputs.write_outputs, the writer `seedkl analyze` uses too:
this module only reads the groups back, builds the token meta (analysis/token_meta.py: with
`--surprisal_seed`, the held-out seed's last-step surprisal that study/run.py kept in the last-step
groups defines the final-surprisal bins) and adds the run's own report sections.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from seedkl_jax.config import Compat
from seedkl_jax.data.text import Text
from seedkl_jax.errors import SeedKLError
from seedkl_jax.study import publish, store
from seedkl_jax.study.suite import Suite


def write(cfg, suite: Suite, text: Text, meta, out: Path, probes=None, tok=None) -> Path:
    """All final files from the persisted groups (cfg: the study's StudyConfig), staged in this run's
    staging folder and published as one set (study/publish.py); returns report.md's path. probes:
    study/probes.Probes (their arrays are in the groups; they write their own files and report sections);
    tok: the study's tokenizer, which names the top-k ids in explorer.html (None: they show as ids)."""
    from seedkl_jax.analysis.aggregate import GroupResult
    from seedkl_jax.analysis.token_meta import final_surprisals, held_out_key, token_meta
    from seedkl_jax.report.outputs import write_outputs

    key = None if cfg.analysis.surprisal_seed is None else held_out_key(cfg.analysis.surprisal_seed)
    groups, held_out = [], {}
    for size, step in suite.groups():
        arrays = store.load_group(out, size, step, suite.seeds, text.n_positions)
        if arrays is None:  # cannot happen after _compute_groups unless someone deletes files meanwhile
            raise SeedKLError(f"--out={out}: group {size} step {step} vanished during the run; rerun to recompute it")
        if key and step == max(suite.steps):
            held_out[size] = arrays.pop(key, None)  # study/run.py computes it at every size's last step
            if held_out[size] is None:
                raise SeedKLError(f"--out={out}: group {size} step {step} lacks --surprisal_seed's surprisal; "
                                  "rerun to compute it")
        groups.append(GroupResult(size=size, step=step, seeds=list(suite.seeds), arrays=arrays))

    stage = store.new_staging(out)  # this run's own folder (a killed run's leftovers are removed)
    final = final_surprisals(groups, cfg.analysis.compat, held_out, cfg.analysis.surprisal_seed)
    tmeta, source = token_meta(meta, list(suite.sizes), final, cfg.analysis.compat)
    n_docs = int(meta["doc_id"].max()) + 1
    probe_sections = []
    if probes is not None:
        from seedkl_jax.study import probes as probe_mod

        probe_sections = probe_mod.write(probes, groups, stage, suite)
    report = write_outputs(stage, groups, tmeta, n_boot=cfg.analysis.n_boot, phase_steps=suite.phase_steps,
                           lr_schedule=suite.lr_schedule, final_source=source,
                           pair_positions=cfg.output.save_pair_positions, seed_factors=suite.seed_factors,
                           extra=probe_sections + _extra_sections(cfg, suite, text, n_docs, groups, tmeta),
                           vocab=_topk_vocab(groups, tok))
    publish.publish(stage, out, settings=store.read_settings(out))  # the old set or the new one, never a mix
    return out / Path(report).relative_to(stage)


def _topk_vocab(groups, tok) -> dict[int, str] | None:
    """id -> string of every id in the groups' top-k lists (explorer.html names them)."""
    ids = sorted({int(i) for g in groups if "topk_ids" in g.arrays for i in np.unique(g.arrays["topk_ids"])})
    if tok is None or not ids:
        return None
    return dict(zip(ids, tok.decode_tokens(ids)))


def _extra_sections(cfg, suite: Suite, text: Text, n_docs: int, groups=(), token_meta=None
                    ) -> list[tuple[str, str]]:
    from seedkl_jax.analysis.bootstrap import SCHEME
    from seedkl_jax.report.choices import choice_effects

    s = suite
    lines = [
        f"- suite: sizes {', '.join(s.sizes)}; steps {', '.join(map(str, s.steps))}; seeds {', '.join(map(str, s.seeds))}",
        f"- checkpoints: `{s.model_template}`" + (f" at revision `{s.revision_template}`" if s.revision_template else ""),
        f"- text: `{text.source}`, {len(text.ids):,} tokens ({text.n_positions:,} predictions, "
        f"{n_docs} documents)",
        f"- window {cfg.scoring.window}, overlap {cfg.scoring.overlap}; PoS: {cfg.text.pos}; "
        f"counts: {cfg.text.counts or 'counted over the text'}",
        f"- compat: {cfg.analysis.compat}; uncertainty: {SCHEME} ({cfg.analysis.n_boot} replicates)",
    ]
    out = [("Study settings", "\n".join(lines))]
    if groups and token_meta is not None:
        counts, vocab = None, cfg.text.vocab_size
        if cfg.text.counts:
            counts = np.load(cfg.text.counts, allow_pickle=False)
            vocab = vocab or len(counts)
            counts = counts[:vocab]
        compat = cfg.analysis.compat
        title = "What this run replicates" if compat == Compat.PAPER else "How much each corrected choice moves the results"
        out.append((title, choice_effects(groups, token_meta, compat, counts, vocab)))
    return out
