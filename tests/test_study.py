"""The whole study on a local suite this file builds: 2 sizes x 3 steps x 3 seeds of random-init GPT-NeoX
checkpoints in HF form (the real 50,304-row vocab with the NeoX tokenizer when ../shared is present,
else a tiny word-level vocab). Checks the output contract, kl_mean against a float64 torch oracle,
kill-and-resume, and every bad input of the study."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from seedkl_jax.errors import SeedKLError
from seedkl_jax.study import store
from seedkl_jax.study.run import StudyConfig, run_study
from seedkl_jax.study.suite import Suite
from conftest import link_suite
from test_text import NEOX_TOKENIZER, tiny_tokenizer_file

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
REAL = NEOX_TOKENIZER.is_file()
SIZES = {"s1": dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32),
         "s2": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)}
# (conftest's hf_checkpoint: rotary_pct 0.25, untied embed_out; initializer_range 0.5 makes seeds differ by ~nats)
STEPS = (0, 4, 64)
SEEDS = (1, 2, 3)
TEXT = ["the cat sat on the mat . it was a big red cat and he saw the old dog .",
        "a small dog ran under the tree , she ate the blue moon .",
        "the sun is slow and the house is new ."]

TOKENS_COLS = ["size", "step", "position", "token_id", "kl_mean", "kl_std", "surprisal_mean", "entropy_mean",
               "kl_uniform_mean", "kl_unigram_mean"]
PAIRS_COLS = ["size", "step", "seed_a", "seed_b", "kl_mean"]
META_COLS = ["size", "position", "token_id", "token_str", "doc_id", "count", "freq_bin", "upos", "xpos",
             "pos_group", "context_upos", "context_xpos", "paper_pos", "final_surprisal", "final_surprisal_bin",
             "word_position"]
SUMMARY_COLS = ["size", "step", "metric", "category_kind", "category", "n_tokens", "mean_kl", "e_conv", "sd_tokens",
                "sd_pairs", "ci_low", "ci_high"]
FINAL_FILES = ["tokens.parquet", "pairs.parquet", "token_meta.parquet", "summary.parquet", "summary.csv",
               "regression.parquet", "divergent_tokens.parquet", "phases.json", "findings.json", "report.md",
               "study.json"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, hf_checkpoint):
    """The suite on disk, its text, tag file and counts, and a shared params cache."""
    root = tmp_path_factory.mktemp("study")
    if REAL:
        tok_file, rows = NEOX_TOKENIZER, 50304
    else:
        tok_file, rows = tiny_tokenizer_file(root / "tok"), 48
    from seedkl_jax.data.tokenizer import load_tokenizer

    tok = load_tokenizer(str(tok_file))
    # every checkpoint its own random init; the suite layout by symlinks
    template = link_suite(root, hf_checkpoint, SIZES, STEPS, SEEDS, base=0, size_stride=1000,
                          tokenizer=tok_file, vocab_size=rows, max_position_embeddings=256, initializer_range=0.5)
    text = root / "eval.txt"
    text.write_text("<|endoftext|>".join(TEXT) + "\n", encoding="utf-8")
    from seedkl_jax.data.text import read_text

    ids = read_text(text, tok).ids
    # A tag file: Penn tags by a toy rule, so the summary has upos / pos_group / context_upos rows.
    rule = {"the": "DT", "a": "DT", "on": "IN", "under": "IN", "and": "CC", "it": "PRP", "he": "PRP",
            "she": "PRP", "was": "VBD", "is": "VBZ", ".": ".", ",": ","}
    strs = tok.decode_tokens(ids.tolist())
    tags = [[s, "UNK" if i == tok.eos_id else rule.get(s.strip(), "NN")] for s, i in zip(strs, ids)]
    (root / "tags.json").write_text(json.dumps(tags), encoding="utf-8")
    counts = None  # frequencies counted over the text (the Pile counts file has 50,277 ids, see report)
    suite = Suite(sizes=tuple(SIZES), steps=STEPS, seeds=SEEDS,
                  model_template=template)
    return dict(root=root, suite=suite, text=str(text), tags=str(root / "tags.json"), counts=counts,
                cache=str(root / "cache"), tok=tok, ids=ids, rows=rows)


def _cfg(lab, out, **kw) -> StudyConfig:
    base = dict(suite=lab["suite"], text=lab["text"], out=str(out), pos=lab["tags"], counts=lab["counts"],
                cache_dir=lab["cache"], n_boot=50)
    base.update(kw)
    return StudyConfig.from_flat(**base)


@pytest.fixture(scope="module")
def full(lab):
    """One uninterrupted run (with per-position pairs)."""
    out = lab["root"] / "full"
    report = run_study(_cfg(lab, out, save_pair_positions=True), progress=False)
    return out, report


def oracle_logp(lab, size: str, step: int, seeds=SEEDS) -> np.ndarray:
    """Independent float64 log-probs [S,P,V] over the real vocab from the HF torch models of `seeds`."""
    V = lab["tok"].vocab_size
    ids = torch.tensor(np.asarray(lab["ids"], np.int64))[None]
    logp = []
    for seed in seeds:
        path, _ = lab["suite"].checkpoint(size, step, seed)
        model = transformers.GPTNeoXForCausalLM.from_pretrained(path, dtype=torch.float64).eval()
        with torch.no_grad():
            z = model(ids).logits[0, :-1, :V].double()        # [P, V_real]: predicts tokens 1..N-1
        logp.append(torch.log_softmax(z, -1).numpy())
    return np.stack(logp)


def _oracle_kl_mean(lab, size: str, step: int) -> np.ndarray:
    """Independent float64 per-position mean KL over ordered seed pairs from the HF torch models."""
    logp = oracle_logp(lab, size, step)                         # [S, P, V]
    p = np.exp(logp)
    kl = np.einsum("ipv,ipv->ip", p, logp)[:, None] - np.einsum("ipv,jpv->ijp", p, logp)  # [S,S,P]
    S = len(SEEDS)
    return kl[~np.eye(S, dtype=bool)].mean(0)                 # [P]


def test_outputs_exist_with_the_contract_columns(lab, full):
    out, report = full
    assert report == out / "report.md" and report.read_text().strip()
    for name in FINAL_FILES:
        assert (out / name).is_file(), name
    assert list(out.glob("figures/*.png")), "no figures"
    for size in SIZES:
        for step in STEPS:
            assert store.group_path(out, size, step).is_file()
    P = len(lab["ids"]) - 1
    tokens = pl.read_parquet(out / "tokens.parquet")
    assert tokens.columns[:len(TOKENS_COLS)] == TOKENS_COLS
    assert tokens.height == len(SIZES) * len(STEPS) * P
    assert tokens["size"].dtype == pl.Utf8 and tokens["step"].dtype.is_integer()
    assert sorted(set(tokens["position"].to_list())) == list(range(1, P + 1))
    assert tokens.null_count().sum_horizontal().item() == 0
    np.testing.assert_array_equal(tokens.filter((pl.col("size") == "s1") & (pl.col("step") == 0))["token_id"],
                                  lab["ids"][1:])
    pairs = pl.read_parquet(out / "pairs.parquet")
    assert pairs.columns[:len(PAIRS_COLS)] == PAIRS_COLS and pairs.height == len(SIZES) * len(STEPS) * 6
    meta = pl.read_parquet(out / "token_meta.parquet")
    assert meta.columns == META_COLS and meta.height == len(SIZES) * P
    summary = pl.read_parquet(out / "summary.parquet")
    assert summary.columns == SUMMARY_COLS
    assert set(summary["metric"]) == {"seeds", "uniform", "unigram", "surprisal", "top1_agree"}  # default --metrics
    assert (out / "topk.parquet").is_file() and tokens.columns[len(TOKENS_COLS):] == ["top1_agree_mean"]
    assert {"all", "freq_bin", "upos", "pos_group", "context_upos", "final_surprisal_bin",
            "word_position"} <= set(summary["category_kind"])
    assert "begin" in set(summary.filter(pl.col("category_kind") == "word_position")["category"]) <= {"begin", "inside"}
    assert (out / "figures" / "econv_by_word_position.png").is_file() and "Word boundaries" in report.read_text()
    assert pl.read_csv(out / "summary.csv").height == summary.height
    phases = json.loads((out / "phases.json").read_text())
    assert set(phases) >= set(SIZES)
    # the document of each position: three documents, the trailing "\n" document folds into the last
    assert sorted(set(meta["doc_id"])) == [0, 1, 2, 3] or sorted(set(meta["doc_id"])) == [0, 1, 2]
    # nothing temporary left behind
    assert not list(out.rglob("*.tmp")) and not list(out.glob(".staging*"))
    # where the time went: one entry per computed group, every phase a non-negative duration
    timings = json.loads((out / "timings.json").read_text())
    assert [(g["size"], g["step"]) for g in timings["groups"]] == [(s, t) for s in SIZES for t in STEPS]
    for phase in [timings] + timings["groups"]:
        assert all(isinstance(v, float) for k, v in phase.items() if k.endswith("_s")), phase


def test_kl_mean_matches_a_float64_torch_oracle(lab, full):
    out, _ = full
    tokens = pl.read_parquet(out / "tokens.parquet")
    for size, step in [("s1", 64), ("s2", 0), ("s2", 4)]:
        got = tokens.filter((pl.col("size") == size) & (pl.col("step") == step)).sort("position")["kl_mean"].to_numpy()
        want = _oracle_kl_mean(lab, size, step)
        assert want.max() > 0.05, "random models too similar for a meaningful check"
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_derived_tables_agree(lab, full):
    out, _ = full
    tokens = pl.read_parquet(out / "tokens.parquet")
    meta = pl.read_parquet(out / "token_meta.parquet")
    pairs = pl.read_parquet(out / "pairs.parquet")
    # final_surprisal = mean over seeds at the largest step of the same size
    for size in SIZES:
        last = tokens.filter((pl.col("size") == size) & (pl.col("step") == max(STEPS))).sort("position")
        m = meta.filter(pl.col("size") == size).sort("position")
        np.testing.assert_allclose(m["final_surprisal"], last["surprisal_mean"], rtol=1e-6)
        assert set(m["final_surprisal_bin"]) <= {"[0,1)", "[1,2)", "[2,4)", "[4,8)", "8+"}
    # per-position pairs average to pairs.parquet
    pp = pl.read_parquet(out / "pair_positions.parquet")
    avg = pp.group_by(["size", "step", "seed_a", "seed_b"]).agg(pl.col("kl").mean().alias("avg"))
    j = pairs.join(avg, on=["size", "step", "seed_a", "seed_b"])
    assert j.height == pairs.height
    np.testing.assert_allclose(j["kl_mean"], j["avg"], rtol=1e-5)
    # the group files hold what the tables say
    with np.load(store.group_path(out, "s2", 4)) as z:
        assert list(z["seeds"]) == list(SEEDS) and z["kl"].shape == (len(lab["ids"]) - 1, 3, 3)


def _flagfile(lab, out: Path) -> Path:
    lines = ["--preset=", f"--model_template={lab['suite'].model_template}", "--revision_template=",
             f"--sizes={','.join(SIZES)}", f"--steps={','.join(map(str, STEPS))}", f"--seeds={','.join(map(str, SEEDS))}",
             f"--text={lab['text']}", f"--pos={lab['tags']}", f"--out={out}", f"--cache_dir={lab['cache']}",
             "--n_boot=50", "--save_pair_positions"]
    if lab["counts"]:
        lines.append(f"--counts={lab['counts']}")
    path = out.parent / f"{out.name}.flags"
    path.write_text("\n".join(lines) + "\n")
    return path


def _cli(flagfile: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    code = "import sys; from seedkl_jax.cli import main; sys.exit(main(['seedkl', 'run', sys.argv[1]]))"
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", code, f"--flagfile={flagfile}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


# `seedkl run` (its flags from argv[1]) killed (os._exit: no cleanup, like kill -9) after its first group.
KILLED_AFTER_ONE_GROUP = """
import os, sys
from absl import flags
from seedkl_jax.cli import run as cli_run
from seedkl_jax.study.run import run_study
flags.FLAGS([sys.argv[0], sys.argv[1]])
run_study(cli_run.build_config(), progress=False, on_group=lambda size, step: os._exit(3))
"""


def test_killed_run_resumes_without_recomputing(lab, full):
    full_out, _ = full
    out = lab["root"] / "killed"
    r = subprocess.run([sys.executable, "-c", KILLED_AFTER_ONE_GROUP, f"--flagfile={_flagfile(lab, out)}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 3, r.stderr[-3000:]
    done = sorted(out.rglob("*.npz"))
    assert done == [store.group_path(out, "s1", STEPS[0])]
    assert not (out / "tokens.parquet").exists() and not list(out.rglob("*.tmp"))
    before = done[0].stat()

    run_study(_cfg(lab, out, save_pair_positions=True), progress=False)
    after = done[0].stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), "first group was recomputed"
    for name in ["tokens.parquet", "pairs.parquet", "token_meta.parquet", "summary.parquet", "pair_positions.parquet",
                 "topk.parquet"]:
        a, b = pl.read_parquet(full_out / name), pl.read_parquet(out / name)
        assert a.equals(b), name
    assert (out / "summary.csv").read_bytes() == (full_out / "summary.csv").read_bytes()
    assert (out / "phases.json").read_text() == (full_out / "phases.json").read_text()
    assert (out / "explorer.html").read_bytes() == (full_out / "explorer.html").read_bytes()


def test_cli_prints_report_path(lab, full):
    out = lab["root"] / "full"  # everything is finished: the CLI only rewrites the final files
    r = _cli(_flagfile(lab, out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"report: {out / 'report.md'}" in r.stdout


def test_overwrite_recomputes(lab, full, tmp_path):
    out = lab["root"] / "short"
    suite = dataclasses.replace(lab["suite"], sizes=("s1",), steps=(0, 4))
    run_study(_cfg(lab, out, suite=suite), progress=False)
    # a 2-step sweep is too short for phase detection: phases.json says so, the rest completes
    phases = json.loads((out / "phases.json").read_text())
    assert phases["s1"]["status"] == "too_short"
    assert (out / "report.md").is_file() and (out / "summary.parquet").is_file()
    g = store.group_path(out, "s1", 4)
    os.utime(g, (1, 1))  # stamp the group file: only a rewrite gives it a new mtime (inodes get reused)
    run_study(_cfg(lab, out, suite=suite), progress=False)          # resume: nothing to do
    assert g.stat().st_mtime == 1
    run_study(_cfg(lab, out, suite=suite, overwrite=True), progress=False)
    assert g.stat().st_mtime > 1


# ---------------------------------------------------------------- bad input


def test_missing_checkpoints_are_all_listed_before_any_compute(lab, tmp_path):
    suite = dataclasses.replace(lab["suite"], seeds=(1, 2, 3, 4), sizes=("s1", "s2", "s9"))
    out = tmp_path / "out"
    with pytest.raises(SeedKLError) as e:
        run_study(_cfg(lab, out, suite=suite), progress=False)
    msg = str(e.value)
    # seed 4 of s1 and s2 (2 x 3 steps) + all of s9 (3 steps x 4 seeds)
    assert "18 of 36 checkpoints missing" in msg
    assert str(Path(lab["root"]) / "suite" / "s9" / "seed4" / "step64") in msg
    assert str(Path(lab["root"]) / "suite" / "s1" / "seed4" / "step0") in msg
    assert not (out / "study.json").exists() and not (out / "groups").exists()


def test_cli_exits_nonzero_listing_missing_checkpoints(lab, tmp_path):
    ff = _flagfile(lab, tmp_path / "out")
    ff.write_text(ff.read_text().replace("--seeds=1,2,3", "--seeds=1,2,3,7"))
    r = _cli(ff)
    assert r.returncode == 2 and r.stderr.count("seedkl run: error: suite: 6 of 24 checkpoints missing") == 1
    assert all(f"seed7/step{step}" in r.stderr for step in STEPS)


def _linked_suite(lab, root: Path, tokenizer_for) -> Suite:
    """The lab suite through symlinks, with each checkpoint's tokenizer.json chosen by `tokenizer_for`."""
    suite = lab["suite"]
    for size, step, seed, path, _ in suite.checkpoints():
        d = root / size / f"seed{seed}" / f"step{step}"
        d.mkdir(parents=True)
        for f in Path(path).iterdir():
            if f.name != "tokenizer.json":
                (d / f.name).symlink_to(f)
        shutil.copy(tokenizer_for(size, step, seed) or Path(path) / "tokenizer.json", d / "tokenizer.json")
    return dataclasses.replace(suite, model_template=str(root / "{size}" / "seed{seed}" / "step{step}"))


