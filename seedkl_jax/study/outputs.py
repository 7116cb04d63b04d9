"""Step 7 of a study (study/run.py): every final file of `--out` from the persisted groups — tables,
phases, findings, figures, report.md — staged in this run's staging folder and moved in file by file,
so each final file appears complete or keeps its previous version.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from seedkl_jax.data.text import Text
from seedkl_jax.errors import SeedKLError
from seedkl_jax.study import store
from seedkl_jax.study.suite import Suite


def write(cfg, suite: Suite, text: Text, meta, out: Path) -> Path:
    """All final files from the persisted groups (cfg: the study's StudyConfig), staged in this run's
    staging folder and moved in file by file; returns report.md's path."""
    import polars as pl

    from seedkl_jax.analysis.aggregate import GroupResult, pair_rows, summarize, token_rows
    from seedkl_jax.analysis.contrasts import contrasts
    from seedkl_jax.analysis.divergent import divergent_tokens
    from seedkl_jax.analysis.findings import findings
    from seedkl_jax.analysis.phases import phases_from_summary
    from seedkl_jax.analysis.regression import regression
    from seedkl_jax.report.figures import make_figures
    from seedkl_jax.report.markdown import write_report

    groups = []
    for size, step in suite.groups():
        arrays = store.load_group(out, size, step, suite.seeds, text.n_positions)
        if arrays is None:  # cannot happen after _compute_groups unless someone deletes files meanwhile
            raise SeedKLError(f"--out={out}: group {size} step {step} vanished during the run; rerun to recompute it")
        groups.append(GroupResult(size=size, step=step, seeds=list(suite.seeds), arrays=arrays))

    stage = store.new_staging(out)  # this run's own folder (a killed run's leftovers are removed)

    token_meta = _token_meta(meta, groups, suite, cfg.compat)
    tables = {
        "tokens.parquet": pl.concat([token_rows(g, meta) for g in groups], how="vertical"),
        "pairs.parquet": pl.concat([pair_rows(g) for g in groups], how="vertical"),
        "token_meta.parquet": token_meta,
    }
    if cfg.save_pair_positions:
        tables["pair_positions.parquet"] = pl.concat([_pair_positions(g) for g in groups], how="vertical")
    replicates: dict = {}  # bootstrap replicates (seeds + documents, the same draws for every group)
    summary = summarize(groups, token_meta, n_boot=cfg.n_boot, seed=0, replicates=replicates)
    tables["summary.parquet"] = summary
    tables["regression.parquet"] = reg = regression(groups, token_meta, n_boot=cfg.n_boot, seed=0)
    tables["divergent_tokens.parquet"] = div = divergent_tokens(groups, token_meta, n_boot=cfg.n_boot, seed=0)
    for name, df in tables.items():
        df.write_parquet(stage / name)
    summary.write_csv(stage / "summary.csv")

    phases = phases_from_summary(summary, replicates=replicates)  # per size; paired step changes
    (stage / "phases.json").write_text(json.dumps(phases, indent=2) + "\n", encoding="utf-8")
    con = contrasts(groups, token_meta, n_boot=cfg.n_boot, seed=0)  # frequent/rare, function/content words
    found = findings(summary, phases, replicates=replicates, contrasts=con)  # the paper's findings, tested
    (stage / "findings.json").write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
    figures = make_figures(summary, phases, stage / "figures", regression=reg,
                           lr_schedule=getattr(suite, "lr_schedule", None))
    report = write_report(stage, summary, phases, figures, findings=found, regression=reg, divergent=div,
                          extra=_extra_sections(cfg, suite, text, int(meta["doc_id"].max()) + 1, groups, token_meta))

    store.publish(stage, out)  # each final file appears complete (one rename) or keeps its previous version
    return out / Path(report).relative_to(stage)


def _token_meta(meta, groups, suite: Suite, compat: str = "none"):
    """meta per size + final_surprisal (at the size's largest step: mean over seeds, or the first seed's
    with compat="paper") and its bin; compat="paper" also merges every count >= 1e5 into one freq_bin."""
    import polars as pl

    from seedkl_jax.analysis.compat import final_surprisal, freq_top
    from seedkl_jax.data.annotate import freq_bin, surprisal_bin

    last = {g.size: g for g in groups if g.step == max(suite.steps)}
    if freq_top(compat) is not None and "count" in meta.columns:
        meta = meta.with_columns(pl.Series("freq_bin", freq_bin(meta["count"].to_numpy(), top=freq_top(compat)),
                                           dtype=pl.Utf8))
    parts = []
    for size in suite.sizes:
        final = final_surprisal(last[size].arrays["surprisal"], compat)  # [P,S] -> [P]
        parts.append(meta.with_columns(
            pl.lit(size).alias("size"),
            pl.Series("final_surprisal", final),
            pl.Series("final_surprisal_bin", surprisal_bin(final), dtype=pl.Utf8),
        ))
    df = pl.concat(parts, how="vertical")
    return df.select(["size"] + [c for c in df.columns if c != "size"])


def _pair_positions(group):
    """Per-position KL of every ordered seed pair (--save_pair_positions): [P*S*(S-1)] rows."""
    import polars as pl

    kl = np.asarray(group.arrays["kl"])  # [P,S,S]
    n_pos, n_seeds = kl.shape[:2]
    a, b = np.nonzero(~np.eye(n_seeds, dtype=bool))
    seeds = np.asarray(group.seeds)
    return pl.DataFrame({
        "size": [group.size] * (n_pos * len(a)),
        "step": np.full(n_pos * len(a), group.step, np.int64),
        "position": np.repeat(np.arange(1, n_pos + 1, dtype=np.int64), len(a)),
        "seed_a": np.tile(seeds[a], n_pos), "seed_b": np.tile(seeds[b], n_pos),
        "kl": kl[:, a, b].reshape(-1),
    })


def _extra_sections(cfg, suite: Suite, text: Text, n_docs: int, groups=(), token_meta=None
                    ) -> list[tuple[str, str]]:
    from seedkl_jax.analysis.bootstrap import SCHEME
    from seedkl_jax.analysis.compat import choice_effects

    s = suite
    lines = [
        f"- suite: sizes {', '.join(s.sizes)}; steps {', '.join(map(str, s.steps))}; seeds {', '.join(map(str, s.seeds))}",
        f"- checkpoints: `{s.model_template}`" + (f" at revision `{s.revision_template}`" if s.revision_template else ""),
        f"- text: `{text.source}`, {len(text.ids):,} tokens ({text.n_positions:,} predictions, "
        f"{n_docs} documents)",
        f"- window {cfg.window}, overlap {cfg.overlap}; PoS: {cfg.pos}; counts: {cfg.counts or 'counted over the text'}",
        f"- compat: {cfg.compat}; uncertainty: {SCHEME} ({cfg.n_boot} replicates)",
    ]
    out = [("Study settings", "\n".join(lines))]
    if groups and token_meta is not None:
        counts, vocab = None, cfg.vocab_size
        if cfg.counts:
            counts = np.load(cfg.counts, allow_pickle=False)
            vocab = vocab or len(counts)
            counts = counts[:vocab]
        title = "What this run replicates" if cfg.compat == "paper" else "How much each corrected choice moves the results"
        out.append((title, choice_effects(groups, token_meta, cfg.compat, counts, vocab)))
    return out
