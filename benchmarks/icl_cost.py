"""What the ICL probe adds to a group: the main fused pass over the text vs the ICL score's rows, side by side.

    python benchmarks/icl_cost.py [--seeds=3] [--repeats=2]

Random pythia-14m-shaped checkpoints (transformers random init, written under --workdir once), the shared
Pile sample's token ids (../shared; a synthetic text of 10 documents of 600 tokens without it), the default
--icl_positions (100,450,501). Prints the best time of each and the ratio ICL / main pass. CPU unless
JAX_PLATFORMS says otherwise.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from absl import app, flags

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
import common  # noqa: E402

_SEEDS = flags.DEFINE_integer("seeds", 3, "S: seeds")
_REPEATS = flags.DEFINE_integer("repeats", 2, "timed repeats (best is reported)")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/seedkl-icl-cost", "where the random checkpoints are written")


def _ids():
    import numpy as np

    shared = common.shared_dir()
    path = None if shared is None else shared / "fixtures" / "pile-sample" / "input_ids.npy"
    if path is not None and path.is_file():
        return np.load(path).astype(np.int32), str(path)
    ids = np.random.default_rng(0).integers(1, 50277, 10 * 601 + 1).astype(np.int32)
    ids[::601] = 0  # 10 documents of 600 tokens between end-of-text tokens
    return ids, "synthetic: 10 documents of 600 tokens"


def main(argv):
    del argv
    import jax
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from seedkl_jax.analysis.icl import documents
    from seedkl_jax.convert.loader import load
    from seedkl_jax.kernels.compare import compare_stacked, seed_params
    from seedkl_jax.study import icl

    kw = dict(vocab_size=50304, hidden_size=128, num_hidden_layers=6, num_attention_heads=4,
              intermediate_size=512, rotary_pct=0.25, max_position_embeddings=2048)  # pythia-14m's shape
    models = []
    for s in range(_SEEDS.value):
        d = Path(_WORKDIR.value) / f"s{s}"
        if not (d / "config.json").exists():
            torch.manual_seed(s)
            GPTNeoXForCausalLM(GPTNeoXConfig(**kw)).save_pretrained(d)
        models.append(load(str(d), cache_dir=str(Path(_WORKDIR.value) / "cache")))
    cfg, params, V = models[0].config, seed_params([m.params for m in models]), 50277
    ids, source = _ids()
    positions = (100, 450, 501)
    docs = documents(ids, 0, positions)
    prep = icl.IclInputs("bench", positions, docs, 10)
    seeds = list(range(_SEEDS.value))
    main_pass = lambda: compare_stacked(params, cfg, ids, vocab_size=V, window=2048, overlap=1024)  # noqa: E731
    probe = lambda: icl.score(prep, params, cfg, vocab_size=V, seed_names=seeds)  # noqa: E731
    best = [float("inf")] * 2
    for rep in range(_REPEATS.value + 1):  # the first round compiles
        for i, run in enumerate((main_pass, probe)):
            t0 = time.perf_counter()
            jax.block_until_ready(run())
            if rep:
                best[i] = min(best[i], time.perf_counter() - t0)
    print(f"# icl_cost: S={_SEEDS.value}, text {source} ({len(ids):,} tokens, {len(docs.doc_id)} documents long "
          f"enough for {positions}), device {jax.default_backend()}, {os.cpu_count()} CPUs")
    print(f"main pass {best[0]:.2f} s; ICL probe {best[1]:.2f} s; ICL / main = {best[1] / best[0]:.2f}")


if __name__ == "__main__":
    app.run(main)