def test_tokenizer_mismatch(lab, tmp_path):
    other = tiny_tokenizer_file(tmp_path / "other", extra_words=("zebra",))
    suite = _linked_suite(lab, tmp_path / "suite", lambda size, step, seed: other if (size, step, seed) == ("s2", 4, 3) else None)
    with pytest.raises(SeedKLError, match="tokenizer mismatch") as e:
        run_study(_cfg(lab, tmp_path / "out", suite=suite), progress=False)
    assert str(tmp_path / "suite" / "s2" / "seed3" / "step4") in str(e.value)
    assert str(tmp_path / "suite" / "s1" / "seed1" / "step0") in str(e.value)  # the reference: first checkpoint
    # an explicit --tokenizer that the checkpoints do not carry is refused too
    with pytest.raises(SeedKLError, match="tokenizer mismatch") as e:
        run_study(_cfg(lab, tmp_path / "out2", tokenizer=str(other)), progress=False)
    assert str(other) in str(e.value)


def test_empty_text(lab, tmp_path):
    (tmp_path / "empty.txt").write_text("\n", encoding="utf-8")
    with pytest.raises(SeedKLError, match="empty"):
        run_study(_cfg(lab, tmp_path / "out", text=str(tmp_path / "empty.txt")), progress=False)


def test_unwritable_out(lab, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SeedKLError, match="--out=.*not writable"):
        run_study(_cfg(lab, tmp_path / "file" / "out"), progress=False)


