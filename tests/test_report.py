"""analysis.findings, report.figures, report.markdown on synthetic study outputs."""
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from seedkl_jax.analysis.aggregate import SUMMARY_SCHEMA, GroupResult, summarize
from seedkl_jax.analysis.findings import findings
from seedkl_jax.analysis.phases import detect_phases, phases_from_summary
from seedkl_jax.report.figures import make_figures
from seedkl_jax.report.markdown import write_report

STEPS = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
FREQ = ["<10", "[10,100)", "[100,1e3)", "1e3+"]
UPOS = ["NOUN", "VERB", "DET", "ADP", "PUNCT"]
GROUP = {"NOUN": "content", "VERB": "content", "DET": "function", "ADP": "function", "PUNCT": "other"}


def _curve(step, size_idx):
    """KL level: flat, falls (convergence) to 256, rises (divergence) to 2048, falls after;
    larger sizes recover more."""
    x = np.log2(step) if step else -1.0
    v = 1.0 - 0.5 * np.clip(x - 4, 0, 4) / 4 + 1.5 * np.clip(x - 8, 0, 3) / 3
    return 0.05 * (v - (0.2 + 0.2 * size_idx) * max(x - 11, 0))


def study(sizes=("14m", "70m"), P=240, D=6, S=3, freq_effect=0.15, func_effect=0.7, seed=0, upos=True):
    """Synthetic (summary, meta) with per-category effects of known sign."""
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
            "final_surprisal_bin": [["[0,1)", "[1,2)", "8+"][i] for i in rng.integers(0, 3, P)]}))
        func = np.array([GROUP[UPOS[i]] == "function" for i in up])
        factor = (1 + freq_effect * (1.5 - fb)) * np.where(func, func_effect, 1.0)
        for st in STEPS:
            kl = (_curve(st, si) * factor)[:, None, None] * rng.lognormal(0, 0.3, (P, S, S))
            kl[:, np.arange(S), np.arange(S)] = 0
            groups.append(GroupResult(size, st, list(range(S)), {
                "kl": kl, "kl_uniform": rng.random((P, S)) * np.log2(st + 2), "kl_unigram": rng.random((P, S))}))
    meta = pl.concat(frames, how="diagonal_relaxed")
    return summarize(groups, meta, n_boot=200), meta


@pytest.fixture(scope="module")
def synthetic():
    summary, _ = study()
    return summary, phases_from_summary(summary)


def test_findings_reproduced_on_paper_like_data(synthetic):
    summary, phases = synthetic
    fs = findings(summary, phases)
    assert [set(f) for f in fs] == [{"finding", "verdict", "evidence"}] * 4
    json.dumps(fs)
    assert [f["verdict"] for f in fs] == ["reproduced"] * 4, fs
    # evidence quotes the numbers it rests on
    last = summary.filter((pl.col("size") == "70m") & (pl.col("step") == STEPS[-1]) & (pl.col("metric") == "seeds")
                          & (pl.col("category") == "function")).row(0, named=True)
    assert f"{last['e_conv']:.4g}" in fs[3]["evidence"]
    assert "14m" in fs[0]["evidence"] and "four phases" in fs[0]["evidence"]


def test_findings_not_reproduced_when_effects_reverse():
    summary, _ = study(freq_effect=-0.15, func_effect=1.4)           # rare and content words converge more
    fs = findings(summary, phases_from_summary(summary))
    assert fs[2]["verdict"] == "not reproduced" and fs[3]["verdict"] == "not reproduced"
    # sizes given largest-first: the size effect now reads reversed
    fs2 = findings(summary, phases_from_summary(summary), sizes=["70m", "14m"])
    assert fs2[1]["verdict"] == "not reproduced"


def test_findings_inconclusive_without_effect_or_data():
    summary, _ = study(freq_effect=0.0, func_effect=1.0, sizes=("14m",), upos=False)
    short = {"14m": detect_phases([0, 1, 2], [0.0, 0.1, 0.2])}
    fs = findings(summary, short)
    v = [f["verdict"] for f in fs]
    assert v[0] == "inconclusive" and "too short" in fs[0]["evidence"]
    assert v[1] == "inconclusive" and "two sizes" in fs[1]["evidence"]
    assert v[3] == "inconclusive"                                     # no pos_group rows at all


def test_phase_finding_counts_statuses():
    def ph(status):
        return {"status": status, "boundaries": {}}
    from seedkl_jax.analysis.findings import _phases_finding
    assert _phases_finding({"a": ph("four_phases"), "b": ph("four_phases"), "c": ph("no_reconvergence")}, ["a", "b", "c"])["verdict"] == "reproduced"
    assert _phases_finding({"a": ph("no_reconvergence"), "b": ph("no_phases")}, ["a", "b"])["verdict"] == "not reproduced"
    assert _phases_finding({"a": ph("four_phases"), "b": ph("no_phases")}, ["a", "b"])["verdict"] == "inconclusive"


def _png_ok(p: Path):
    with open(p, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert p.stat().st_size > 10_000


def test_figures_and_report(synthetic, tmp_path):
    summary, phases = synthetic
    figs = make_figures(summary, phases, tmp_path / "figures")
    names = {p.name for p in figs}
    assert names == {"econv.png", "econv_sizes.png", "kl_baselines.png", "econv_by_freq_bin.png",
                     "econv_by_pos_group.png", "econv_by_upos.png", "econv_by_final_surprisal_bin.png"}
    for p in figs:
        _png_ok(p)
    assert not list((tmp_path / "figures").glob(".*tmp"))
    fs = findings(summary, phases)
    rep = write_report(tmp_path, summary, phases, figs, findings=fs, extra={"Settings": "seeds 0,1,2"})
    text = rep.read_text()
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
    assert "f/econv.png" in text


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
