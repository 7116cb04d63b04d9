"""analysis.phases: known boundaries recovered on synthetic curves; missing phases reported as such."""
import json

import numpy as np
import polars as pl
import pytest

from seedkl_jax.analysis.aggregate import GroupResult, summarize
from seedkl_jax.analysis import phases as ph_lib
from seedkl_jax.analysis.phases import log_step_axis, phases_from_summary
from seedkl_jax.errors import SeedKLError

LOG2_GRID = np.array([0] + [2 ** k for k in range(18)])
PAPER_GRID = np.array([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 4000, 8000, 16000, 32000,
                       64000, 128000, 143000])


def detect_phases(*args, **kw) -> dict:
    r = ph_lib.detect_phases(*args, **kw)
    assert isinstance(r, ph_lib.PhaseResult)
    return r.to_dict()


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


# the demo's 78k curve before issue 10 (read off docs/demo_econv_sizes.png and the README table): the
# old fit claimed a convergence rise of +0.0025 between steps 45 and 64 that the measurements do not show
DEMO_STEPS = np.array([0, 1, 2, 4, 8, 11, 16, 23, 32, 45, 64, 91, 128, 181, 256, 362, 512, 724, 1024])
DEMO_78K = np.array([-0.0124, -0.0124, -0.0124, -0.0124, -0.01235, -0.0123, -0.0123, -0.0123, -0.0122,
                     -0.01218, -0.01223, -0.016, -0.032, -0.047, -0.047, -0.045, -0.048, -0.032, -0.0193])


def test_measured_rise_inside_the_cis_is_no_convergence():
    r = detect_phases(DEMO_STEPS, DEMO_78K, ci_low=DEMO_78K - 0.001, ci_high=DEMO_78K + 0.001)
    assert r["status"] == "no_convergence", r["message"]
    assert r["boundaries"] == {"convergence_start": None, "divergence_start": 45, "reconvergence_start": 512}
    assert r["changes"]["convergence"]["counts"] is False
    assert abs(r["changes"]["convergence"]["delta_e_conv"]) < 0.001          # measured, not fitted
    # the same shape with a real convergence rise (+0.01, clear of the CIs) is four phases
    y = DEMO_78K.copy()
    y[8:11] += np.array([0.004, 0.008, 0.01])
    r2 = detect_phases(DEMO_STEPS, y, ci_low=y - 0.001, ci_high=y + 0.001)
    assert r2["status"] == "four_phases", r2["message"]
    assert r2["boundaries"]["divergence_start"] == 64 and r2["boundaries"]["reconvergence_start"] == 512


def test_reconvergence_must_clear_its_ci():
    y = four_phase(LOG2_GRID, 16, 256, 2048, recover=0.15)
    rise = y[-1] - y.min()
    assert rise == pytest.approx(0.9)                                   # convergence 1.0, recovery 0.9
    ok = detect_phases(LOG2_GRID, y, ci_low=y - 0.4, ci_high=y + 0.4)
    assert ok["status"] == "four_phases"
    wide = detect_phases(LOG2_GRID, y, ci_low=y - 0.47, ci_high=y + 0.47)  # 2 x 0.47 > 0.9 but < 1.0
    assert wide["status"] == "no_reconvergence" and wide["boundaries"]["reconvergence_start"] is None
    assert wide["changes"]["reconvergence"]["delta_e_conv"] == pytest.approx(rise)


def test_bic_prefers_simpler_models_on_noise_and_four_segments_on_four_phases():
    c = ph_lib.prepare(LOG2_GRID, four_phase(LOG2_GRID, 16, 256, 2048)
                       + 0.01 * np.random.default_rng(3).normal(size=len(LOG2_GRID)))
    models = ph_lib.fit_models(c)
    assert min(models, key=lambda k: models[k]["bic"]) == 4
    line = ph_lib.prepare(LOG2_GRID, 0.1 * log_step_axis(LOG2_GRID)
                          + 0.05 * np.random.default_rng(4).normal(size=len(LOG2_GRID)))
    m2 = ph_lib.fit_models(line)
    assert min(m2, key=lambda k: m2[k]["bic"]) < 4


def test_paired_replicates_decide_where_marginal_cis_overlap():
    """A shared per-replicate shift (e.g. one seed's offset) widens every step's CI, but changes between
    steps are measured on the same draws: the paired difference sees them, the CI overlap rule cannot."""
    y = four_phase(LOG2_GRID, 16, 256, 2048)
    rng = np.random.default_rng(0)
    reps = y[None, :] + rng.normal(0, 2.0, (400, 1)) + rng.normal(0, 0.02, (400, len(y)))
    lo, hi = np.percentile(reps, [2.5, 97.5], axis=0)
    assert detect_phases(LOG2_GRID, y, ci_low=lo, ci_high=hi)["status"] == "no_phases"
    assert detect_phases(LOG2_GRID, y, ci_low=lo, ci_high=hi, replicates=reps)["status"] == "four_phases"
    # and replicates whose steps vary independently by as much do not count
    indep = y[None, :] + rng.normal(0, 2.0, (400, len(y)))
    assert detect_phases(LOG2_GRID, y, replicates=indep)["status"] == "no_phases"