def test_counts_of_the_wrong_length(lab, tmp_path):
    np.save(tmp_path / "counts.npy", np.ones(lab["tok"].vocab_size - 1))
    with pytest.raises(SeedKLError, match="counts"):
        run_study(_cfg(lab, tmp_path / "out", counts=str(tmp_path / "counts.npy")), progress=False)
    assert not (tmp_path / "out" / "study.json").exists()


def test_rerun_with_other_settings_is_refused(lab, full):
    out, _ = full
    before = (out / "study.json").read_text()
    other = dataclasses.replace(lab["suite"], steps=(0, 4))
    with pytest.raises(SeedKLError, match=r"other settings .*suite\.steps: \[0, 4, 64\] -> \[0, 4\]"):
        run_study(_cfg(lab, out, suite=other), progress=False)
    with pytest.raises(SeedKLError, match=r"window: 256 -> 128"):  # default: the checkpoints' context, 256
        run_study(_cfg(lab, out, window=128, overlap=64), progress=False)
    assert (out / "study.json").read_text() == before


# ---------------------------------------------------------------- store


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "a" / "f.txt"
    store.write_text_atomic(target, "old")

    def broken(tmp):
        Path(tmp).write_text("half")
        raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError):
        store.write_atomic(target, broken)
    assert target.read_text() == "old" and sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]


