"""Roofline accounting for the compare step: FLOPs from the config, achieved FLOP/s, fraction of a
matmul peak measured on the same machine in the same run (MFU-style).

    python benchmarks/roofline.py [--sizes=14m,70m] [--seeds=5] [--tokens=2048] [--out=FILE]

Counted FLOPs per token per seed (multiply-add = 2 FLOPs; T = context, i.e. the window; D width,
F MLP width, L layers, V padded vocab rows, S seeds):
    layers      L * (2*D*3D  [qkv] + 2*D*D [attn out] + 2*2*D*F [mlp] + 2*2*T*D [q.k and a.v])
    unembed     2*D*V
    kl pass     per token, every ordered pair (i, j) of the S seeds costs k FLOPs per vocab id, so
                S^2*k*V per token = S*k*V per token per seed, with k = 6 for the
                "pair" form (p_i*(lp_i - lp_j) - p_i + p_j, clamp, accumulate), k = 2 for the
                "einsum" form (sum_v p_i(v) lp_j(v) as a matmul) and k = 3 for "onepass"
                (e_i*(z_i - z_j), accumulate); the backend's default form is counted
"model" FLOPs are those; "executed" adds a second 2*D*V where the fused kernel recomputes each logit
chunk in its second pass (two-pass forms with `cache_logits=False`) instead of keeping the block's
[S,Pb,V] logits from the first; the one-pass form (CPU default) runs one unembedding.
MFU = model FLOP/s / peak; "of peak" = executed FLOP/s / peak.
Attention is counted at the full T x T of a dense masked kernel; the model scores each 128-query
block against its causal key prefix only (models/gpt_neox.py), about (n+1)/2n of that for n blocks.
Not counted: elementwise work (layer norms, gelu, rotary, softmax; the log-softmax's exps/logs,
~2V transcendentals per seed per token) — on CPU those are not free, so these fractions are a lower
bound on how busy the matmul units are.

The peak is the best of a few large `jnp.dot`s at Precision.HIGHEST in float32 (the compare step's
precision) and, on GPU/TPU, also bfloat16 (the chip's headline tensor-core rate). The compare step
is timed on its second call (the first compiles), with random Pythia-shaped weights (real vocab
50,304) and random ids: FLOPs do not depend on values.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from absl import app, flags, logging

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
import common  # noqa: E402

_SIZES = flags.DEFINE_list("sizes", ["14m", "70m"], "Pythia shapes to account for (see common.SHAPES)")
_SEEDS = flags.DEFINE_integer("seeds", 5, "S: seeds compared in one call")
_TOKENS = flags.DEFINE_integer("tokens", 2048, "text length N (= one window at the default 2048)")
_VOCAB_CHUNK = flags.DEFINE_integer("vocab_chunk", None, "kernel vocab chunk (default: kernel's)")
_PEAK_N = flags.DEFINE_integer("peak_n", None, "matmul size for the peak (default 2048 CPU, 8192 GPU/TPU)")
_OUT = flags.DEFINE_string("out", None, "also append the table and a JSON line to this file")


def _best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(dtype_name: str, n: int, repeats: int = 5) -> float:
    """Best FLOP/s of an n x n x n jnp.dot at Precision.HIGHEST (after a compiling call)."""
    import jax
    import jax.numpy as jnp

    dtype = jnp.dtype(dtype_name)
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(kb, (n, n), jnp.float32).astype(dtype)
    dot = jax.jit(lambda x, y: jnp.dot(x, y, precision=jax.lax.Precision.HIGHEST))
    dot(a, b).block_until_ready()
    return 2 * n ** 3 / _best_time(lambda: dot(a, b).block_until_ready(), repeats)


def time_compare(cfg, seeds: int, tokens: int, vocab_chunk: int | None) -> float:
    """Seconds for one warm compare_stacked call on S random seeds and a tokens-long random text."""
    import jax
    import numpy as np

    from seedkl_jax.config import KernelConfig
    from seedkl_jax.kernels.compare import compare_stacked, stack_params
    from seedkl_jax.models import init_params

    params = [jax.tree.map(np.asarray, init_params(cfg, jax.random.key(s))) for s in range(seeds)]
    stacked = stack_params(params)
    ids = np.random.default_rng(0).integers(0, common.REAL_VOCAB, tokens).astype(np.int32)
    run = lambda: compare_stacked(stacked, cfg, ids, vocab_size=common.REAL_VOCAB, window=2048,
                                  overlap=1024, kernel=KernelConfig(vocab_chunk=vocab_chunk))  # returns numpy: synced
    run()
    return _best_time(run, 1)


def main(argv):
    logging.set_verbosity(logging.WARNING)  # orbax logs every save/restore at INFO
    del argv
    import jax

    backend = jax.default_backend()
    device = jax.devices()[0].device_kind
    n = _PEAK_N.value or (2048 if backend == "cpu" else 8192)
    peaks = {"float32": matmul_peak("float32", n)}
    if backend != "cpu":
        peaks["bfloat16"] = matmul_peak("bfloat16", n)
    from seedkl_jax.kernels.defaults import ONEPASS_FORMS, default_cache_logits, default_form

    S, N = _SEEDS.value, _TOKENS.value
    form = default_form()
    cache = form not in ONEPASS_FORMS and default_cache_logits()
    rows, records = [], []
    for size in _SIZES.value:
        cfg = common.neox_config(size)
        f = common.flops_per_token_per_seed(cfg, min(N, 2048), S, form, cache)
        secs = time_compare(cfg, S, N, _VOCAB_CHUNK.value)
        model, executed = (f[k] * (N - 1) * S / secs for k in ("model", "executed"))
        records.append({"size": size, "backend": backend, "device": device, "seeds": S, "tokens": N,
                        "kl_form": form, "cache_logits": cache,
                        **{f"flops_{k}": v for k, v in f.items()},
                        "seconds": secs, "model_flops_per_s": model, "executed_flops_per_s": executed,
                        **{f"peak_{k}": v for k, v in peaks.items()}})
        rows.append({"size": size, "MFLOP/tok/seed: layers": f"{f['layers'] / 1e6:.1f}",
                     "unembed": f"{f['unembed'] / 1e6:.1f}", f"kl ({form})": f"{f['kl'] / 1e6:.2f}",
                     "model": f"{f['model'] / 1e6:.1f}", "executed": f"{f['executed'] / 1e6:.1f}",
                     "S x P": f"{S} x {N - 1}", "time s": f"{secs:.2f}",
                     "executed GFLOP/s": f"{executed / 1e9:.1f}",
                     **{f"{k} peak: exec": f"{100 * executed / v:.1f}%" for k, v in peaks.items()},
                     **{f"{k} MFU": f"{100 * model / v:.1f}%" for k, v in peaks.items()}})
    head = (f"roofline on {backend} ({device}, {jax.device_count()} device(s)); matmul peak at n={n}: "
            + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in peaks.items()))
    text = head + "\n" + common.table(rows)
    print(text)
    if _OUT.value:
        with open(_OUT.value, "a") as fh:
            fh.write(text + "\n" + json.dumps(records) + "\n")


if __name__ == "__main__":
    app.run(main)
