"""1 device vs 8 emulated CPU devices: compare() must give the same numbers (≤ 1e-6) on a mesh.

Every run scores only the kept slots of later windows (12 windows, 11 of which keep 4 of 8 slots), so
this also holds that gather to the mesh's data-axis sharding. The opt-in outputs (top1_agree, js,
top-k ids and probabilities) are on: ids [P,S,K] shard and stitch like the per-seed arrays. On CPU every run uses the default
one-pass form: what CPU CI tests is what runs by default.

XLA reads `--xla_force_host_platform_device_count` once, when jax initialises, so each device count
runs in its own subprocess (this test process may already hold a 1-device jax).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import sys
import jax, numpy as np
from jax.sharding import Mesh
from seedkl_jax.config import KernelConfig
from seedkl_jax.kernels.compare import compare_stacked, stack_params
from seedkl_jax.kernels.reference import unigram_logprobs
from seedkl_jax.models.gpt_neox import NeoXConfig, init_params

cfg = NeoXConfig(vocab_size=1000, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                 max_position_embeddings=16)
params = [init_params(cfg, jax.random.PRNGKey(s)) for s in range(4)]
for p in params:
    p["embed_out"]["kernel"] = p["embed_out"]["kernel"] * 25.0  # logits of a few nats, KLs of order 0.1
stacked = stack_params(params)
rng = np.random.RandomState(0)
ids = rng.randint(0, 997, 50)                      # 12 windows of 8 tokens (overlap 4)
ref = unigram_logprobs(rng.poisson(1.0, 997), 997)
devices = np.array(jax.devices())
meshes = {"single": None}
if len(devices) == 8:
    meshes["data8"] = Mesh(devices, ("data",))
    meshes["data4_seed2"] = Mesh(devices.reshape(4, 2), ("data", "seed"))
out = {}
for name, mesh in meshes.items():
    res = compare_stacked(stacked, cfg, ids, vocab_size=997, reference_logprobs=ref, window=8, overlap=4,
                          kernel=KernelConfig(vocab_chunk=300, position_block=16), mesh=mesh,  # strided blocks
                          metrics=("kl", "top1", "js"), topk=3)
    out.update({f"{name}/{k}": v for k, v in res.items()})
np.savez(sys.argv[1], n_devices=len(devices), **out)
"""


def _run(n_devices: int, path: Path) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices}",
               JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(path) as f:
        return dict(f)


def test_one_vs_eight_devices(tmp_path):
    one = _run(1, tmp_path / "one.npz")
    eight = _run(8, tmp_path / "eight.npz")
    assert int(one["n_devices"]) == 1 and int(eight["n_devices"]) == 8
    keys = [k.split("/", 1)[1] for k in one if k.startswith("single/")]
    assert set(keys) == {"kl", "surprisal", "entropy", "kl_uniform", "kl_unigram", "top1_agree", "js", "topk_ids",
                         "topk_prob"}
    assert one["single/topk_ids"].shape == (49, 4, 3) and one["single/topk_ids"].dtype == np.int32
    assert one["single/kl"].shape == (49, 4, 4) and one["single/kl"].max() > 0.01
    for variant in ("single", "data8", "data4_seed2"):
        for k in keys:
            a, b = one[f"single/{k}"], eight[f"{variant}/{k}"]
            assert a.shape == b.shape and a.dtype == b.dtype and np.all(np.isfinite(b))
            assert np.abs(a - b).max() <= 1e-6 * max(1.0, np.abs(a).max()), (variant, k, np.abs(a - b).max())