def test_atomic_write_on_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path):
    import errno

    target = tmp_path / "groups" / "s" / "step0.npz"
    store.write_text_atomic(target, "old")

    def full(tmp):
        Path(tmp).write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(SeedKLError) as e:
        store.write_atomic(target, full)
    assert str(e.value).startswith(f"{target}: No space left on device (the disk is full")
    assert target.read_text() == "old" and sorted(p.name for p in target.parent.iterdir()) == ["step0.npz"]


def test_settings_bind_out_only_while_groups_exist(tmp_path):
    a = {"results": {"window": 8, "suite": {"steps": [0, 1]}}, "annotation": {"pos": "none"}}
    b = {"results": {"window": 8, "suite": {"steps": [0, 2]}}, "annotation": {"pos": "none"}}
    store.claim(tmp_path, a, overwrite=False)
    store.claim(tmp_path, b, overwrite=False)      # no finished group yet: new settings are taken
    assert store.read_settings(tmp_path) == b
    store.save_group(tmp_path, "s", 0, [1, 2], {"kl": np.zeros((3, 2, 2), np.float32)})
    with pytest.raises(SeedKLError, match=r"suite\.steps: \[0, 2\] -> \[0, 1\]"):
        store.claim(tmp_path, a, overwrite=False)
    # annotation settings may change; the group stays
    store.claim(tmp_path, dict(b, annotation={"pos": "stanza"}), overwrite=False)
    assert store.load_group(tmp_path, "s", 0, [1, 2], 3) is not None
    assert store.load_group(tmp_path, "s", 0, [1, 3], 3) is None  # other seeds: recompute
    store.claim(tmp_path, a, overwrite=True)
    assert not store.group_path(tmp_path, "s", 0).exists() and store.read_settings(tmp_path) == a


