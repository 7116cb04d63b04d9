"""seedkl_jax: how far apart are language models trained under different random seeds?

Public API lives in `seedkl_jax.api` (load, compare, run_study, demo); the CLI `seedkl` is a thin
layer over it.
"""
__version__ = "0.1.0"
