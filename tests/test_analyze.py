"""`seedkl analyze`: per-pair KL tables from anywhere -> the same analysis and report as `seedkl run`.

Synthetic tables (seeded) check the schema's validation (one error naming the file and the column),
skipped analyses, size ordering and the held-out surprisal seed; the tiny local suite of test_study.py
checks that analysing a run's own pair_positions.parquet + token_meta.parquet gives the run's findings.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from seedkl_jax.analysis.tables import analyze_frames, load_tables
from seedkl_jax.errors import SeedKLError

ROOT = Path(__file__).resolve().parents[1]
TAGS = np.array(["NN", "DT", "IN", "VB", "JJ", "PRP", "MD", "NNS"])


def tables(sizes=("70m", "14m"), steps=(0, 1, 16, 256, 2000), seeds=(1, 3, 5), P=80, D=5, seed=0,
           extra_seed=None):
    """(PAIRS, META, SEEDS) frames of a random study; SEEDS also for `extra_seed` when given."""
    rng = np.random.default_rng(seed)
    S = len(seeds)
    a, b = np.nonzero(~np.eye(S, dtype=bool))
    pairs, per_seed = [], []
    for size in sizes:
        for st in steps:
            kl = rng.gamma(2.0, 0.1, (P, len(a))).astype(np.float32)
            pairs.append(pl.DataFrame({
                "size": size, "step": st, "seed_a": np.tile(np.asarray(seeds)[a], P),
                "seed_b": np.tile(np.asarray(seeds)[b], P), "position": np.repeat(np.arange(1, P + 1), len(a)),
                "kl": kl.reshape(-1)}))
            for s in seeds + ((extra_seed,) if extra_seed is not None else ()):
                per_seed.append(pl.DataFrame({"size": size, "step": st, "seed": s, "position": np.arange(1, P + 1),
                                              "surprisal": rng.gamma(2.0, 1.5, P), "kl_uniform": rng.random(P)}))
    meta = pl.DataFrame({"position": np.arange(1, P + 1), "token_id": rng.integers(0, 40, P),
                         "doc_id": np.sort(rng.integers(0, D, P)), "count": rng.integers(1, 10 ** 6, P),
                         "xpos": TAGS[rng.integers(0, len(TAGS), P)], "token_str": [f"t{i}" for i in range(P)]})
    return pl.concat(pairs), meta, pl.concat(per_seed)


# ------------------------------------------------------------------ validation
def _err(pairs, meta, seeds=None, **kw) -> str:
    with pytest.raises(SeedKLError) as e:
        load_tables(pairs, meta, seeds, **kw)
    return str(e.value)


def test_malformed_tables_are_one_error_naming_the_file_and_the_column(tmp_path):
    pairs, meta, seeds = tables(P=12)
    path = tmp_path / "p.parquet"
    pairs.drop("kl").write_parquet(path)
    msg = _err(str(path), meta)
    assert f"--pairs={path}" in msg and "'kl'" in msg
    msg = _err(pairs.with_columns(pl.col("kl").cast(pl.Int64)), meta)
    assert "pairs" in msg and "'kl'" in msg and "dtype" in msg
    msg = _err(pairs.with_columns(pl.col("size").cast(pl.Categorical).to_physical()), meta)
    assert "'size'" in msg
    assert "'position'" in _err(pairs, meta.drop("position"))
    assert "'doc_id'" in _err(pairs, meta.with_columns(pl.lit(None, pl.Int64).alias("doc_id")))
    msg = _err(pl.concat([pairs, pairs.head(1)]), meta)
    assert "duplicate" in msg and "size '70m' step 0" in msg
    msg = _err(pairs.slice(1), meta)
    assert "missing" in msg and "'kl'" in msg
    assert "META does not have" in _err(pairs, meta.filter(pl.col("position") != 5))
    msg = _err(pairs, pl.concat([meta, meta.head(1)]))
    assert "meta" in msg and "'position'" in msg and "repeats" in msg
    self_pair = pairs.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.col("seed_a"))
                                   .otherwise(pl.col("seed_b")).alias("seed_b"))
    assert "with itself" in _err(self_pair, meta)
    msg = _err(pairs, meta, seeds.slice(1))
    assert "seed_metrics" in msg and "'surprisal'" in msg
    msg = _err(pairs, meta, seeds.with_columns(pl.col("seed").cast(pl.Utf8)))
    assert "'seed'" in msg
    assert "compared seeds" in _err(pairs, meta, seeds, surprisal_seed=3)
    assert "'surprisal'" in _err(pairs, meta, seeds, surprisal_seed=7)  # no rows of seed 7
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    assert f"--meta={bad}" in _err(pairs, str(bad))
    assert "no such file" in _err(str(tmp_path / "none.parquet"), meta)


def test_every_group_must_compare_the_same_seeds():
    pairs, meta, _ = tables(P=10)
    drop = pairs.filter(~((pl.col("step") == 16) & ((pl.col("seed_a") == 5) | (pl.col("seed_b") == 5))))
    assert "same seeds" in _err(drop, meta)


def test_sizes_order_by_parameter_count_or_by_flag():
    pairs, meta, _ = tables(sizes=("1.4b", "70m", "14m"), steps=(0, 16), P=10)
    assert load_tables(pairs, meta).sizes == ["14m", "70m", "1.4b"]
    assert load_tables(pairs, meta, sizes=["70m", "14m"]).sizes == ["70m", "14m"]     # a subset selects
    assert "'size'" in _err(pairs, meta, sizes=["410m"])
    r = analyze_frames(pairs, meta, n_boot=20)
    assert r["sizes"] == ["14m", "70m", "1.4b"]
    assert r["summary"]["size"].unique(maintain_order=True).to_list() == ["14m", "70m", "1.4b"]


def test_meta_with_sizes_and_text_documents():
    pairs, meta, _ = tables(sizes=("14m", "70m"), steps=(0, 16), P=10)
    per_size = pl.concat([meta.with_columns(pl.lit(s).alias("size"), pl.col("doc_id").cast(pl.Utf8))
                          for s in ("14m", "70m")])
    r = analyze_frames(pairs, per_size, n_boot=20)
    assert r["token_meta"].height == 20 and r["token_meta"]["size"].to_list()[::10] == ["14m", "70m"]
    assert "size '70m'" in _err(pairs, per_size.filter(pl.col("size") == "14m"))


# ------------------------------------------------------------------ what runs, what is skipped
def test_missing_optional_columns_skip_analyses_and_the_report_says_so(tmp_path):
    from seedkl_jax.api import analyze

    pairs, meta, _ = tables(P=40)
    bare = meta.select("position", "token_id", "doc_id")
    r = analyze_frames(pairs, bare, n_boot=20)
    kinds = set(r["summary"]["category_kind"])
    assert kinds == {"all"}
    assert any("`count`" in n for n in r["notes"]) and any("PoS" in n for n in r["notes"])
    report = analyze(pairs, bare, out=tmp_path / "out", n_boot=20).read_text()
    assert "## Inputs and skipped analyses" in report
    assert "no `count`" in report and "no PoS tags" in report and "no surprisal" in report
    assert "no reference phase boundaries" in report
    found = json.loads((tmp_path / "out" / "findings.json").read_text())
    assert len(found) == 8 and all(f["verdict"] == "inconclusive" for f in found[2:])

    full = analyze_frames(pairs, meta, n_boot=20)
    assert {"freq_bin", "xpos", "upos", "pos_group", "paper_pos", "context_xpos"} <= set(full["summary"]["category_kind"])
    assert not any("`count`" in n or "PoS" in n for n in full["notes"])
    # upos mapped from the Penn tags; context = previous position's tag in the same document
    tm = full["token_meta"]
    assert tm["upos"].to_list()[:3] == [{"NN": "NOUN", "DT": "DET", "IN": "ADP", "VB": "VERB", "JJ": "ADJ",
                                        "PRP": "PRON", "MD": "AUX", "NNS": "NOUN"}[x] for x in tm["xpos"][:3]]
    same_doc = tm["doc_id"][1:].to_numpy() == tm["doc_id"][:-1].to_numpy()
    ctx, prev = tm["context_xpos"][1:].to_list(), tm["xpos"][:-1].to_list()
    assert all((c == p) if s else c is None for c, p, s in zip(ctx, prev, same_doc))


def test_final_surprisal_bins_from_a_held_out_seed(tmp_path):
    from seedkl_jax.api import analyze

    pairs, meta, seeds = tables(extra_seed=9, P=30)
    held = analyze_frames(pairs, meta, seeds, n_boot=20, surprisal_seed=9)
    want = seeds.filter((pl.col("seed") == 9) & (pl.col("step") == 2000) & (pl.col("size") == "14m"))
    got = held["token_meta"].filter(pl.col("size") == "14m")["final_surprisal"].to_numpy()
    np.testing.assert_allclose(got, want.sort("position")["surprisal"].to_numpy())
    assert "held-out seed 9" in held["final_source"]
    mean = analyze_frames(pairs, meta, seeds, n_boot=20)
    assert "mean over the compared seeds" in mean["final_source"]
    assert "first compared seed" in analyze_frames(pairs, meta, seeds, n_boot=20, compat="paper")["final_source"]
    # the held-out seed is not compared: its rows do not enter the per-seed metrics
    assert set(held["summary"]["metric"]) == {"seeds", "surprisal", "uniform"}
    report = analyze(pairs, meta, seeds, out=tmp_path, n_boot=20, surprisal_seed=9).read_text()
    assert "final-surprisal bins: held-out seed 9" in report


def test_phase_steps_are_checked_and_passed_through():
    pairs, meta, _ = tables(P=20)
    with pytest.raises(SeedKLError, match="phase_steps"):
        analyze_frames(pairs, meta, n_boot=20, phase_steps=(256, 16))
    no = analyze_frames(pairs, meta, n_boot=20)["findings"][0]
    assert no["id"] == "phases" and no["verdict"] == "inconclusive" and "no phase lines" in no["evidence"]


def test_cli_analyze(tmp_path):
    pairs, meta, seeds = tables(P=20, steps=(0, 16, 256))
    for name, df in (("p", pairs), ("m", meta), ("s", seeds)):
        df.write_parquet(tmp_path / f"{name}.parquet")
    cmd = [sys.executable, "-c", "import sys; from seedkl_jax.cli import main; sys.exit(main(sys.argv))", "analyze",
           f"--pairs={tmp_path / 'p.parquet'}", f"--meta={tmp_path / 'm.parquet'}",
           f"--seed_metrics={tmp_path / 's.parquet'}", "--n_boot=20", "--phase_steps=16,256,2000",
           f"--out={tmp_path / 'out'}"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == f"report: {tmp_path / 'out' / 'report.md'}"
    assert "16/256/2000" in (tmp_path / "out" / "report.md").read_text()
    bad = subprocess.run(cmd[:5] + [f"--meta={tmp_path / 'p.parquet'}"] + cmd[6:], cwd=ROOT, capture_output=True,
                         text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "'token_id'" in bad.stderr, bad.stderr


# ------------------------------------------------------------------ the same analysis as the run
def test_analyze_on_a_runs_own_tables_gives_the_runs_findings(lab, full, tmp_path):
    from seedkl_jax.analysis.tables import PAIRS_SCHEMA
    from seedkl_jax.api import analyze
    from seedkl_jax.study import store

    out, _ = full
    pp = pl.read_parquet(out / "pair_positions.parquet")
    assert pp.columns == list(PAIRS_SCHEMA) + ["top1_agree"]  # the default --metrics=kl,top1: read back too
    suite, P = lab["suite"], len(lab["ids"]) - 1
    rows = []
    for size, step in suite.groups():  # the run's per-seed metrics, as another engine would give them
        arrays = store.load_group(out, size, step, suite.seeds, P)
        for i, seed in enumerate(suite.seeds):
            rows.append(pl.DataFrame({"size": size, "step": step, "seed": seed, "position": np.arange(1, P + 1),
                                      **{k: arrays[k][:, i] for k in ("surprisal", "entropy", "kl_uniform",
                                                                      "kl_unigram")}}))
    report = analyze(out / "pair_positions.parquet", out / "token_meta.parquet", pl.concat(rows),
                     out=tmp_path / "a", n_boot=50)
    a = report.parent
    for name in ("findings.json", "phases.json"):
        assert json.loads((a / name).read_text()) == json.loads((out / name).read_text()), name
    for name in ("summary.parquet", "token_meta.parquet", "tokens.parquet", "pairs.parquet", "regression.parquet",
                 "divergent_tokens.parquet"):
        ours, run = pl.read_parquet(a / name), pl.read_parquet(out / name)
        assert ours.columns == run.columns, name
        assert ours.equals(run), name
    # the tables alone (no per-seed metrics) still give the run's findings
    bare = analyze_frames(out / "pair_positions.parquet", out / "token_meta.parquet", n_boot=50)
    assert bare["findings"] == json.loads((out / "findings.json").read_text())


def test_analyze_refuses_a_runs_own_folder(full):
    from seedkl_jax.api import analyze

    out, _ = full
    with pytest.raises(SeedKLError, match="seedkl run"):
        analyze(out / "pair_positions.parquet", out / "token_meta.parquet", out=out, n_boot=10)


def test_run_with_a_held_out_surprisal_seed(lab, hf_checkpoint, tmp_path):
    """--surprisal_seed: seed 4 (not compared) is loaded at each size's last step only; its surprisal,
    checked against transformers in float64, defines the final-surprisal bins; the compared arrays stay 3x3."""
    import torch
    import transformers

    from seedkl_jax.study import store
    from seedkl_jax.study.run import run_study
    from test_study import SEEDS, SIZES, STEPS, _cfg

    suite = lab["suite"]
    tok_file = Path(suite.checkpoint("s1", 0, 1)[0]) / "tokenizer.json"
    for i, size in enumerate(SIZES):
        for step in STEPS:
            for seed in SEEDS:
                link = tmp_path / "suite" / size / f"seed{seed}" / f"step{step}"
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(suite.checkpoint(size, step, seed)[0], target_is_directory=True)
        held = hf_checkpoint(1000 * i + 999, tokenizer=tok_file, vocab_size=lab["rows"], max_position_embeddings=256,
                             initializer_range=0.5, **SIZES[size])
        (tmp_path / "suite" / size / "seed4").mkdir()
        (tmp_path / "suite" / size / "seed4" / f"step{STEPS[-1]}").symlink_to(held, target_is_directory=True)
    local = dataclasses.replace(suite, model_template=str(tmp_path / "suite" / "{size}" / "seed{seed}" / "step{step}"))
    out = tmp_path / "out"
    with pytest.raises(SeedKLError, match="compared"):
        run_study(_cfg(lab, out, suite=local, surprisal_seed=2), progress=False)
    report = run_study(_cfg(lab, out, suite=local, surprisal_seed=4), progress=False).read_text()
    assert "final-surprisal bins: held-out seed 4" in report
    meta = pl.read_parquet(out / "token_meta.parquet")
    ids = torch.tensor(np.asarray(lab["ids"], np.int64))[None]
    V = lab["tok"].vocab_size
    for size in SIZES:
        model = transformers.GPTNeoXForCausalLM.from_pretrained(
            local.checkpoint(size, STEPS[-1], 4)[0], dtype=torch.float64).eval()
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1, :V].double(), -1).numpy()
        want = -logp[np.arange(len(lab["ids"]) - 1), np.asarray(lab["ids"][1:])]
        got = meta.filter(pl.col("size") == size)["final_surprisal"].to_numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        arrays = store.load_group(out, size, STEPS[-1], SEEDS, len(lab["ids"]) - 1)
        assert arrays["kl"].shape[1:] == (3, 3) and arrays["surprisal"].shape[1] == 3
    assert not (out / "groups" / "s1" / "step0.npz").exists() or "surprisal_seed_4" not in np.load(
        out / "groups" / "s1" / "step0.npz").files                      # only the last step loads seed 4


from test_study import full, lab  # noqa: E402,F401  (the tiny local suite and its run)