def test_vocab_size_narrows_normalisation_to_match_counts(lab, tmp_path):
    """Counts one id short are refused with a hint; --vocab_size=len(counts) accepts them, and the
    persisted settings and the unigram baseline then use exactly that vocabulary."""
    V = lab["tok"].vocab_size
    if lab["ids"].max() >= V - 1:
        pytest.skip("the text uses the tokenizer's last id, so it cannot be narrowed away")
    np.save(tmp_path / "counts.npy", np.arange(1, V, dtype=np.float64))  # V-1 entries
    counts = str(tmp_path / "counts.npy")
    with pytest.raises(SeedKLError, match=f"--vocab_size={V - 1}"):
        run_study(_cfg(lab, tmp_path / "bad", counts=counts), progress=False)
    with pytest.raises(SeedKLError, match="--vocab_size"):
        run_study(_cfg(lab, tmp_path / "big", vocab_size=V + 1), progress=False)
    one = Suite(sizes=lab["suite"].sizes[:1], steps=lab["suite"].steps[:1], seeds=lab["suite"].seeds,
                model_template=lab["suite"].model_template)
    out = tmp_path / "narrow"
    run_study(_cfg(lab, out, suite=one, counts=counts, vocab_size=V - 1), progress=False)
    settings = json.loads((out / "study.json").read_text())
    assert settings["results"]["text"]["tokenizer"]["vocab_size"] == V - 1
    assert pl.read_parquet(out / "tokens.parquet")["kl_unigram_mean"].is_finite().all()


