"""The ICL score as a study probe (study/probes.py): the repository's in-context-learning score per
(size, step, seed, document), with the KL between seeds at the scored tokens.

Definition and sign: analysis/icl.py (loss_short - loss_long, the negative of the repository's
alternate_icl.py). Per group, `score` runs kernels.compare.compare_stacked on the batch of rows
ids[short_start:target+1] and on ids[long_start:target+1] of every long-enough document (one window per
row): the last position's `surprisal` [N_doc,S] is the loss of token `target` (log-softmax over the real
vocab: --vocab_size or the tokenizer's ids, not the repository's full 50,304-row head), its `kl`
[N_doc,S,S] the KL between the seeds there. Masked LMs have no next-token loss: the section says the
score is defined for causal LMs and nothing is computed.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from seedkl_jax.analysis import icl as stats
from seedkl_jax.data.text import text_record
from seedkl_jax.errors import SeedKLError

KEYS = stats.KEYS


@dataclasses.dataclass(frozen=True)
class IclInputs:
    """What `prepare` read: the scored documents (None for a masked LM) and why there are no numbers."""

    source: str
    positions: tuple[int, int, int]
    docs: stats.Documents | None
    n_boot: int
    note: str | None = None  # set when nothing is scored (masked LM, no document long enough)
    text_record: dict | None = None  # a separate --icl_text by content (study.json), None: the study's text


def prepare(cfg, tok, text) -> IclInputs | None:
    """The documents of --icl_text (default: the study's `text`) long enough for --icl_positions, read
    with the study's tokenizer and checked against every size's context; None with --icl_text=none."""
    m = cfg.measure
    if not m.icl:
        return None
    positions = tuple(int(p) for p in m.icl_positions)
    source = str(text.source if m.icl_text is None else m.icl_text)
    n_boot = int(cfg.analysis.n_boot)
    icl_text = text if m.icl_text is None else read(m.icl_text, tok)
    recorded = None if m.icl_text is None else text_record(icl_text)
    if cfg.scoring.mlm_scoring is not None:
        return IclInputs(source, positions, None, n_boot, note=(
            "Not computed: the ICL score is a next-token loss, defined for causal LMs; this suite is a masked "
            "LM (pass --icl_text=none to drop this section)."), text_record=recorded)
    docs = stats.documents(icl_text.ids, icl_text.eos_id, positions)
    if not len(docs.doc_id):  # nothing to score, so no context to check: the section says why
        return IclInputs(source, positions, docs, n_boot, text_record=recorded, note=(
            f"No ICL score: none of the {docs.n_total} documents has the {positions[2] + 1} ids that "
            f"--icl_positions={','.join(map(str, positions))} needs (longest: {docs.longest}); give "
            "--icl_text with longer documents or smaller --icl_positions."))
    top = int(docs.long.max())
    if top >= tok.vocab_size:  # --vocab_size narrowed the ids the models are normalised over
        flag = "--text" if m.icl_text is None else "--icl_text"
        raise SeedKLError(f"{flag}={source}: the ICL score's rows hold token id {top}, outside the {tok.vocab_size} "
                          "ids the study normalises over (--vocab_size); widen --vocab_size or give another text")
    _check_context(cfg, positions)
    return IclInputs(source, positions, docs, n_boot, text_record=recorded)


def read(path: str, tok):
    """--icl_text read like --text (data/text.read_text, the causal layout), its errors naming --icl_text."""
    from seedkl_jax.data.text import read_text

    try:
        return read_text(path, tok)
    except SeedKLError as e:
        raise SeedKLError(str(e).replace("--text=", "--icl_text=", 1)) from None


def record(cfg, prepared: IclInputs | None) -> dict | str | None:
    """What study.json records for --icl_text: the text by content (as text.text), 'none', or None
    (= the study's text, recorded there)."""
    return prepared.text_record if prepared is not None and prepared.text_record else cfg.measure.icl_text


def keys(prepared: IclInputs, model_cfg=None) -> tuple[str, ...]:
    """The group arrays of the probe (none when nothing is scored)."""
    return KEYS if prepared.docs is not None and len(prepared.docs.doc_id) else ()


def score(prepared: IclInputs, params, model_cfg, *, vocab_size: int, seed_names, mesh=None) -> dict[str, np.ndarray]:
    """One group's arrays: icl_loss_short/long [N_doc,S], icl_kl_short/long [N_doc,S,S] (float32, nats),
    icl_doc_id [N_doc]. params: as kernels.compare.seed_params lays them out."""
    from seedkl_jax.kernels.compare import compare_stacked

    if not keys(prepared):
        return {}
    docs = prepared.docs
    _fits(prepared.positions, int(model_cfg.context), f"the {model_cfg.model_type} model")
    out: dict[str, np.ndarray] = {"icl_doc_id": docs.doc_id.copy()}
    for ctx, rows in (("short", docs.short), ("long", docs.long)):
        n_in = rows.shape[1] - 1  # the context the model sees; the row's last id is the scored target
        r = compare_stacked(params, model_cfg, rows, vocab_size=vocab_size, window=n_in, overlap=0, mesh=mesh,
                            seed_names=[str(s) for s in seed_names], last_only=True)  # only the target is scored
        out[f"icl_loss_{ctx}"] = np.asarray(r["surprisal"], np.float32)  # [N_doc,S]
        out[f"icl_kl_{ctx}"] = np.asarray(r["kl"], np.float32)           # [N_doc,S,S]
    return out


def write(prepared: IclInputs, groups, dest, suite) -> list[tuple[str, str]]:
    """icl.parquet (causal LMs; empty when no document is long enough), figures/icl.png and the section."""
    from seedkl_jax.report import icl as rep

    docs = prepared.docs
    if docs is None:
        return [rep.section(None, prepared.positions, prepared.source, 0, 0, 0, None, note=prepared.note)]
    dest = Path(dest)
    stats.frame(groups).write_parquet(dest / "icl.parquet")
    summary = stats.summary(groups, n_boot=prepared.n_boot)
    rel = None
    if not summary.is_empty():
        (dest / "figures").mkdir(parents=True, exist_ok=True)
        rep.figure(summary, dest / "figures" / rep.FIGURE, suite.phase_steps)
        rel = f"figures/{rep.FIGURE}"
    return [rep.section(summary, prepared.positions, prepared.source, docs.n_total, len(docs.doc_id), docs.longest,
                        rel, note=prepared.note)]


def _check_context(cfg, positions) -> None:
    """Every size's model takes the long context (read from its first checkpoint's config), else one
    error naming --icl_positions that fit."""
    from seedkl_jax.convert.loader import checkpoint_config
    from seedkl_jax.study.suite import resolve_suite

    suite = resolve_suite(cfg.suite)
    for size in suite.sizes:
        model, revision = suite.checkpoint(size, suite.steps[0], suite.seeds[0])
        c = checkpoint_config(model, revision, dtype=cfg.dtype, cache_dir=cfg.output.cache_dir)
        _fits(positions, int(c.context), f"size {size}'s model")


def _fits(positions, context: int, who: str) -> None:
    long_start, short_start, target = positions
    if target - long_start <= context:
        return
    fix = (target - context, short_start, target) if target - short_start < context else (0, context // 2, context)
    raise SeedKLError(f"--icl_positions={long_start},{short_start},{target}: the long context is "
                      f"{target - long_start} tokens but {who} takes {context} positions; use e.g. "
                      f"--icl_positions={','.join(map(str, fix))} (or --icl_text=none)")
