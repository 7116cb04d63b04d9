"""The public, stable API of seedkl_jax. Everything else is an implementation detail.

    load(model, revision=None, *, dtype="float32", cache_dir=None) -> Model
        One checkpoint of any supported family (GPT-NeoX, GPT-2, BERT; local HF dir or hub
        id[@revision]) as a Flax params pytree, cached with orbax. `Model.logits(ids[B,T]) -> [B,T,V]`:
        next-token logits (causal) or the masked-LM head's at every position of the unmasked ids (BERT).
    load_tokenizer(source) -> Tokenizer
    compare(models, input_ids, *, reference_logprobs=None, vocab_size=None, window=None,
            overlap=None, vocab_chunk=None, mesh=None) -> dict[str, np.ndarray]
        Per-position KL between every ordered pair of seeds (kl [P,S,S]), surprisal, entropy,
        KL to uniform and unigram ([P,S]); P = N-1 predictions for an N-token text (masked LMs:
        of wordpieces 1..N-1 themselves). Windows default to the models' context.
    compare_stacked(...)  the same on params laid out by seed_params(params_list, mesh) (a tuple of
        the S pytrees on CPU) or stack_params(params_list) (a leading seed axis).
    Suite, StudyConfig, run_study(config) -> Path     the whole study (`seedkl run`).
    analyze(pairs, meta, seed_metrics=None, *, out, sizes=None, n_boot=1000, compat="none",
            phase_steps=None, surprisal_seed=None) -> Path
        the analysis and report from per-pair KL tables computed anywhere (`seedkl analyze`;
        schema in docs/analyze.md).
    demo(...)                                         `seedkl demo`.

Names resolve lazily so `import seedkl_jax.api` stays cheap (no jax import until used).
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Model": "seedkl_jax.convert.loader",
    "load": "seedkl_jax.convert.loader",
    "Tokenizer": "seedkl_jax.data.tokenizer",
    "load_tokenizer": "seedkl_jax.data.tokenizer",
    "stack_params": "seedkl_jax.kernels.compare",
    "seed_params": "seedkl_jax.kernels.compare",
    "compare": "seedkl_jax.kernels.compare",
    "compare_stacked": "seedkl_jax.kernels.compare",
    "Suite": "seedkl_jax.study.suite",
    "StudyConfig": "seedkl_jax.study.run",
    "run_study": "seedkl_jax.study.run",
    "analyze": "seedkl_jax.report.analyze",
    "DemoConfig": "seedkl_jax.demo",
    "demo": "seedkl_jax.demo",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'seedkl_jax.api' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__():
    return __all__
