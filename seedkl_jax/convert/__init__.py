"""HF checkpoints (GPT-NeoX, GPT-2, BERT) -> our Flax params pytrees, cached.

    loader.py   load(model, revision) -> Model: resolve a local dir or hub id, read, convert, cache
    weights.py  the weight files read into numpy (safetensors, shards, pytorch_model.bin) and converted
    cache.py    the orbax cache of converted params (atomic entries, verified reads)
    checksums.py  what an entry's checksums.json records and how a read is checked

What a checkpoint's files, names and config keys mean is hf/'s (the one home of Hugging Face); convert/
sits above it and below kernels/ and data/, which it does not import.
Modules are imported on use (loader pulls in jax); the public entry point is seedkl_jax.api.load.
"""
