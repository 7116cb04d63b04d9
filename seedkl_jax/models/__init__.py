"""Pure GPT-NeoX forward (see gpt_neox.py for the params layout and axis names)."""
from seedkl_jax.models.gpt_neox import NeoXConfig, Params, hidden_states, init_params, logits

__all__ = ["NeoXConfig", "Params", "hidden_states", "init_params", "logits"]