@pytest.fixture(scope="module")
def compat_runs(lab, tmp_path_factory):
    """Size s1 run twice on counts where most ids are 0: default (--compat=none) and --compat=paper."""
    root = tmp_path_factory.mktemp("compat")
    V = lab["tok"].vocab_size
    counts = np.bincount(np.asarray(lab["ids"]), minlength=V).astype(np.float64) * 60_000   # most ids: 0
    np.save(root / "counts.npy", counts)
    suite = dataclasses.replace(lab["suite"], sizes=("s1",))
    runs = {"suite": suite, "counts": str(root / "counts.npy")}
    for compat in ("none", "paper"):
        out = root / compat
        run_study(_cfg(lab, out, suite=suite, counts=runs["counts"], compat=compat), progress=False)
        runs[compat] = out
    return runs


def test_compat_paper_replicates_the_papers_choices(lab, compat_runs, tmp_path):
    """--compat=paper: first seed's final surprisal, one >=1e5 bin, the paper's unsmoothed unigram."""
    runs, suite = {k: compat_runs[k] for k in ("none", "paper")}, compat_runs["suite"]
    paper, ours = runs["paper"], runs["none"]
    meta = pl.read_parquet(paper / "token_meta.parquet").sort("position")
    with np.load(store.group_path(paper, "s1", max(STEPS))) as z:
        np.testing.assert_allclose(meta["final_surprisal"], z["surprisal"][:, 0], rtol=1e-6)      # first seed
    assert ">=1e5" in set(meta["freq_bin"]) and not any(b.startswith("1e5") for b in meta["freq_bin"])
    ours_meta = pl.read_parquet(ours / "token_meta.parquet").sort("position")
    assert ">=1e5" not in set(ours_meta["freq_bin"])
    assert json.loads((paper / "study.json").read_text())["results"]["analysis"]["compat"] == "paper"
    # the paper's floor (~ -736 for the zero-count ids) makes KL to the unigram far larger than ours
    tok = {k: pl.read_parquet(o / "tokens.parquet").filter(pl.col("step") == 0)["kl_unigram_mean"].mean()
           for k, o in runs.items()}
    assert np.isfinite(tok["paper"]) and tok["paper"] > tok["none"] + 100
    assert "What this run replicates" in (paper / "report.md").read_text()
    text = (ours / "report.md").read_text()
    assert "How much each corrected choice moves the results" in text and "KL to the paper's unigram minus" in text
    assert "**Top frequency bin**" in text and "| >=1e5 |" in text          # both binnings, this run's numbers
    with pytest.raises(SeedKLError, match="--compat"):
        run_study(_cfg(lab, tmp_path / "bad", suite=suite, compat="papers"), progress=False)


