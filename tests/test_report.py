"""analysis.findings, report.figures, report.markdown on synthetic study outputs."""
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from seedkl_jax.analysis.aggregate import SUMMARY_SCHEMA, GroupResult, summarize
from seedkl_jax.analysis.findings import findings
from seedkl_jax.analysis.phases import phases_from_summary
from seedkl_jax.report.figures import make_figures
from seedkl_jax.report.markdown import write_report

PAPER_STEPS = (16, 256, 2000)
STEPS = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
FREQ = ["<10", "[10,100)", "[100,1e3)", "1e3+"]
UPOS = ["NOUN", "VERB", "DET", "ADP", "PUNCT"]
GROUP = {"NOUN": "content", "VERB": "content", "DET": "function", "ADP": "function", "PUNCT": "other"}
XPOS = {"NOUN": "NN", "VERB": "VB", "DET": "DT", "ADP": "IN", "PUNCT": "."}
PAPER = {"NN": "Nouns", "VB": "Verbs", "DT": "DT", "IN": "IN", ".": None}


def _curve(step, size_idx):
    """KL level: flat, falls (convergence) to 256, rises (divergence) to 2048, falls after;
    larger sizes recover more."""
    x = np.log2(step) if step else -1.0
    v = 1.0 - 0.5 * np.clip(x - 4, 0, 4) / 4 + 1.5 * np.clip(x - 8, 0, 3) / 3
    return 0.05 * (v - (0.2 + 0.2 * size_idx) * max(x - 11, 0))


def study(sizes=("14m", "70m"), P=240, D=6, S=3, freq_effect=0.15, func_effect=0.7, seed=0, upos=True,
          reps=None):
    """Synthetic (summary, meta) with per-category effects of known sign (replicates into `reps`)."""
    rng = np.random.default_rng(seed)
    fb = rng.integers(0, len(FREQ), P)
    up = rng.integers(0, len(UPOS), P)
    frames, groups = [], []
    for si, size in enumerate(sizes):
        frames.append(pl.DataFrame({
            "size": [size] * P, "position": np.arange(1, P + 1), "token_id": rng.integers(0, 99, P),
            "doc_id": np.sort(rng.integers(0, D, P)), "freq_bin": [FREQ[i] for i in fb],
            "upos": [UPOS[i] for i in up] if upos else [None] * P,
            "pos_group": [GROUP[UPOS[i]] for i in up] if upos else [None] * P,
            "xpos": [XPOS[UPOS[i]] for i in up] if upos else [None] * P,
            "paper_pos": [PAPER[XPOS[UPOS[i]]] for i in up] if upos else [None] * P,
            "final_surprisal_bin": [["[0,1)", "[1,2)", "8+"][i] for i in rng.integers(0, 3, P)]}))
        func = np.array([GROUP[UPOS[i]] == "function" for i in up])
        factor = (1 + freq_effect * (1.5 - fb)) * np.where(func, func_effect, 1.0)
        for st in STEPS:
            kl = (_curve(st, si) * factor)[:, None, None] * rng.lognormal(0, 0.3, (P, S, S))
            kl[:, np.arange(S), np.arange(S)] = 0
            groups.append(GroupResult(size, st, list(range(S)), {
                "kl": kl, "kl_uniform": rng.random((P, S)) * np.log2(st + 2), "kl_unigram": rng.random((P, S)),
                "surprisal": rng.random((P, S)) * 3}))
    meta = pl.concat(frames, how="diagonal_relaxed")
    return summarize(groups, meta, n_boot=200, replicates=reps), meta


@pytest.fixture(scope="module")
def synthetic():
    reps = {}
    summary, _ = study(reps=reps)
    return summary, phases_from_summary(summary), reps


# the findings' rules are tested in tests/test_verdicts.py


