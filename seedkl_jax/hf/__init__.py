"""The one home of Hugging Face knowledge: the hub, a checkpoint's files, each family's names and configs.

    hub.py          hub access: id@revision, snapshot download, revision listing, offline/HF-cache lookups
    checkpoint.py   a checkpoint folder's files: config.json (read + validated once), weight files
                    (single/sharded), safetensors headers, tokenizer file names (VOCAB/TOKENIZER_FILES)
    tokenizer.py    the tokenizer files read into a `Tokenizer` (real vocab size, special ids)
    families.py     per family: config.json dict <-> our config, HF tensor names <-> params leaves
    mapping.py      the engine that applies a family's table (state dict <-> params pytree)
    checks.py       cheap per-checkpoint checks from config.json and headers (the study's pre-run checks)

Layer: above models/ (it builds their configs), below convert/ (the loader), data/ and study/. Modules
are imported on use; `huggingface_hub` and `transformers` only inside the functions that need them.
"""
