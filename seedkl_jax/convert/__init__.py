"""HF checkpoints (GPT-NeoX, GPT-2, BERT) -> our Flax params pytrees.

    loader.py   load(model, revision) -> Model: resolve a local dir or hub id, read the weights
    hub.py      hub and checkpoint-file knowledge: id@revision, weight/tokenizer files, timeouts, offline
    cache.py    the orbax cache of converted params (atomic entries)
    mapping.py  HF state-dict names/layout <-> our pytree, one table per family

Modules are imported on use (loader pulls in jax); the public entry point is seedkl_jax.api.load.
"""
