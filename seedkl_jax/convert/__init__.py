"""HF GPT-NeoX checkpoints -> our params pytree.

    loader.py   load(model, revision) -> Model: resolve a local dir or hub id, read the weights
    cache.py    the orbax cache of converted params (atomic entries)
    mapping.py  HF state-dict names/layout <-> our pytree

Modules are imported on use (loader pulls in jax); the public entry point is seedkl_jax.api.load.
"""
