"""analysis.phases: known boundaries recovered on synthetic curves; missing phases reported as such."""
import json

import numpy as np
import polars as pl
import pytest

from seedkl_jax.analysis.aggregate import GroupResult, summarize
from seedkl_jax.analysis.phases import detect_phases, log_step_axis, phases_from_summary
from seedkl_jax.errors import SeedKLError

LOG2_GRID = np.array([0] + [2 ** k for k in range(18)])
PAPER_GRID = np.array([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 4000, 8000, 16000, 32000,
                       64000, 128000, 143000])


def four_phase(steps, b1, b2, b3, rise=1.0, drop=2.0, recover=0.15):
    """E[conv] that is flat to b1, rises to b2, falls to b3, then changes by `recover` per log2 step."""
    x = log_step_axis(steps)
    l1, l2, l3 = np.log2([b1, b2, b3])
    y = np.where(x < l1, 0.0, np.minimum(x - l1, l2 - l1) * rise / (l2 - l1))
    y = y - np.clip(x - l2, 0, l3 - l2) * drop / (l3 - l2)
    return y + np.maximum(x - l3, 0) * recover


def _within_one_octave(found, expected):
    return found is not None and abs(np.log2(found / expected)) <= 1.0 + 1e-9


@pytest.mark.parametrize("bounds", [(16, 256, 2048), (8, 128, 4096), (32, 512, 2048)])
@pytest.mark.parametrize("noise_seed", [0, 1, 2])
def test_four_phases_recovered_with_noise(bounds, noise_seed):
    y = four_phase(LOG2_GRID, *bounds) + 0.03 * np.random.default_rng(noise_seed).normal(size=len(LOG2_GRID))
    r = detect_phases(LOG2_GRID, y)
    assert r["status"] == "four_phases" and r["reconvergence"]
    b = r["boundaries"]
    for key, exp in zip(("convergence_start", "divergence_start", "reconvergence_start"), bounds):
        assert _within_one_octave(b[key], exp), (key, b[key], exp)
    assert [p["name"] for p in r["phases"]] == ["uniform", "convergence", "divergence", "reconvergence"]
    assert r["phases"][0]["present"]                                 # flat start = near-uniform
    json.dumps(r)                                                     # phases.json must serialise


def test_paper_grid_exact_without_noise():
    r = detect_phases(PAPER_GRID, four_phase(PAPER_GRID, 16, 256, 2000))
    assert r["status"] == "four_phases"
    assert r["boundaries"] == {"convergence_start": 16, "divergence_start": 256, "reconvergence_start": 2000}
    assert r["paper_boundaries"] == {"convergence_start": 16, "divergence_start": 256, "reconvergence_start": 2000}
    assert all(abs(v) < 1e-9 for v in r["boundary_log2_offset"].values())
    np.testing.assert_allclose(r["e_conv_fit"], four_phase(PAPER_GRID, 16, 256, 2000), atol=1e-6)


@pytest.mark.parametrize("tail", [0.0, -0.05])
@pytest.mark.parametrize("noise", [0.0, 0.03])
def test_never_recovering_curve(tail, noise):
    y = four_phase(LOG2_GRID, 16, 256, 2048, recover=tail) + noise * np.random.default_rng(3).normal(size=len(LOG2_GRID))
    r = detect_phases(LOG2_GRID, y)
    assert r["status"] == "no_reconvergence" and not r["reconvergence"]
    assert r["boundaries"]["reconvergence_start"] is None
    assert _within_one_octave(r["boundaries"]["convergence_start"], 16)
    assert _within_one_octave(r["boundaries"]["divergence_start"], 256)
    assert "no reconvergence" in r["message"]


def test_same_result_in_any_order_and_with_nan():
    y = four_phase(PAPER_GRID, 16, 256, 2000) + 0.02 * np.random.default_rng(4).normal(size=len(PAPER_GRID))
    perm = np.random.default_rng(5).permutation(len(PAPER_GRID))
    a, b = detect_phases(PAPER_GRID, y), detect_phases(PAPER_GRID[perm], y[perm])
    assert a["boundaries"] == b["boundaries"] and a["status"] == b["status"]
    y2 = y.copy()
    y2[3] = np.nan                                                    # a failed group: dropped, not fatal
    c = detect_phases(PAPER_GRID, y2)
    assert c["status"] == "four_phases" and c["e_conv_fit"][3] is None and c["n_steps"] == len(PAPER_GRID) - 1


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_too_short(n):
    r = detect_phases(LOG2_GRID[:n], np.arange(n, dtype=float))
    assert r["status"] == "too_short" and "needs at least" in r["message"]
    assert all(v is None for v in r["boundaries"].values())
    json.dumps(r)


def test_other_shapes():
    assert detect_phases(LOG2_GRID, np.zeros(len(LOG2_GRID)))["status"] == "no_phases"
    rising = np.where(LOG2_GRID >= 32, np.log2(np.maximum(LOG2_GRID, 1)) - 5, 0.0)
    assert detect_phases(LOG2_GRID, rising)["status"] == "no_divergence"
    noise = np.random.default_rng(6).normal(size=len(LOG2_GRID))
    assert detect_phases(LOG2_GRID, noise)["status"] != "four_phases"


def test_wide_confidence_intervals_suppress_phases():
    y = four_phase(LOG2_GRID, 16, 256, 2048)
    assert detect_phases(LOG2_GRID, y, ci_low=y - 0.01, ci_high=y + 0.01)["status"] == "four_phases"
    assert detect_phases(LOG2_GRID, y, ci_low=y - 5, ci_high=y + 5)["status"] == "no_phases"


def test_log_step_axis_places_step_zero_one_octave_early():
    np.testing.assert_allclose(log_step_axis([0, 1, 2, 4, 1000]), [-1, 0, 1, 2, np.log2(1000)])
    np.testing.assert_allclose(log_step_axis([0, 8, 16]), [2, 3, 4])


def test_bad_inputs():
    with pytest.raises(SeedKLError):
        detect_phases([0, 1, 2], [1.0, 2.0])
    with pytest.raises(SeedKLError):
        detect_phases([0, 1, 1, 2, 4, 8], np.zeros(6))


def test_phases_from_summary_end_to_end():
    """KL arrays whose level follows a four-phase curve -> summarize -> phases per size."""
    rng = np.random.default_rng(7)
    P, S = 40, 3
    meta = pl.DataFrame({"position": np.arange(1, P + 1), "token_id": np.arange(P), "doc_id": np.arange(P) // 8})
    groups = []
    level = 0.05 * np.exp(-0.5 * four_phase(PAPER_GRID, 16, 256, 2000))   # KL falls when E[conv] rises
    for st, lv in zip(PAPER_GRID, level):
        kl = lv * rng.lognormal(0, 0.3, (P, S, S))
        kl[:, np.arange(S), np.arange(S)] = 0
        groups.append(GroupResult("70m", int(st), [1, 2, 3], {"kl": kl}))
    ph = phases_from_summary(summarize(groups, meta, n_boot=200))
    assert list(ph) == ["70m"]
    r = ph["70m"]
    assert r["status"] == "four_phases"
    for key, exp in zip(("convergence_start", "divergence_start", "reconvergence_start"), (16, 256, 2000)):
        assert _within_one_octave(r["boundaries"][key], exp)