def _png_ok(p: Path):
    with open(p, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert p.stat().st_size > 10_000


def test_figures_and_report(synthetic, tmp_path):
    from seedkl_jax.analysis.lr import PYTHIA
    summary, phases, _ = synthetic
    reg = pl.DataFrame({"step": [0, 64, 0, 64], "term": ["log10_count"] * 2 + ["size=70m"] * 2,
                        "reference": [None, None, "size=14m", "size=14m"], "coef": [0.01, -0.02, 0.0, 0.01],
                        "ci_low": [0.0, -0.03, -0.01, 0.0], "ci_high": [0.02, -0.01, 0.01, 0.02], "n_rows": [10] * 4})
    figs = make_figures(summary, phases, tmp_path / "figures", regression=reg, lr_schedule=PYTHIA,
                        phase_steps=PAPER_STEPS)
    names = [p.name for p in figs]
    assert names == ["econv_tokens.png", "econv_pairs.png", "econv_sizes.png", "kl_baselines.png",
                     "econv_by_freq_bin.png", "econv_by_final_surprisal_bin.png", "econv_by_paper_pos.png",
                     "econv_by_xpos_nouns.png", "econv_by_xpos_verbs.png", "econv_by_xpos_other.png",
                     "ce_by_freq_bin.png", "ce_by_final_surprisal_bin.png", "ce_by_paper_pos.png", "regression.png",
                     "lr.png", "econv_by_pos_group.png", "econv_by_upos.png"]
    for p in figs:
        _png_ok(p)
    assert not list((tmp_path / "figures").glob(".*tmp"))
    fs = findings(summary, phases)
    rep = write_report(tmp_path, summary, phases, figs, findings=fs, extra={"Settings": "seeds 0,1,2"},
                       regression=reg, phase_steps=PAPER_STEPS)
    text = rep.read_text()
    # one section per paper figure, in the paper's order, captions naming the band's statistic
    order = [text.index(f"figures/{n}") for n in names]
    assert order == sorted(order)
    assert "±1 SD over tokens (paper's main figure" in text and "bands ±1 SD over seed pairs" in text
    assert text.index("## Regression") < text.index("## Findings of the paper")
    assert "| size=70m | size=14m | 0.01 |" in text
    assert rep == tmp_path / "report.md" and not list(tmp_path.glob(".*tmp"))
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(links) == sorted(f"figures/{n}" for n in names)
    assert all((tmp_path / l).exists() for l in links)
    for f in fs:
        assert f["finding"] in text and f"**{f['verdict']}**" in text
    assert "| paper (Pythia) | four phases | 16 | 256 | 2000 |" in text
    r = summary.filter((pl.col("size") == "14m") & (pl.col("step") == 256) & (pl.col("metric") == "seeds")
                       & (pl.col("category_kind") == "all")).row(0, named=True)
    cell = re.escape(format(r["e_conv"], ".4g"))
    assert re.search(rf"\| 256 \| {cell} ", text)
    assert "## Settings" in text and "seeds 0,1,2" in text


def test_report_computes_findings_and_skips_missing_figures(tmp_path):
    summary, _ = study(sizes=("14m",), upos=False, P=60)
    summary = summary.filter(pl.col("metric") != "unigram")
    phases = phases_from_summary(summary)
    figs = make_figures(summary, phases, tmp_path / "f")
    assert "econv_by_upos.png" not in {p.name for p in figs} and "econv_by_pos_group.png" not in {p.name for p in figs}
    rep = write_report(tmp_path, summary, phases, figs)             # findings=None -> computed
    text = rep.read_text()
    assert "Findings of the paper" in text and "inconclusive" in text
    assert "f/econv_tokens.png" in text


def test_figures_survive_a_two_step_sweep(tmp_path):
    summary, _ = study(sizes=("14m",), P=40)
    summary = summary.filter(pl.col("step").is_in([0, 1]))
    phases = phases_from_summary(summary)
    assert phases["14m"]["status"] == "too_short"
    figs = make_figures(summary, phases, tmp_path)
    assert figs and all(p.exists() for p in figs)
    write_report(tmp_path, summary, phases, figs)


def test_empty_summary(tmp_path):
    empty = pl.DataFrame(schema=SUMMARY_SCHEMA)
    assert make_figures(empty, {}, tmp_path / "f") == []
    assert write_report(tmp_path, empty, {}, []).exists()


def test_econv_bands_never_cross_zero():
    from matplotlib.figure import Figure
    from seedkl_jax.report.figures import _sd_band
    ax = Figure().subplots()
    y = np.array([-0.01, -0.02, -0.001])
    _sd_band(ax, np.arange(3), y, np.array([0.05, 0.01, 0.02]))
    _sd_band(ax, np.arange(3), -y, np.array([0.05, 0.01, 0.02]), upper0=False)   # surprisal-like: >= 0
    (econv,), (ce,) = ax.collections[0].get_paths(), ax.collections[1].get_paths()
    assert econv.vertices[:, 1].max() <= 0.0 and econv.vertices[:, 1].min() < -0.05
    assert ce.vertices[:, 1].min() >= 0.0


# ------------------------------------------------------------------ suite-aware phase marks
def _drawn(monkeypatch) -> dict:
    """Replace the PNG write of the figure modules by a recorder: {file name: Figure} of later draws."""
    import seedkl_jax.report.figures as F
    import seedkl_jax.report.appendix_figures as A
    drawn = {}

    def record(fig, path):
        drawn[Path(path).name] = fig
        return Path(path)
    monkeypatch.setattr(F, "save", record)
    monkeypatch.setattr(A, "save", record)
    return drawn


def _vlines(ax) -> list[float]:
    """x of every axvline (a Line2D spanning the axes' height at one x)."""
    return [ln.get_xdata()[0] for ln in ax.get_lines()
            if len(ln.get_xdata()) == 2 and ln.get_xdata()[0] == ln.get_xdata()[1] and list(ln.get_ydata()) == [0, 1]]


def test_multiberts_figure_has_no_phase_lines_and_dashes_the_unmeasured_segment(monkeypatch, tmp_path):
    from seedkl_jax.study.suite import MULTIBERTS_STEPS, PRESETS
    assert PRESETS["multiberts"].phase_steps is None and PRESETS["polypythia"].phase_steps == PAPER_STEPS
    drawn = _drawn(monkeypatch)
    summary, _ = study(sizes=("base",), P=60)
    # relabel the synthetic steps as MultiBERTs' (thousands: 0, 20, 40, ...)
    mb = dict(zip(STEPS, MULTIBERTS_STEPS))
    summary = summary.with_columns(pl.col("step").replace_strict(mb, return_dtype=pl.Int64))
    phases = phases_from_summary(summary)
    make_figures(summary, phases, tmp_path, phase_steps=None)
    ax = drawn["econv_tokens.png"].axes[0]
    assert _vlines(ax) == []                                    # neither the paper's nor detected boundaries
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert [list(ln.get_xdata()) for ln in dashed] == [[0, 20]]  # 0 -> 20k drawn dashed
    assert ax.get_title() == "base"                             # no phase status without phase steps
    for name in ("econv_sizes.png", "econv_by_freq_bin.png"):
        assert all(_vlines(a) == [] for a in drawn[name].axes)


def test_polypythia_figure_draws_the_phase_lines_its_steps_reach(monkeypatch, synthetic, tmp_path):
    drawn = _drawn(monkeypatch)
    summary, phases, _ = synthetic
    make_figures(summary, phases, tmp_path, phase_steps=PAPER_STEPS)
    ax = drawn["econv_tokens.png"].axes[0]
    assert {16, 256, 2000} <= set(_vlines(ax))
    assert not [ln for ln in ax.get_lines() if ln.get_linestyle() == "--" and ln.get_xdata()[0] == 0]  # 0 -> 1: solid
    short = summary.filter(pl.col("step") <= 512)                # steps reach 16 and 256, not 2000
    make_figures(short, phases_from_summary(short), tmp_path, phase_steps=PAPER_STEPS)
    lines = set(_vlines(drawn["econv_sizes.png"].axes[0]))
    assert {16, 256} <= lines and 2000 not in lines


def test_report_without_phase_steps_says_so(synthetic, tmp_path):
    summary, phases, _ = synthetic
    text = write_report(tmp_path, summary, phases, [], findings=[]).read_text()
    assert "no reference phase boundaries" in text and "paper (Pythia)" not in text
    assert "16/256/2000" not in text
    own = write_report(tmp_path, summary, phases, [], findings=[], phase_steps=(8, 64, 256)).read_text()
    assert "| reference (phase_steps) | four phases | 8 | 64 | 256 |" in own and "suite's reference" in own


def test_report_and_analysis_import_no_cycles():
    """report/figures <-> appendix_figures and analysis -> report were cycles; each imports alone."""
    import subprocess
    import sys
    for mod in ("seedkl_jax.report.appendix_figures", "seedkl_jax.report.figures", "seedkl_jax.analysis.compat",
                "seedkl_jax.analysis.tables", "seedkl_jax.analysis.pipeline"):
        code = (f"import sys, {mod}; bad = [m for m in sys.modules if m.startswith('seedkl_jax.report')]; "
                f"assert '{mod}'.startswith('seedkl_jax.report') or not bad, bad")
        subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
