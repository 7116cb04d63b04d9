"""`seedkl convert`: convert one HF checkpoint (GPT-NeoX, GPT-2, BERT) into the params cache (ahead of a study).

    seedkl convert --model=EleutherAI/pythia-70m-seed3 --revision=step1000
    seedkl convert --model=/data/suite/70m/seed3/step1000 --cache_dir=/scratch/seedkl

Useful to fill the cache while online (or on a login node) before an offline run; a study then
restores every checkpoint from the cache without touching the hub.
"""
from __future__ import annotations

from absl import flags

from seedkl_jax import api
from seedkl_jax.errors import SeedKLError

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Local HF checkpoint directory, or hub id (id@revision accepted).")
flags.DEFINE_string("revision", None, "Hub revision (branch, tag or commit), e.g. step1000.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Dtype of the cached params.")
flags.DEFINE_string("cache_dir", None, "Cache root (default $SEEDKL_CACHE or ~/.cache/seedkl).")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise SeedKLError(f"unexpected arguments {argv[1:]}; pass everything as --flags")
    if not FLAGS.model:
        raise SeedKLError("--model: missing; pass a checkpoint directory or a hub id")
    model = api.load(FLAGS.model, FLAGS.revision, dtype=FLAGS.dtype, cache_dir=FLAGS.cache_dir,
                     progress=True)
    what = "already cached" if model.source == "cache" else "converted"
    rev = f"@{model.revision}" if model.revision else ""
    print(f"{model.name}{rev}: {what} ({model.num_params():,} params, {model.dtype}); "
          f"cache entry: {model.cache_entry or 'none (the cache is not writable)'}")
