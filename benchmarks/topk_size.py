"""Size of topk.parquet at the paper's scale: 4,662 tokens x 5 sizes x 20 steps x 5 seeds x top-5.

    python benchmarks/topk_size.py [--out /tmp/topk.parquet]

Builds one synthetic group per (size, step) with the kernel's top-k arrays (topk_ids [P,S,K] int32,
topk_prob [P,S,K] float32, descending) and writes them exactly as a run does (analysis/topk.topk_rows,
polars' default parquet writer). Ids are Zipf-distributed over Pythia's 50,277 real ids and drawn
independently per seed, probabilities are full-precision float32: real seeds share most of their top-k
ids, so a real file compresses better and this is an upper bound (docs/outputs.md quotes the result).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import polars as pl

from seedkl_jax.analysis.aggregate import GroupResult
from seedkl_jax.analysis.topk import topk_rows

P, S, K, V = 4662, 5, 5, 50277
SIZES = ("14m", "31m", "70m", "160m", "410m")
STEPS = (0,) + tuple(2 ** i for i in range(10)) + tuple(1000 * i for i in (2, 4, 8, 16, 32, 64, 100, 128, 143))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(tempfile.mkdtemp(), "topk.parquet"))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    frames = []
    for size in SIZES:
        for step in STEPS:
            ids = ((rng.zipf(1.2, (P, S, K)) - 1) % V).astype(np.int32)
            prob = np.sort(rng.dirichlet(np.full(K + 1, 0.5), (P, S))[..., :K], -1)[..., ::-1].astype(np.float32)
            arrays = {"kl": np.zeros((P, S, S), np.float32), "topk_ids": ids, "topk_prob": prob}
            frames.append(topk_rows(GroupResult(size, step, [1, 3, 5, 7, 9], arrays)))
    df = pl.concat(frames)
    t0 = time.perf_counter()
    df.write_parquet(args.out)
    dt = time.perf_counter() - t0
    print(f"{len(SIZES)} sizes x {len(STEPS)} steps x {S} seeds x {P:,} tokens x top-{K}: {df.height:,} rows; "
          f"{df.estimated_size() / 2**20:.0f} MiB in memory; {args.out}: {os.path.getsize(args.out) / 2**20:.1f} MiB "
          f"on disk, written in {dt:.1f} s")


if __name__ == "__main__":
    main()
