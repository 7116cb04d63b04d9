"""The forward pass alone, JAX vs torch, side by side: where (a) loses to (b) on a CPU.

    python benchmarks/forward_vs_torch.py [--sizes=14m,31m] [--seeds=5] [--tokens=2048]

Per Pythia shape, on one window of T random ids and S random-init seeds (best of --repeats warm calls):
  jax forward   the S seeds' hidden states [S,T,D], vmapped and jitted as compare_stacked runs them
  jax kernel    the fused divergence kernel on those hidden states (its default cache_logits / Pb)
  torch         S transformers forwards (GPTNeoXForCausalLM, its default attention) + log_softmax
                over the full vocab: what the reference pipeline computes before saving to disk
Prints the times and the ratio (jax forward + kernel) / torch. Nothing here asserts a time.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from absl import app, flags

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
import common  # noqa: E402

_SIZES = flags.DEFINE_list("sizes", ["14m", "31m"], "Pythia shapes (common.SHAPES)")
_SEEDS = flags.DEFINE_integer("seeds", 5, "S")
_TOKENS = flags.DEFINE_integer("tokens", 2048, "T: window length")
_REPEATS = flags.DEFINE_integer("repeats", 2, "timed warm calls (best is reported)")


def _best(fn, repeats: int) -> float:
    fn()  # compile / warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv):
    del argv
    import jax
    import numpy as np
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from seedkl_jax.kernels.compare import stack_params
    from seedkl_jax.kernels.divergence import divergence_jit
    from seedkl_jax.models import init_params
    from seedkl_jax.models.gpt_neox import hidden_states

    S, T, R = _SEEDS.value, _TOKENS.value, _REPEATS.value
    print(f"# forward_vs_torch: S={S}, T={T}, jax {jax.__version__} on {jax.devices()[0].device_kind}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"{'size':<6}{'jax forward s':>15}{'jax kernel s':>14}{'torch fwd+log_softmax s':>25}{'(jax fwd+kernel)/torch':>25}")
    torch.set_grad_enabled(False)
    for size in _SIZES.value:
        cfg = common.neox_config(size)
        stacked = stack_params([jax.tree.map(np.asarray, init_params(cfg, jax.random.key(s))) for s in range(S)])
        ids = np.random.default_rng(0).integers(0, common.REAL_VOCAB, (1, T)).astype(np.int32)
        fwd = jax.jit(lambda p, i, cfg=cfg: jax.vmap(lambda q: hidden_states(q, cfg, i))(p))
        h = fwd(stacked, ids)
        t_fwd = _best(lambda: fwd(stacked, ids).block_until_ready(), R)
        kernel = lambda: jax.block_until_ready(divergence_jit(h, stacked["embed_out"]["kernel"], ids,
                                                              vocab_size=common.REAL_VOCAB))
        t_kernel = _best(kernel, R)
        hf = GPTNeoXConfig(**{k: v for k, v in cfg.to_hf_dict().items() if k != "architectures"})
        models = [GPTNeoXForCausalLM(hf).eval() for _ in range(S)]
        x = torch.from_numpy(ids.astype(np.int64))
        t_torch = _best(lambda: [torch.log_softmax(m(input_ids=x).logits[0].float(), -1) for m in models], R)
        print(f"{size:<6}{t_fwd:>15.2f}{t_kernel:>14.2f}{t_torch:>25.2f}{(t_fwd + t_kernel) / t_torch:>24.2f}x",
              flush=True)


if __name__ == "__main__":
    app.run(main)
