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
    StudyConfig, run_study(config) -> Path          the whole study (`seedkl run`); the config is a
        tree of small frozen dataclasses (seedkl_jax/config.py), one field per `seedkl run` flag:

            from seedkl_jax.api import OutputConfig, StudyConfig, SuiteConfig, TextConfig, run_study
            run_study(StudyConfig(suite=SuiteConfig(sizes=("70m",), steps=(0, 143000)),
                                  text=TextConfig(text="eval.txt"), output=OutputConfig(out="results")))
            # the same by flag names; a resolved Suite (e.g. get_preset(...).override(...)) works too:
            run_study(StudyConfig.from_flat(suite=my_suite, text="eval.txt", out="results", pos="none"))

        SuiteConfig, TextConfig, ScoringConfig, KernelConfig, AnalysisConfig, OutputConfig: its parts;
        Suite: a resolved suite (study/suite.py). Bad values fail when the config is built.
    analyze(pairs, meta, seed_metrics=None, *, out, sizes=None, n_boot=1000, compat="none",
            phase_steps=None, surprisal_seed=None) -> Path
        the analysis and report from per-pair KL tables computed anywhere (`seedkl analyze`;
        schema in docs/analyze.md).
    demo(...)                                         `seedkl demo`.

`compare`, `compare_stacked`, `run_study` and `demo` turn on JAX's persistent compilation cache under
the seedkl cache root first (kernels.compare.use_compilation_cache: a process-wide setting, so the
entry points choose it, not the library), unless the process has set one. Names resolve lazily so
`import seedkl_jax.api` stays cheap (no jax import until used).
"""
from __future__ import annotations

import functools
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
    "StudyConfig": "seedkl_jax.config",
    "SuiteConfig": "seedkl_jax.config",
    "TextConfig": "seedkl_jax.config",
    "ScoringConfig": "seedkl_jax.config",
    "KernelConfig": "seedkl_jax.config",
    "AnalysisConfig": "seedkl_jax.config",
    "OutputConfig": "seedkl_jax.config",
    "run_study": "seedkl_jax.study.run",
    "analyze": "seedkl_jax.study.analyze",
    "DemoConfig": "seedkl_jax.lab.demo",
    "demo": "seedkl_jax.lab.demo",
}
__all__ = sorted(_EXPORTS)


_COMPILING = {"compare", "compare_stacked", "run_study", "demo"}  # these get the compilation cache


def _with_compilation_cache(fn):
    @functools.wraps(fn)
    def entry(*args, **kwargs):
        from seedkl_jax.kernels.compare import use_compilation_cache

        first = args[0] if args else kwargs.get("cfg")  # run_study's StudyConfig: its --cache_dir
        use_compilation_cache(getattr(getattr(first, "output", None), "cache_dir", None))
        return fn(*args, **kwargs)
    return entry


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'seedkl_jax.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    return _with_compilation_cache(value) if name in _COMPILING else value


def __dir__():
    return __all__