def test_default_report_gives_the_unigram_kl_both_ways(lab, compat_runs, tmp_path):
    """A default run measures, at the first step, the models' KL to the paper's unigram too: it equals
    the kl_unigram of a --compat=paper run of the same suite, and the report shows both numbers."""
    from seedkl_jax.analysis.compat import OTHER_KL

    first, last = min(STEPS), max(STEPS)
    z = {}
    for compat in ("none", "paper"):
        with np.load(store.group_path(compat_runs[compat], "s1", first)) as f:
            z[compat] = {k: f[k] for k in f.files}
        with np.load(store.group_path(compat_runs[compat], "s1", last)) as f:
            assert OTHER_KL not in f.files                                    # first step only
    np.testing.assert_allclose(z["none"][OTHER_KL], z["paper"]["kl_unigram"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(z["paper"][OTHER_KL], z["none"]["kl_unigram"], rtol=1e-5, atol=1e-4)
    ours, paper = (float(np.mean(z[c]["kl_unigram"].astype(np.float64))) for c in ("none", "paper"))
    assert paper > ours + 100                                                  # the paper's floor for zero counts
    timed = json.loads((compat_runs["none"] / "timings.json").read_text())["groups"]
    assert [g["step"] for g in timed if g.get("both_unigrams")] == [first]    # first step only
    row = f"| s1 @ {first} | {ours:.6g} | {paper:.6g} | {paper - ours:+.6g} |"
    for compat in ("none", "paper"):                                           # both reports, same numbers
        text = (compat_runs[compat] / "report.md").read_text()
        assert "| size @ step | KL to ours | KL to the paper's | paper's − ours | KL to uniform |" in text
        assert row in text, text[text.find("**Unigram baseline**"):][:800]


def test_a_first_step_group_saved_without_the_other_unigram_is_recomputed(lab, compat_runs, tmp_path):
    """Resuming: a first-step group file without kl_unigram_other (an older run's) is recomputed, others kept."""
    from seedkl_jax.analysis.compat import OTHER_KL

    out = tmp_path / "resume"
    shutil.copytree(compat_runs["none"], out)
    first = store.group_path(out, "s1", min(STEPS))
    with np.load(first) as f:
        old = {k: f[k] for k in f.files if k != OTHER_KL}
    with open(first, "wb") as f:
        np.savez(f, **old)
    computed = []
    run_study(_cfg(lab, out, suite=compat_runs["suite"], counts=compat_runs["counts"]), progress=False,
              on_group=lambda size, step: computed.append((size, step)))
    assert computed == [("s1", min(STEPS))]
    with np.load(first) as f:
        assert OTHER_KL in f.files
