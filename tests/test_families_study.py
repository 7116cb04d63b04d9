"""`seedkl run` on local suites of the other families: a BERT suite (2 sizes x 2 steps x 3 seeds,
masked-LM scoring, checked against a float64 torch oracle, killed and resumed) and a GPT-2 suite with
named seeds (windows from its 32-token context, killed and resumed); and the family errors (an
unsupported family, a BERT without MLM head, mixed families in a group): one clear error, nothing in --out.
"""
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
from conftest import wordpiece_vocab

from seedkl_jax.study import store
from seedkl_jax.study.lock import LOCK_FILE
from seedkl_jax.study.run import StudyConfig, run_study
from seedkl_jax.study.suite import Suite
from test_text import tiny_tokenizer_file

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
TEXT = ["The cat sat on the mat. It was a big red cat and he saw the old dog.",
        "A small dog ran under the tree, she ate the blue moon.",
        "The sun is slow and the house is new."]
WORDS = sorted({w for doc in TEXT for w in doc.lower().replace(".", " .").replace(",", " ,").split()})
BERT_SIZES = {"b1": dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32),
              "b2": dict(hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=40)}
STEPS, SEEDS = (0, 1), (0, 1, 2)
GPT2_SEEDS = ("alias", "battlestar", "caprica")


def _cfg(suite, text, out, cache, **kw) -> StudyConfig:
    return StudyConfig.from_flat(suite=suite, text=str(text), out=str(out), pos="none", cache_dir=str(cache), n_boot=20,
                                 **kw)


def _cli(args: list[str], env_extra=None):
    code = "import sys; from seedkl_jax.cli import main; sys.exit(main(['seedkl', 'run', *sys.argv[1:]]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=dict(os.environ, **(env_extra or {})),
                          capture_output=True, text=True, timeout=900)


# `seedkl run` with these flags, killed (os._exit: no cleanup, like kill -9) after its first group.
KILLED_AFTER_ONE_GROUP = """
import os, sys
from absl import flags
from seedkl_jax.cli import run as cli_run
from seedkl_jax.study.run import run_study
flags.FLAGS(['seedkl run', *sys.argv[1:]])
run_study(cli_run.build_config(), progress=False, on_group=lambda size, step: os._exit(3))
"""


