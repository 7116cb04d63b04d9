"""analysis.findings / claims / contrasts / phases: each verdict rule on constructed data, and a small
seeded calibration (statistical: false verdicts rare under nulls, effects found), never timed."""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from seedkl_jax.analysis import claims
from seedkl_jax.analysis import phases as ph
from seedkl_jax.analysis.aggregate import summarize
from seedkl_jax.analysis.bootstrap import holm, wald_p
from seedkl_jax.analysis.contrasts import CONTENT_PAPER_POS, FUNCTION_PAPER_POS, contrasts
from seedkl_jax.analysis.findings import FINDINGS, findings
from seedkl_jax.analysis.phases import PAPER_PHASE_STEPS, phases_from_summary
from seedkl_jax.data.annotate import PAPER_POS

STEPS = [0, 4, 16, 64, 256, 1000, 2000, 8000, 32000, 143000]


def _calibration():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "calibration.py"
    spec = importlib.util.spec_from_file_location("calibration", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["calibration"] = mod          # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


CAL = _calibration()


def _by_id(fs):
    return {f["id"]: f for f in fs}


# ----------------------------------------------------------------------------------------- table shape
def test_every_finding_has_its_stable_id_and_fields():
    groups, meta = CAL.simulate(CAL.CASES["effect"], 0, P=800)
    fs = CAL.run(groups, meta, n_boot=100)
    assert [f["id"] for f in fs] == list(FINDINGS) == ["phases", "size", "freq_more", "freq_faster", "freq_reliable",
                                                        "function_more", "function_faster", "function_reliable"]
    for f in fs:
        assert {"id", "finding", "verdict", "evidence"} <= set(f)
        assert f["verdict"] in ("reproduced", "not reproduced", "inconclusive")
    json.dumps(fs)
    by = _by_id(fs)
    assert by["size"]["verdict"] == "reproduced", by["size"]["evidence"]
    assert by["function_more"]["verdict"] != "not reproduced"
    assert "Penn groups" in by["function_more"]["evidence"]


def test_reversed_effects_are_not_reproduced_and_missing_inputs_inconclusive():
    groups, meta = CAL.simulate(CAL.Case(more=-0.4), 3, P=1600)       # rare tokens, content words converge more
    by = _by_id(CAL.run(groups, meta, n_boot=200))
    assert by["freq_more"]["verdict"] == by["function_more"]["verdict"] == "not reproduced"
    reps = {}
    s = summarize(groups, meta, n_boot=100, replicates=reps)
    bare = _by_id(findings(s, phases_from_summary(s, replicates=reps), replicates=reps))   # no contrasts
    for cid in ("freq_more", "freq_faster", "freq_reliable", "function_more", "function_faster", "function_reliable"):
        assert bare[cid]["verdict"] == "inconclusive" and "per-pair KLs" in bare[cid]["evidence"]
    assert bare["size"]["verdict"] != "reproduced" and bare["phases"]["verdict"] == "reproduced"


# ----------------------------------------------------------------------------------------- size
def _sized(fractions, seed=0, n_boot=200):
    case = CAL.Case(fractions=tuple(fractions))
    groups, meta = CAL.simulate(case, seed, P=800, sizes=("78k", "200k", "1m")[:len(fractions)])
    reps = {}
    s = summarize(groups, meta, n_boot=n_boot, replicates=reps)
    return s, reps


def test_smallest_size_recovering_80_percent_is_not_reproduced():
    """The demo's case: every size reconverges, the smallest 80%: the second half of the claim fails."""
    s, reps = _sized((0.8, 0.9, 0.95))
    f = _by_id(findings(s, phases_from_summary(s, replicates=reps), replicates=reps))["size"]
    small = claims.recovery(s, "78k", reps)
    assert small["fraction"] == pytest.approx(0.8, abs=0.12)
    assert f["verdict"] == "not reproduced", f["evidence"]
    assert "smallest (78k) vs 50%" in f["evidence"]


def test_size_reproduced_only_with_a_trend_and_a_non_recovering_smallest():
    s, reps = _sized((0.05, 0.5, 0.9))
    assert _by_id(findings(s, {}, replicates=reps))["size"]["verdict"] == "reproduced"
    s, reps = _sized((0.2, 0.2, 0.2), seed=1)                         # no trend: not reproduced nor reproduced
    assert _by_id(findings(s, {}, replicates=reps))["size"]["verdict"] == "inconclusive"
    s, _ = _sized((0.05, 0.5, 0.9))
    assert "no bootstrap replicates" in _by_id(findings(s, {}))["size"]["evidence"]


def test_trough_is_chosen_inside_each_replicate_and_recovery_can_be_negative():
    y = np.array([[0.0, 1.0, -1.0, -0.5, -2.0, -1.5],      # trough before the last step: recovery > 0 possible
                  [0.0, 1.0, -1.0, -1.2, -1.4, -2.0]])     # still falling at the end: negative recovery
    f, peak, trough = claims.recovered_fraction(y)
    np.testing.assert_array_equal(peak, [1, 1])
    np.testing.assert_array_equal(trough, [4, 4])
    assert f[0] == pytest.approx(0.5 / 3.0) and f[1] < 0


def test_a_size_that_reconverges_past_its_early_peak_recovers_over_100_percent():
    """Converge to 1, diverge to -1, come back to 1.5 and 2: the peak is the early one (before the
    trough), not the late high point, so the recovery is (2 - -1) / (1 - -1) = 150%, not "no divergence"."""
    y = np.array([[0.0, 1.0, -1.0, 0.5, 1.5, 2.0]])
    f, peak, trough = claims.recovered_fraction(y)
    assert (int(peak[0]), int(trough[0])) == (1, 2) and f[0] == pytest.approx(1.5)


# ----------------------------------------------------------------------------------------- reliability
def test_equal_distributions_with_1400_vs_190_tokens_are_not_more_reliable():
    """Same distribution, ~1,400 vs ~190 tokens: the raw SD over pairs favours the bigger category,
    the matched-count SD does not, and the verdict is never "reproduced" here."""
    raw, matched = [], []
    for seed in range(4):
        groups, meta = CAL.simulate(CAL.CASES["null"], seed, P=1600)
        c = contrasts(groups, meta, n_boot=100)["freq"]
        assert c["14m"].n[0] > 1300 and 150 < c["14m"].n[1] < 250
        s = summarize(groups, meta, n_boot=100)
        for size, con in c.items():
            rows = s.filter((pl.col("size") == size) & (pl.col("category_kind") == "freq_bin") & (pl.col("metric") == "seeds"))
            sa = rows.filter(pl.col("category") == con.a).sort("step")["sd_pairs"].to_numpy()
            sb = rows.filter(pl.col("category") == con.b).sort("step")["sd_pairs"].to_numpy()
            raw.append(claims.reliability(sa, sb))
            matched.append(claims.reliability(con.sd[0], con.sd[1]))
        fs = _by_id(CAL.run(groups, meta, n_boot=100))
        assert fs["freq_reliable"]["verdict"] != "reproduced", fs["freq_reliable"]["evidence"]
    assert np.mean(raw) > 0.3                  # the old statistic: bigger category ~35% less variable
    assert abs(np.mean(matched)) < 0.15


def test_matched_sd_equals_the_subsampled_sd_on_average():
    rng = np.random.default_rng(0)
    n, U, n_m = 600, 20, 60
    X = rng.normal(0, 1, (n, U)) + rng.normal(0, 0.3, U)
    from seedkl_jax.analysis.contrasts import residual_variance
    closed = X.mean(0).var(ddof=1) + residual_variance(X) * (1 / n_m - 1 / n)
    sub = np.mean([X[rng.choice(n, n_m, replace=False)].mean(0).var(ddof=1) for _ in range(4000)])
    assert closed == pytest.approx(sub, rel=0.08)


# ----------------------------------------------------------------------------------------- PoS groups
def test_function_groups_are_the_papers_penn_groups_with_a_upos_fallback():
    assert set(FUNCTION_PAPER_POS) | set(CONTENT_PAPER_POS) == set(PAPER_POS.values())
    assert not set(FUNCTION_PAPER_POS) & set(CONTENT_PAPER_POS)
    groups, meta = CAL.simulate(CAL.CASES["null"], 0, P=800)
    assert contrasts(groups, meta, n_boot=50)["function"]["14m"].grouping == "Penn groups (paper_pos)"
    xpos_only = meta.drop("paper_pos")
    assert contrasts(groups, xpos_only, n_boot=50)["function"]["14m"].grouping == "Penn groups (xpos)"
    upos = {"IN": "ADP", "DT": "DET", "MD": "AUX", "PRP": "PRON", "NN": "NOUN", "NNS": "NOUN", "VB": "VERB",
            "VBD": "VERB", "JJ": "ADJ", "RB": "ADV", ",": "PUNCT", "CD": "NUM"}
    upos_only = meta.drop("paper_pos", "xpos").with_columns(upos=meta["xpos"].replace_strict(upos))
    c = contrasts(groups, upos_only, n_boot=50)["function"]["14m"]
    assert c.grouping.startswith("UPOS groups (fallback") and c.n[1] > c.n[0]   # ADV counts as content there


# ----------------------------------------------------------------------------------------- faster
def test_interpolated_reach_steps_break_a_checkpoint_tie():
    steps = [0, 1, 2, 4, 8, 16]
    a = np.array([-1.0, -1.0, -0.9, -0.2, -0.1, 0.0])      # half way (-0.5) crossed early between 2 and 4
    b = np.array([-1.0, -1.0, -0.9, -0.6, -0.4, 0.0])      # crossed later, between 4 and 8
    c = np.array([-1.0, -1.0, -0.9, -0.45, -0.1, 0.0])     # between 2 and 4 too, nearer 4 than a
    x = claims.reach_logstep(steps, np.stack([a, b, c]))
    assert x[0] < x[2] < x[1]
    assert 1.0 < x[0] < 2.0 and 1.0 < x[2] < 2.0 and 2.0 < x[1] < 3.0
    assert x[0] == pytest.approx(1 + 0.4 / 0.7)                    # log2 2 + (target - y)/(dy) octaves
    assert np.isnan(claims.reach_logstep(steps, np.array([np.nan, 0, 0, 0, 0, 0])))


# ----------------------------------------------------------------------------------------- phases
def test_three_segment_bic_curve_with_significant_reconvergence_is_not_no_reconvergence():
    """When BIC prefers 3 segments (the late rise is small next to the curve's roughness) but the
    reconvergence is clear on paired replicates, the status still counts it."""
    x = ph.log_step_axis(STEPS)
    y = -0.02 - 0.3 * np.clip((x - 8) / (np.log2(2000) - 8), 0, 1) + 0.003 * np.clip(x - np.log2(2000), 0, None)
    y = y + 0.03 * np.clip((x - 4) / 4, 0, 1) * (x <= 8)
    rng = np.random.default_rng(0)
    reps = y[None] + rng.normal(0, 0.05, (400, 1)) + rng.normal(0, 0.0005, (400, len(y)))
    c = ph.prepare(STEPS, y, replicates=reps)
    models = ph.fit_models(c)
    models[3]["bic"] = min(m["bic"] for m in models.values()) - 10.0     # BIC prefers 3 segments
    status, best, m, changes = ph.decide(c, models, ph.noise_floor(c)[1])
    assert best == 3 and changes["reconvergence"][1]
    assert status == "four_phases"                                     # was "no_reconvergence" before
    r = ph.detect_phases(STEPS, y, replicates=reps, phase_steps=PAPER_PHASE_STEPS).to_dict()
    assert r["tested"] == "lines" and r["changes"]["reconvergence"]["counts"]
    assert r["status"] == ph.status_from(*(r["changes"][k]["counts"] for k in ("convergence", "divergence",
                                                                               "reconvergence")))
    assert r["status"] == "four_phases"


def test_phases_need_the_suites_lines():
    groups, meta = CAL.simulate(CAL.CASES["null"], 0, P=800)
    reps = {}
    s = summarize(groups, meta, n_boot=100, replicates=reps)
    none = findings(s, phases_from_summary(s, replicates=reps, phase_steps=None), replicates=reps, phase_steps=None)
    assert none[0]["verdict"] == "inconclusive" and "do not cover the paper's phases" in none[0]["evidence"]
    late = s.filter(pl.col("step") >= 1000)                          # first checkpoint after every line but one
    f = findings(late, phases_from_summary(late), phase_steps=PAPER_PHASE_STEPS)[0]
    assert f["verdict"] == "inconclusive" and "do not cover" in f["evidence"]
    full = findings(s, phases_from_summary(s, replicates=reps), replicates=reps)[0]
    assert full["verdict"] == "reproduced", full["evidence"]
    assert "BIC boundaries" in full["evidence"] and "KL between seeds" in full["evidence"]


def test_covers_needs_positive_steps_around_the_lines():
    assert ph.covers(STEPS, PAPER_PHASE_STEPS)
    multiberts = [0] + [20000 * k for k in range(1, 21)] + [1000000, 2000000]
    assert not ph.covers(multiberts, PAPER_PHASE_STEPS)                 # step 0 cannot stand in for step 16
    assert not ph.covers([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024], PAPER_PHASE_STEPS)  # ends before 2000
    assert not ph.covers(STEPS, None)


def test_uniform_phase_must_hold_where_tested():
    groups, meta = CAL.simulate(CAL.CASES["null"], 0, P=800)
    early = [g for g in groups if g.step < 16]
    for g in early:                                               # far from uniform at the first checkpoints
        g.arrays["kl"] = g.arrays["kl"] * 0.0 + np.float32(0.2) * (1 - np.eye(5, dtype=np.float32))
    reps = {}
    s = summarize(groups, meta, n_boot=100, replicates=reps)
    f = findings(s, phases_from_summary(s, replicates=reps), replicates=reps)[0]
    assert f["verdict"] != "reproduced", f["evidence"]


# ----------------------------------------------------------------------------------------- family
def test_holm_adjustment():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    assert holm([]) == []
    np.testing.assert_allclose(holm([0.5, 0.001]), [0.5, 0.002])


def test_findings_adjust_every_test_of_the_table_with_holm():
    groups, meta = CAL.simulate(CAL.CASES["effect"], 1, P=800)
    fs = CAL.run(groups, meta, n_boot=100)
    tests = [t for f in fs for t in f["tests"]]
    assert len(tests) >= 9
    np.testing.assert_allclose([t["p_holm"] for t in tests], holm([t["p"] for t in tests]))
    assert all(f"Holm over the table's {len(tests)} tests" in f["evidence"] for f in fs if f["tests"])


def test_wald_p():
    rng = np.random.default_rng(0)
    reps = rng.normal(0, 1, 4000)
    assert wald_p(1.96, reps) == pytest.approx(0.05, abs=0.01)
    assert wald_p(0.0, reps) == pytest.approx(1.0)
    assert wald_p(1.0, np.full(100, 1.0)) == 0.0 and wald_p(1.0, np.full(5, 1.0)) == 1.0


# ----------------------------------------------------------------------------------------- calibration
def test_small_calibration():
    """A reduced benchmarks/calibration.py: 10 studies per case; each false rate at most 1/10."""
    n = 10
    counts = CAL.calibrate(CAL.CASES, n, n_boot=100, P=800, seed=7)
    for name, case in CAL.CASES.items():
        for cid in case.false_reproduced:
            assert counts[name][cid]["reproduced"] <= 1, (name, cid, counts[name][cid])
        for cid in case.false_not_reproduced:
            assert counts[name][cid]["not reproduced"] <= 1, (name, cid, counts[name][cid])
    for cid in ("size", "freq_more", "function_more"):                  # the well-powered claims (docs/verdicts.md)
        assert counts["effect"][cid]["reproduced"] >= 7, (cid, counts["effect"][cid])
    assert counts["null"]["phases"]["reproduced"] >= 7
