"""analysis.lr: Pythia's schedule and the demo trainer's, checked against their definitions."""
import numpy as np
import pytest

from seedkl_jax.analysis.lr import PYTHIA, from_train_config
from seedkl_jax.study.suite import get_preset


def test_pythia_schedule():
    assert get_preset("polypythia").lr_schedule is PYTHIA
    lr = PYTHIA.at("14m", [0, 715, 1430, 143_000])
    np.testing.assert_allclose(lr, [0.0, 5e-4, 1e-3, 1e-4], rtol=1e-12, atol=1e-15)
    assert PYTHIA.at("160m", [1430])[0] == pytest.approx(6e-4) and PYTHIA.at("410m", [1430])[0] == pytest.approx(3e-4)
    mid = 1430 + (143_000 - 1430) / 2                                   # cosine half way: (1 + 0.1) / 2 of the peak
    assert PYTHIA.at("70m", [mid])[0] == pytest.approx(0.55e-3)
    assert PYTHIA.at("1b", [0]) is None


def test_demo_schedule_equals_the_trainers():
    from seedkl_jax.lab.trainer import TrainConfig, lr_schedule
    cfg = TrainConfig(steps=200, warmup=20, lr=2e-3, final_lr_frac=0.1)
    t = np.arange(0, 200)
    want = np.asarray([float(lr_schedule(cfg)(i)) for i in t])
    got = from_train_config(cfg, ["w32"]).at("w32", t)
    np.testing.assert_allclose(got, want, rtol=1e-5)
