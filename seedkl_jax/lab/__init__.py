"""Training mini seed suites (the demo's lab): see trainer.py."""
from seedkl_jax.train.trainer import TrainConfig, TrainedSuite, train_suite

__all__ = ["TrainConfig", "TrainedSuite", "train_suite"]
