"""The kernel's measured defaults per backend: vocab chunk C, position block Pb, KL form, logits cache.

One home for every choice `divergence(...=None)` makes and for the measurements behind it
(benchmarks/kernel_vs_naive.py, forward_vs_torch.py; README "Performance"), so a new measurement
changes one file.
"""
from __future__ import annotations

import jax

from seedkl_jax.errors import SeedKLError
from seedkl_jax.kernels import native

# Chosen with benchmarks/kernel_vs_naive.py on CPU (pythia-14m shape, S=5, T=2048; README
# "Performance"): C from 512 to 2048 ran within the noise (±5%), 4096+ slower; Pb=256 beat 64/128
# (smaller blocks re-read W more often) and 512+ (the [S,Pb,C] chunk falls out of cache). Working
# set at these defaults: ~35 MB, whatever V.
DEFAULT_VOCAB_CHUNK = 2048
DEFAULT_POSITION_BLOCK = 256
# Pb when the logits are cached (section 4 of the benchmark). On an H200 (pair form, T=2048) the
# cached kernel took 24.4 / 20.8 / 18.9 / 19.7 ms at Pb = 256 / 512 / 1024 / 2048, recompute at its
# default Pb=256 28.9 ms (best recompute, Pb=1024: 21.3 ms). The buffer is S·Pb·V·4 bytes: 1.03 GB
# at S=5, V=50,304 (compiled temp 1.07 GB). The cache is off by default on CPU; forcing it there,
# Pb 256 and 512 ran within noise of each other and of recompute at Pb=256 (3.9–4.1 s), so pass
# position_block=256 with it to keep the buffer at ~260 MB.
DEFAULT_POSITION_BLOCK_CACHED = 1024
# Pb and C of the one-pass forms (onepass and native), and onepass's pair sub-block. Scratch sweeps on CPU (S=5, T=2048, V=50,304,
# 2 cores, 2026-11-30): at D=128 Pb=256/C=1024/sub-block 32 took 1.34 s against 1.49 s without
# sub-blocks and 1.37–1.44 s at Pb=128 or C=2048; at D=512 3.95 s against 4.54 s without sub-blocks
# and 4.45 s at Pb=128 (the matmul wants Pb ≥ 256 at D=512, the pair reduction small blocks).
# For native (scratch sweep, same shape, interleaved): Pb/C 256/1024 0.95 s, 512/1024 0.93 s,
# 512/2048 0.97 s, 256/4096 1.04 s: the same defaults serve.
DEFAULT_POSITION_BLOCK_ONEPASS = 256
DEFAULT_VOCAB_CHUNK_ONEPASS = 1024
FORMS = ("pair", "einsum", "onepass", "native")
ONEPASS_FORMS = ("onepass", "native")  # one pass over the vocab: no logits cache, their own C and Pb


def default_blocks(form: str, cache: bool) -> tuple[int, int]:
    """(C, Pb): the vocab chunk and position block `divergence` uses for `form` (its logits cached or
    not) when vocab_chunk / position_block are None."""
    if form in ONEPASS_FORMS:
        return DEFAULT_VOCAB_CHUNK_ONEPASS, DEFAULT_POSITION_BLOCK_ONEPASS
    return DEFAULT_VOCAB_CHUNK, DEFAULT_POSITION_BLOCK_CACHED if cache else DEFAULT_POSITION_BLOCK


def default_form(backend: str | None = None, sharded: bool = False) -> str:
    """What `divergence(form=None)` does: on CPU "native" (the one-pass form with its chunk update
    compiled, native.py) where it builds and the kernel runs on one device, else "onepass";
    "pair" (two passes) elsewhere. (`compare` passes sharded=True for a mesh of > 1 device: XLA
    cannot split the compiled update over devices and would gather every position onto each.)

    Measured (benchmarks/kernel_vs_naive.py section 3, pythia-14m shape, S=5, T=2048, V=50,304):
    - CPU (2 cores, commit ae1c2e1): native 0.97 s, onepass 1.38 s, einsum 3.28 s, pair 3.65 s
      (the chunked unembedding matmul alone takes ~0.75 s). KL error vs float64 (relative to
      max(1, KL)): native 2.0e-6 at init-like and 9.1e-7 at trained-like logits, onepass 2.1e-6
      and 1.1e-6, pair 4e-8 (pair is the exact option) and 1.1e-6; at extreme ones every form is
      alike (near-one-hot ×1000 logits: 4.3–4.8e-5, set by the float32 logits themselves; logits
      near −4096: 4.8e-6 native, 4.9e-6 onepass, 7e-6 pair).
    - GPU: onepass was not measured on one (no GPU lent to that work); pair with cached logits is
      the measured best there (`default_cache_logits`). benchmarks/gpu_check.sh times the forms a
      GPU runs (`forms`).
    """
    if (backend or jax.default_backend()) != "cpu":
        return "pair"
    return "native" if not sharded and native.available() else "onepass"


def forms(backend: str | None = None) -> tuple[str, ...]:
    """The KL forms that run on this backend: all of FORMS on CPU ("native" only where it builds),
    the XLA ones elsewhere ("native" is a CPU kernel)."""
    on_cpu = (backend or jax.default_backend()) == "cpu"
    return tuple(f for f in FORMS if f != "native" or (on_cpu and native.available()))


def default_cache_logits(backend: str | None = None) -> bool:
    """What `divergence(cache_logits=None)` does: cache each block's logits except on CPU.

    Measured (benchmarks/kernel_vs_naive.py section 4, pythia-14m shape, S=5, T=2048, V=50,304):
    - CPU (2 shared cores, two runs): cached/recompute time 0.82× at Pb=32, 0.88–0.89× at 64,
      0.95× at 128, 0.97–1.03× at 256, 1.04–1.05× at 512–1024 (noise ±5%); the fastest
      configuration of each ran equally fast (3.75–3.9 s), while the cache multiplies the kernel's
      temp memory 8× (35 → 280 MB at Pb=256): recompute. (CPU runs the one-pass form anyway.)
    - GPU (one H200): cached 0.80–0.90× of recompute at Pb ≥ 256 in both forms, and its best
      configuration (Pb=1024) took 0.65× the time of the recompute default (Pb=256). Memory is
      plentiful there, so cache.
    Other accelerators (TPU) were not measured; assumed to behave like the GPU (memory-rich, and a
    float32 HIGHEST matmul costs more there, so dropping one is worth more).
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