def _cli_killed(args: list[str]):
    return subprocess.run([sys.executable, "-c", KILLED_AFTER_ONE_GROUP, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)


def _suite_flags(suite: Suite, text, out, cache) -> list[str]:
    return ["--preset=", f"--model_template={suite.model_template}", "--revision_template=",
            f"--sizes={','.join(suite.sizes)}", f"--steps={','.join(map(str, suite.steps))}",
            f"--seeds={','.join(map(str, suite.seeds))}", f"--text={text}", f"--out={out}", "--pos=none",
            f"--cache_dir={cache}", "--n_boot=20"]


@pytest.fixture(scope="module")
def bert_lab(tmp_path_factory, family_checkpoint):
    root = tmp_path_factory.mktemp("bert-study")
    vocab = wordpiece_vocab(root / "vocab.txt", WORDS)
    rows = 5 + len(WORDS)
    for i, size in enumerate(BERT_SIZES):
        for j, step in enumerate(STEPS):
            for seed in SEEDS:
                ckpt = family_checkpoint("bert", 100 * i + 10 * j + seed, fmt="bin", vocab_size=rows,
                                         max_position_embeddings=64, initializer_range=0.5, **BERT_SIZES[size])
                d = root / "suite" / size / f"seed{seed}" / f"step{step}"
                d.mkdir(parents=True)
                for f in ckpt.iterdir():
                    (d / f.name).symlink_to(f)
                shutil.copy(vocab, d / "vocab.txt")
    text = root / "eval.txt"
    text.write_text("<|endoftext|>".join(TEXT), encoding="utf-8")
    suite = Suite(sizes=tuple(BERT_SIZES), steps=STEPS, seeds=SEEDS,
                  model_template=str(root / "suite" / "{size}" / "seed{seed}" / "step{step}"))
    return dict(root=root, suite=suite, text=text, cache=root / "cache")


def _bert_oracle(path: str, docs: list[list[int]], ids_cls: int, ids_sep: int, mask_id: int | None) -> np.ndarray:
    """float64 log-probs [P, V] of every wordpiece of every document, from transformers' BertForPreTraining:
    unmasked (mask_id None) or with every 7th wordpiece masked (the pass holding the predicted one)."""
    model = transformers.BertForPreTraining.from_pretrained(path, dtype=torch.float64).eval()
    out = []
    for doc in docs:
        for t in range(len(doc)) if mask_id is not None else [None]:
            x = [ids_cls, *[mask_id if t is not None and u % 7 == t % 7 else w for u, w in enumerate(doc)], ids_sep]
            with torch.no_grad():
                lp = torch.log_softmax(model(torch.tensor([x])).prediction_logits[0, 1:-1].double(), -1).numpy()
            out.append(lp if t is None else lp[t:t + 1])
    return np.concatenate(out)


def _oracle_kl_mean(logps: list[np.ndarray]) -> np.ndarray:
    lp = np.stack(logps)  # [S,P,V]
    p = np.exp(lp)
    kl = np.einsum("ipv,ipv->ip", p, lp)[:, None] - np.einsum("ipv,jpv->ijp", p, lp)
    return kl[~np.eye(len(logps), dtype=bool)].mean(0)


def test_bert_suite_end_to_end_resumable(bert_lab, tmp_path):
    from seedkl_jax.data.text import read_text
    from seedkl_jax.data.tokenizer import load_tokenizer

    suite, text, cache = bert_lab["suite"], bert_lab["text"], bert_lab["cache"]
    full = tmp_path / "full"
    run_study(_cfg(suite, text, full, cache), progress=False)
    tokens = pl.read_parquet(full / "tokens.parquet")
    first = suite.checkpoint("b1", 0, 0)[0]
    tok = load_tokenizer(first)
    t = read_text(text, tok, masked_lm=True)
    wordpieces = t.ids[1:]
    # one row per scored wordpiece, in text order, token_id = the wordpiece itself; [CLS]/[SEP] never scored
    for (size, step), g in tokens.group_by(["size", "step"], maintain_order=True):
        assert g["position"].to_list() == list(range(1, len(t.ids)))
        assert g["token_id"].to_numpy().tolist() == wordpieces.tolist()
    assert not set(tokens["token_id"].to_list()) & {tok.cls_id, tok.sep_id, tok.pad_id, tok.mask_id}
    meta = pl.read_parquet(full / "token_meta.parquet")
    assert meta.filter(pl.col("size") == "b1")["doc_id"].unique().sort().to_list() == [0, 1, 2]
    tags = tmp_path / "tags.json"  # a tag per token: context_upos is the previous token's, None at document starts
    tags.write_text(json.dumps([[s, "NN"] for s in tok.decode_tokens(t.ids.tolist())]))
    from seedkl_jax.data.annotate import annotate_tokens
    m = annotate_tokens(t.ids, t.text, t.offsets, tok, None, str(tags), docs=t.doc_ids)
    starts = np.flatnonzero(np.diff(t.doc_ids)) + 1  # first wordpiece of documents 1, 2
    ctx = m["context_upos"].to_list()
    assert ctx[1] == "NOUN" and all(ctx[int(p) - 1] is None for p in starts)
    assert json.loads((full / "study.json").read_text())["results"]["scoring"]["mlm_scoring"] == "unmasked"
    assert json.loads((full / "study.json").read_text())["results"]["scoring"]["window"] == 64  # the models' context
    # the analyses run unchanged: phases per size, the paper's findings, the report
    assert set(json.loads((full / "phases.json").read_text())) == set(BERT_SIZES)
    assert json.loads((full / "findings.json").read_text()) and (full / "report.md").is_file()

    # kl_mean against transformers in float64, documents scored separately as [CLS] doc [SEP]
    docs = [t.ids[np.flatnonzero(t.doc_ids == d)].tolist() for d in range(3)]
    docs[0] = docs[0][1:]  # [CLS] at position 0 counts with document 0
    for size, step in (("b1", 1), ("b2", 0)):
        want = _oracle_kl_mean([_bert_oracle(suite.checkpoint(size, step, s)[0], docs, tok.cls_id, tok.sep_id, None)
                                for s in SEEDS])
        got = tokens.filter((pl.col("size") == size) & (pl.col("step") == step))["kl_mean"].to_numpy()
        assert want.max() > 0.05 and np.abs(got - want).max() <= 1e-4 * max(1.0, want.max()), (size, step)

    # killed after one group, resumed: the same files as the uninterrupted run
    out = tmp_path / "killed"
    r = _cli_killed(_suite_flags(suite, text, out, cache))
    assert r.returncode == 3, r.stderr[-3000:]
    [done] = sorted(out.rglob("*.npz"))
    before = done.stat()
    r = _cli(_suite_flags(suite, text, out, cache))
    assert r.returncode == 0, r.stderr[-3000:]
    assert (done.stat().st_ino, done.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    for name in ("tokens.parquet", "pairs.parquet", "token_meta.parquet", "summary.parquet"):
        assert pl.read_parquet(full / name).equals(pl.read_parquet(out / name)), name


def test_bert_masked_scoring_matches_oracle(bert_lab, tmp_path):
    from seedkl_jax.data.text import read_text
    from seedkl_jax.data.tokenizer import load_tokenizer

    suite = dataclasses.replace(bert_lab["suite"], sizes=("b2",), steps=(1,))
    out = tmp_path / "masked"
    run_study(_cfg(suite, bert_lab["text"], out, bert_lab["cache"], mlm_scoring="masked"), progress=False)
    tok = load_tokenizer(suite.checkpoint("b2", 1, 0)[0])
    t = read_text(bert_lab["text"], tok, masked_lm=True)
    docs = [t.ids[np.flatnonzero(t.doc_ids == d)].tolist() for d in range(3)]
    docs[0] = docs[0][1:]
    want = _oracle_kl_mean([_bert_oracle(suite.checkpoint("b2", 1, s)[0], docs, tok.cls_id, tok.sep_id, tok.mask_id)
                            for s in SEEDS])
    got = pl.read_parquet(out / "tokens.parquet")["kl_mean"].to_numpy()
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, want.max())
    # and it is not the unmasked scoring
    unmasked = _oracle_kl_mean([_bert_oracle(suite.checkpoint("b2", 1, s)[0], docs, tok.cls_id, tok.sep_id, None)
                                for s in SEEDS])
    assert np.abs(got - unmasked).max() > 1e-3


@pytest.fixture(scope="module")
def gpt2_lab(tmp_path_factory, family_checkpoint):
    root = tmp_path_factory.mktemp("gpt2-study")
    tok = tiny_tokenizer_file(root / "tok")
    for j, step in enumerate(STEPS):
        for k, seed in enumerate(GPT2_SEEDS):
            ckpt = family_checkpoint("gpt2", 10 * j + k, vocab_size=48, n_positions=32, initializer_range=0.5)
            d = root / "suite" / "g" / seed / f"step{step}"
            d.mkdir(parents=True)
            for f in ckpt.iterdir():
                (d / f.name).symlink_to(f)
            shutil.copy(tok, d / "tokenizer.json")
    text = root / "eval.txt"
    text.write_text("<|endoftext|>".join(doc.lower().replace(".", " .").replace(",", " ,") for doc in TEXT) * 2,
                    encoding="utf-8")
    suite = Suite(sizes=("g",), steps=STEPS, seeds=GPT2_SEEDS,
                  model_template=str(root / "suite" / "{size}" / "{seed}" / "step{step}"))
    return dict(root=root, suite=suite, text=text, cache=root / "cache")


def test_gpt2_suite_named_seeds_resumable(gpt2_lab, tmp_path):
    suite, text, cache = gpt2_lab["suite"], gpt2_lab["text"], gpt2_lab["cache"]
    full = tmp_path / "full"
    r = _cli(_suite_flags(suite, text, full, cache))
    assert r.returncode == 0, r.stderr[-3000:]
    settings = json.loads((full / "study.json").read_text())["results"]
    assert (settings["scoring"]["window"], settings["scoring"]["overlap"]) == (32, 16)  # GPT-2's context, half
    assert settings["suite"]["seeds"] == list(GPT2_SEEDS)
    pairs = pl.read_parquet(full / "pairs.parquet")
    assert sorted(set(pairs["seed_a"].to_list())) == sorted(GPT2_SEEDS) and pairs["kl_mean"].min() > 0
    tokens = pl.read_parquet(full / "tokens.parquet")
    assert tokens.height == 2 * (tokens["position"].max()) and tokens["position"].max() > 32  # several windows

    out = tmp_path / "killed"
    r = _cli_killed(_suite_flags(suite, text, out, cache))
    assert r.returncode == 3, r.stderr[-3000:]
    assert sorted(out.rglob("*.npz")) == [store.group_path(out, "g", 0)]
    r = _cli(_suite_flags(suite, text, out, cache))
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("tokens.parquet", "pairs.parquet", "summary.parquet"):
        assert pl.read_parquet(full / name).equals(pl.read_parquet(out / name)), name


# ---------------------------------------------------------------- family errors


def _relinked(lab, root: Path, edit) -> Suite:
    """The lab's suite through symlinks; `edit(size, step, seed, folder)` may replace files in a copy."""
    suite = lab["suite"]
    for size, step, seed, path, _ in suite.checkpoints():
        d = root / size / str(seed) / f"step{step}"
        d.mkdir(parents=True)
        for f in Path(path).iterdir():
            (d / f.name).symlink_to(f.resolve())
        edit(size, step, seed, d)
    return dataclasses.replace(suite, model_template=str(root / "{size}" / "{seed}" / "step{step}"))


def _assert_one_error_nothing_written(suite, lab, out, pattern):
    r = _cli(_suite_flags(suite, lab["text"], out, lab["cache"]))
    errors = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert r.returncode == 2 and len(errors) == 1, r.stderr[-3000:]
    assert __import__("re").search(pattern, errors[0]), errors[0]
    assert not out.exists() or {p.name for p in out.rglob("*")} <= {LOCK_FILE}  # the lock file stays by design


def test_unsupported_family_is_one_error(gpt2_lab, tmp_path):
    def gptj(size, step, seed, d):
        config = json.loads((d / "config.json").read_text())
        (d / "config.json").unlink()
        (d / "config.json").write_text(json.dumps({**config, "model_type": "gptj"}))
    suite = _relinked(gpt2_lab, tmp_path / "suite", gptj)
    _assert_one_error_nothing_written(suite, gpt2_lab, tmp_path / "out",
                                      r"model_type 'gptj' is not supported \(supported: bert, gpt2, gpt_neox\)")


def test_bert_without_mlm_head_is_one_error(bert_lab, family_checkpoint, tmp_path):
    headless = family_checkpoint("bert-nohead", 1, vocab_size=5 + len(WORDS), max_position_embeddings=64,
                                 **BERT_SIZES["b1"])

    def strip_head(size, step, seed, d):
        if (size, step, seed) == ("b1", 1, 2):
            for f in ("config.json", "pytorch_model.bin"):
                (d / f).unlink()
            (d / "config.json").symlink_to(headless / "config.json")
            (d / "model.safetensors").symlink_to(headless / "model.safetensors")
    suite = _relinked(bert_lab, tmp_path / "suite", strip_head)
    _assert_one_error_nothing_written(suite, bert_lab, tmp_path / "out", r"b1/2/step1: the checkpoint has no masked-LM head")


def test_mixed_families_in_a_group_is_one_error(bert_lab, gpt2_lab, tmp_path):
    other = gpt2_lab["suite"].checkpoint("g", 0, "alias")[0]

    def swap(size, step, seed, d):
        if (size, step, seed) == ("b2", 0, 1):
            for f in d.iterdir():
                f.unlink()
            for f in Path(other).iterdir():
                (d / f.name).symlink_to(f.resolve())
    suite = _relinked(bert_lab, tmp_path / "suite", swap)
    _assert_one_error_nothing_written(suite, bert_lab, tmp_path / "out",
                                      r"size b2 step 0: seed 1 \(.*b2/1/step0\) is a gpt2 checkpoint but seed 0 "
                                      r"\(.*\) a bert one; every checkpoint of a group must share family and config")
