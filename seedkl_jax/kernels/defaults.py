"""The kernel's measured defaults per backend, and `resolve_kernel`, which applies them once.

One home for every choice the kernel makes when a `KernelConfig` field is None (vocab chunk C,
position block Pb, KL form, logits cache) and for the reasons behind them, so a new measurement
changes one file. The measurements themselves are in docs/performance.md (benchmarks/
kernel_vs_naive.py, forward_vs_torch.py print them). Nothing here compiles or builds anything.
"""
from __future__ import annotations

import dataclasses

import jax

from seedkl_jax.config import KernelConfig, KernelForm, KernelKind
from seedkl_jax.errors import SeedKLError

# Two-pass forms on CPU: C within 512..2048 runs alike (4096+ slower); Pb=256 beats smaller blocks
# (they re-read W more often) and larger ones (the [S,Pb,C] chunk falls out of cache). Working set
# at these defaults: tens of MB, whatever V.
DEFAULT_VOCAB_CHUNK = 2048
DEFAULT_POSITION_BLOCK = 256
# Pb with cached logits (the GPU default): larger blocks amortise the matmul better and memory is
# plentiful there; the buffer is S·Pb·V·4 bytes (1.03 GB at S=5, Pb=1024, V=50,304).
DEFAULT_POSITION_BLOCK_CACHED = 1024
# The one-pass forms: the matmul wants Pb ≥ 256 at D=512, the pair reduction small blocks and a
# chunk of ~1024 columns that stays in cache between its reads.
DEFAULT_POSITION_BLOCK_ONEPASS = 256
DEFAULT_VOCAB_CHUNK_ONEPASS = 1024
FORMS = tuple(f.value for f in KernelForm)  # the one list of forms lives in config.KernelForm
ONEPASS_FORMS = (KernelForm.ONEPASS.value,)  # one vocab pass: no logits cache, their own C and Pb


def default_blocks(form: str, cache: bool) -> tuple[int, int]:
    """(C, Pb): the vocab chunk and position block `divergence` uses for `form` (its logits cached or
    not) when vocab_chunk / position_block are None."""
    if form in ONEPASS_FORMS:
        return DEFAULT_VOCAB_CHUNK_ONEPASS, DEFAULT_POSITION_BLOCK_ONEPASS
    return DEFAULT_VOCAB_CHUNK, DEFAULT_POSITION_BLOCK_CACHED if cache else DEFAULT_POSITION_BLOCK


def default_form(backend: str | None = None) -> str:
    """What a None form means: "onepass" on CPU (one pass over the vocab, half the unembedding
    FLOPs of recomputing two-pass forms, and no logits cache to hold), "pair" elsewhere (the exact
    form; with cached logits it was the fastest measured on a GPU). Every form runs on any mesh."""
    return "onepass" if (backend or jax.default_backend()) == "cpu" else "pair"


def forms(backend: str | None = None) -> tuple[str, ...]:
    """The KL forms that run on this backend: all of them, everywhere (plain XLA)."""
    del backend
    return FORMS


def default_cache_logits(backend: str | None = None) -> bool:
    """What a None cache_logits means for the two-pass forms: cache each block's logits except on CPU.

    On CPU caching ran no faster than recomputing at the best Pb of either while multiplying the
    kernel's temporary memory ~8×; on a GPU it saved the second matmul (and memory is plentiful).
    Other accelerators (TPU) are assumed to behave like the GPU.
    """
    return (backend or jax.default_backend()) != "cpu"


def chunking(vocab_size: int, padded: int, vocab_chunk: int | None) -> tuple[int, int]:
    """(n chunks, chunk width) covering ids [0, vocab_size), balanced so the last chunk is not tiny."""
    C = DEFAULT_VOCAB_CHUNK if vocab_chunk is None else int(vocab_chunk)
    if C < 1:
        raise SeedKLError(f"vocab_chunk: {C} must be ≥ 1")
    n = -(-vocab_size // min(C, vocab_size))
    width = min(-(-vocab_size // n), padded)
    return n, width


def is_resolved(cfg: KernelConfig) -> bool:
    """Every field filled (what `resolve_kernel` returns)."""
    return all(getattr(cfg, f.name) is not None for f in dataclasses.fields(cfg))


def resolve_kernel(cfg: KernelConfig | None, mesh=None, n_seeds: int = 2, backend: str | None = None) -> KernelConfig:
    """The kernel configuration that runs: every None of `cfg` filled with the backend's measured
    choice, the combination checked, once. A resolved config resolves to itself (a fixed point), so
    the layers below take it as it is and re-derive nothing.

    mesh: the `jax.sharding.Mesh` the kernel runs on (None: one device; every form runs on any mesh
    today, the argument is there so a choice that depends on it has one place); n_seeds: S (≥ 2);
    backend: JAX's backend name (default: the default backend's).
    """
    cfg = KernelConfig() if cfg is None else cfg
    if not isinstance(cfg, KernelConfig):
        raise SeedKLError(f"kernel: {cfg!r} is not a KernelConfig; pass seedkl_jax.config.KernelConfig(...)")
    backend = backend or jax.default_backend()
    if n_seeds < 2:
        raise SeedKLError(f"models: got {n_seeds} seed(s); KL between seeds needs ≥ 2 checkpoints")
    form = KernelForm(cfg.form or default_form(backend))  # a KernelConfig holds only valid forms
    onepass = form.value in ONEPASS_FORMS
    cache = False if onepass else (default_cache_logits(backend) if cfg.cache_logits is None else cfg.cache_logits)
    if onepass and cfg.cache_logits:
        raise SeedKLError(f"cache_logits: the one-pass form {form.value!r} has no second pass to cache logits "
                          "for; leave cache_logits unset or pick a two-pass form (pair, einsum)")
    chunk, block = default_blocks(form.value, cache)
    return KernelConfig(kernel=KernelKind(cfg.kernel), form=form,
                        vocab_chunk=chunk if cfg.vocab_chunk is None else int(cfg.vocab_chunk),
                        position_block=block if cfg.position_block is None else int(cfg.position_block),
                        cache_logits=bool(cache))
