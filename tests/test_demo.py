"""`seedkl demo`: held-out data with gold tags, `--quick` end to end, and a second run reusing the suite.

The CLI runs in a subprocess: cli/demo.py and cli/run.py both define --out/--seeds/--steps, and absl
refuses a flag defined twice in one process (the `seedkl` dispatcher imports only one of them).
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seedkl_jax.lab import demo as D
from seedkl_jax.lab import grammar as G
from seedkl_jax.errors import SeedKLError

ROOT = Path(__file__).resolve().parents[1]
VERDICTS = {"reproduced", "not reproduced", "inconclusive"}


def seedkl(*args, env_extra=None, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    code = "import sys; from seedkl_jax.cli import main; sys.exit(main(['seedkl', *sys.argv[1:]]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout)


def test_prepare_data_held_out_text_with_gold_tags(tmp_path):
    from seedkl_jax.data.tokenizer import load_tokenizer

    cfg = D.DemoConfig(workdir=str(tmp_path), quick=True, train_sentences=300, eval_sentences=40).resolved()
    data = D.prepare_data(cfg)
    tok = load_tokenizer(str(data.tokenizer))
    text = (data.directory / "eval.txt").read_text()
    ids = np.concatenate([[tok.eos_id], tok.encode(text)[0], [tok.eos_id]])
    pos = json.loads((data.directory / "eval_pos.json").read_text())
    assert [p[0] for p in pos] == tok.decode_tokens(ids)  # one tag entry per scored id
    assert {p[1] for p in pos} >= {"DET", "NOUN", "VERB", "PUNCT", None}
    counts = np.load(data.directory / "counts.npy")
    assert counts.shape == (tok.vocab_size,) and counts.sum() == len(data.train_ids)
    # held out: a different sample than the training text
    train_text = G.documents_text(G.generate_documents(G.Grammar(cfg.grammar), cfg.corpus_seed, 300))
    assert text not in train_text and train_text[:2000] != text[:2000]
    assert np.array_equal(data.train_ids[:-1], tok.encode(train_text)[0])
    # reused when unchanged (same object on disk), refused when the samples would coincide
    mtime = (data.directory / "eval.txt").stat().st_mtime_ns
    D.prepare_data(cfg)
    assert (data.directory / "eval.txt").stat().st_mtime_ns == mtime
    import dataclasses
    with pytest.raises(SeedKLError, match="eval_seed"):
        D.prepare_data(dataclasses.replace(cfg, eval_seed=cfg.corpus_seed))


def test_cli_rejects_bad_flags_and_documents_the_defaults():
    r = seedkl("demo", "--seeds=1")
    assert r.returncode == 2 and "--seeds" in r.stderr and "Traceback" not in r.stderr
    r = seedkl("demo", "--widths=36")
    assert r.returncode == 2 and "--widths" in r.stderr and "Traceback" not in r.stderr
    # --help states each preset value the flags fall back to (kept in step with demo.py here)
    lines, name = {}, None
    for line in seedkl("demo", "--help").stdout.splitlines():
        m = re.match(r"^\s+--(?:\[no\])?(\w+):", line)
        name = m.group(1) if m else name
        if name:
            lines[name] = lines.get(name, "") + " " + line.strip()
    fmt = lambda v: ",".join(map(str, v)) if isinstance(v, tuple) else str(v)
    for name in ("widths", "layers", "heads", "seeds", "steps", "warmup", "lr", "final_lr_frac", "batch",
                 "context", "ckpt_per_octave", "ckpt_every"):
        default, quick = getattr(D.DEFAULT_TRAIN, name), getattr(D.QUICK_TRAIN, name)
        assert f"default {fmt(default)}" in lines[name] or f"default suite {fmt(default)}" in lines[name], name
        assert quick == default or f"--quick {fmt(quick)}" in lines[name], name
    assert f"default {D.DEFAULT_SENTENCES[0]}, --quick {D.QUICK_SENTENCES[0]}" in lines["train_sentences"]
    assert f"default {D.DEFAULT_SENTENCES[1]}, --quick {D.QUICK_SENTENCES[1]}" in lines["eval_sentences"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    base = tmp_path_factory.mktemp("demo")
    work, out = base / "work", base / "out"
    r = seedkl("demo", "--quick", f"--workdir={work}", f"--out={out}",
               env_extra={"SEEDKL_CACHE": str(base / "cache")})
    assert r.returncode == 0, r.stderr[-3000:]
    return work, out, r


@pytest.mark.slow
def test_quick_demo_end_to_end(quick):
    import polars as pl

    work, out, r = quick
    assert r.stdout.strip().splitlines()[-1] == f"report: {out / 'report.md'}"
    for name in ("tokens.parquet", "pairs.parquet", "token_meta.parquet", "summary.parquet", "summary.csv",
                 "phases.json", "report.md", "findings.json", "study.json", "regression.parquet",
                 "divergent_tokens.parquet", "minimal_pairs.parquet"):
        assert (out / name).is_file(), name
    assert "## Minimal pairs" in (out / "report.md").read_text()  # the grammar's own pairs (lab/grammar.py)
    assert list((out / "figures").glob("*.png"))
    table = json.loads((out / "findings.json").read_text())
    assert len(table) == 8
    report = (out / "report.md").read_text()
    for f in table:
        assert f["verdict"] in VERDICTS and f["evidence"].strip()
        assert f["finding"] in report  # the report's findings table is filled
    # the study used the gold tags of the held-out text, position by position
    pos = json.loads((work / "data" / "eval_pos.json").read_text())
    meta = pl.read_parquet(out / "token_meta.parquet")
    sizes = meta["size"].unique().to_list()
    assert len(sizes) == len(D.QUICK_TRAIN.widths)
    one = meta.filter(pl.col("size") == sizes[0]).sort("position")
    assert one["upos"].to_list() == [p[1] for p in pos[1:]]
    assert set(one["pos_group"]) >= {"function", "content"}
    summary = pl.read_parquet(out / "summary.parquet")
    steps = sorted(summary["step"].unique().to_list())
    assert steps == D.QUICK_TRAIN.checkpoint_steps()
    # the ICL score at positions that fit the quick demo's 32-token context and its documents
    icl = pl.read_parquet(out / "icl.parquet")
    assert icl.height and set(icl["step"]) == set(steps) and "## In-context learning score" in report
    assert (out / "figures" / "icl.png").is_file()


@pytest.mark.slow
def test_second_demo_reuses_the_trained_suite(quick, monkeypatch):
    from seedkl_jax.lab import trainer

    work, out, _ = quick
    ckpts = sorted(work.glob("*/seed*/step*/model.safetensors"))
    groups = sorted((out / "groups").rglob("*.npz"))
    stamp = {p: p.stat().st_mtime_ns for p in ckpts + groups}

    def no_training(*a, **k):
        raise AssertionError("the suite was retrained")

    monkeypatch.setattr(trainer, "train_seeds", no_training)
    monkeypatch.setenv("SEEDKL_CACHE", str(work.parent / "cache"))
    report = D.demo(D.DemoConfig(workdir=str(work), out=str(out), quick=True, progress=False))
    assert report == out / "report.md"
    assert {p: p.stat().st_mtime_ns for p in ckpts + groups} == stamp  # nothing trained or recomputed
    assert len(json.loads((out / "findings.json").read_text())) == 8
