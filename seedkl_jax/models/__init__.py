"""The model families (GPT-NeoX, GPT-2, BERT) as Flax Linen modules over shared blocks.

`FAMILIES` (model_type -> Family) is the registry; the family-agnostic functions are what the rest
of seedkl uses (see family.py).
"""
from seedkl_jax.models.bert import BertConfig
from seedkl_jax.models.family import (FAMILIES, Family, family_of, hidden_states, init_params, logits,
                                      unembedding)
from seedkl_jax.models.gpt2 import GPT2Config
from seedkl_jax.models.gpt_neox import NeoXConfig, Params

__all__ = ["BertConfig", "FAMILIES", "Family", "GPT2Config", "NeoXConfig", "Params", "family_of",
           "hidden_states", "init_params", "logits", "unembedding"]
