"""What the params-cache checksums cost: store and restore of a Pythia-sized params tree, with and without.

    python benchmarks/cache_checksums.py              # 410m: 24 layers, D=1024, V=50,304 (~1.6 GB float32)
    python benchmarks/cache_checksums.py --layers=6 --width=512   # smaller, for a quick look

Random float32 arrays of the model's shapes (no download, no conversion), laid out like our NeoX params.
Times (best of --repeats, page cache warm, so disk speed is mostly out of it):
    store   orbax save + checksums.write (crc32 of the written files, blake2b of every array)
    restore orbax restore alone, and cache.restore (files checked before, arrays after)
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seedkl_jax.convert import cache, checksums  # noqa: E402


def params_tree(layers: int, width: int, vocab: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    r = lambda *shape: rng.standard_normal(shape, dtype=np.float32)  # noqa: E731
    ffn = 4 * width
    layer = lambda: {"input_layernorm": {"scale": r(width), "bias": r(width)},  # noqa: E731
                     "post_attention_layernorm": {"scale": r(width), "bias": r(width)},
                     "attention": {"query_key_value": {"kernel": r(width, 3 * width), "bias": r(3 * width)},
                                   "dense": {"kernel": r(width, width), "bias": r(width)}},
                     "mlp": {"dense_h_to_4h": {"kernel": r(width, ffn), "bias": r(ffn)},
                             "dense_4h_to_h": {"kernel": r(ffn, width), "bias": r(width)}}}
    return {"embed_in": {"embedding": r(vocab, width)}, "layers": {str(i): layer() for i in range(layers)},
            "final_layer_norm": {"scale": r(width), "bias": r(width)}, "embed_out": {"kernel": r(width, vocab)}}


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=50304)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    a = ap.parse_args()
    params = params_tree(a.layers, a.width, a.vocab)
    n = sum(x.size for x in __import__("jax").tree.leaves(params))
    print(f"params: {n / 1e6:,.1f} M float32 ({n * 4 / 2**30:.2f} GiB), layers {a.layers}, D {a.width}, V {a.vocab}")
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        root = Path(tmp)
        entry = cache.entry_dir(root, "bench", None, "float32", None)
        stored = cache.store(entry, params, {"model_type": "gpt_neox"}, {"model": "bench"})
        assert stored == entry and cache.check(entry) is None
        save_dir = root / "plain"

        def save_plain():
            import shutil
            shutil.rmtree(save_dir, ignore_errors=True)
            cache._checkpointer().save(save_dir, params)

        t_save = best(save_plain, a.repeats)
        t_write = best(lambda: checksums.write(save_dir, params), a.repeats)
        t_files = best(lambda: checksums.file_sums(entry), a.repeats)
        t_arrays = best(lambda: checksums.array_digests(params), a.repeats)
        t_plain = best(lambda: cache._checkpointer().restore(entry / "params"), a.repeats)
        t_checked = best(lambda: cache.restore(entry), a.repeats)
    print(f"store:   orbax save {t_save:.2f} s; + checksums {t_write:.2f} s "
          f"(files crc32 {t_files:.2f} s, arrays blake2b {t_arrays:.2f} s) = +{100 * t_write / t_save:.0f}%")
    print(f"restore: orbax alone {t_plain:.2f} s; verified (cache.restore) {t_checked:.2f} s "
          f"= +{t_checked - t_plain:.2f} s (+{100 * (t_checked - t_plain) / t_plain:.0f}%)")


if __name__ == "__main__":
    main()
