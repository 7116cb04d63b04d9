"""The ICL score probe (study/icl.py) on a local suite this file builds: 2 sizes x 2 steps x 3 seeds of
random-init GPT-NeoX checkpoints with a word-level vocab (36 real ids, 48 head rows). Checks the losses and
the KL between seeds at the targets against a float64 transformers oracle, the files and report section,
too-short documents, --icl_text=none, a separate --icl_text, the context check and masked LMs."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import polars as pl
import pytest

from seedkl_jax.errors import SeedKLError
from seedkl_jax.study import icl, store
from seedkl_jax.study.run import StudyConfig, run_study
from seedkl_jax.study.suite import Suite
from conftest import link_suite
from test_text import WORDS, tiny_tokenizer_file

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SIZES = {"s1": dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32),
         "s2": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)}
STEPS, SEEDS = (0, 8), (1, 2, 3)
CONTEXT = 64
DOC_WORDS = (30, 8, 25, 70)      # documents 0 and 2 and 3 are long enough for POSITIONS, 1 is not
POSITIONS = (3, 10, 20)


def _docs(n_words, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, n)) for n in n_words]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, hf_checkpoint):
    root = tmp_path_factory.mktemp("icl")
    tok_file = tiny_tokenizer_file(root / "tok")
    template = link_suite(root, hf_checkpoint, SIZES, STEPS, SEEDS, base=2000, tokenizer=tok_file, vocab_size=48,
                          max_position_embeddings=CONTEXT, initializer_range=0.5)
    text = root / "eval.txt"
    text.write_text("<|endoftext|>".join(_docs(DOC_WORDS, 0)), encoding="utf-8")
    suite = Suite(sizes=tuple(SIZES), steps=STEPS, seeds=SEEDS, model_template=template)
    from seedkl_jax.data.tokenizer import load_tokenizer

    return dict(root=root, suite=suite, text=text, cache=str(root / "cache"), tok=load_tokenizer(str(tok_file)))


def _cfg(lab, out, **kw) -> StudyConfig:
    return StudyConfig.from_flat(**{**dict(suite=lab["suite"], text=str(lab["text"]), out=str(out), pos="none",
                                           cache_dir=lab["cache"], n_boot=50), **kw})


@pytest.fixture(scope="module")
def full(lab):
    out = lab["root"] / "full"
    run_study(_cfg(lab, out, icl_positions=POSITIONS), progress=False)
    return out


def _oracle(lab, size: str, step: int, positions=POSITIONS, text=None):
    """float64 torch: (doc ids, loss_short [D,S], loss_long [D,S], kl_short [D,S,S], kl_long [D,S,S]) over
    the documents of `text` (default the study's) with ≥ target + 1 ids ([eos] + words + [eos])."""
    tok, V = lab["tok"], lab["tok"].vocab_size
    long_start, short_start, target = positions
    docs = (text or lab["text"]).read_text(encoding="utf-8").split("<|endoftext|>")
    ids = [[0] + list(tok.encode(d)[0]) + [0] for d in docs]
    keep = [k for k, d in enumerate(ids) if len(d) > target]
    logp = {"short": [], "long": []}
    for seed in SEEDS:
        path, _ = lab["suite"].checkpoint(size, step, seed)
        model = transformers.GPTNeoXForCausalLM.from_pretrained(path, dtype=torch.float64).eval()
        for ctx, start in (("short", short_start), ("long", long_start)):
            rows = torch.tensor([ids[k][start:target] for k in keep], dtype=torch.long)
            with torch.no_grad():
                z = model(rows).logits[:, -1, :V].double()
            logp[ctx].append(torch.log_softmax(z, -1).numpy())      # [D,V]
    out = [np.asarray(keep)]
    tgt = np.asarray([ids[k][target] for k in keep])
    for ctx in ("short", "long"):
        lp = np.stack(logp[ctx], 1)                                   # [D,S,V]
        out.append(-np.take_along_axis(lp, tgt[:, None, None], 2)[..., 0])
    for ctx in ("short", "long"):
        lp = np.stack(logp[ctx], 1)
        p = np.exp(lp)
        out.append(np.einsum("dsv,dsv->ds", p, lp)[:, :, None] - np.einsum("dsv,dtv->dst", p, lp))
    return out


def test_losses_and_kl_match_a_float64_transformers_oracle(lab, full):
    frame = pl.read_parquet(full / "icl.parquet")
    assert frame.columns == ["size", "step", "seed", "doc_id", "loss_short", "loss_long"]
    for size in SIZES:
        for step in STEPS:
            doc, ls, ll, ks, kl = _oracle(lab, size, step)
            assert list(doc) == [0, 2, 3]
            assert kl[:, ~np.eye(3, dtype=bool)].min() > 0.05, "random seeds too similar for a meaningful check"
            g = dict(np.load(store.group_path(full, size, step)))
            np.testing.assert_array_equal(g["icl_doc_id"], doc)
            for key, want in (("icl_loss_short", ls), ("icl_loss_long", ll), ("icl_kl_short", ks), ("icl_kl_long", kl)):
                assert g[key].dtype == np.float32 and g[key].shape == want.shape, key
                np.testing.assert_allclose(g[key], want, rtol=1e-5, atol=1e-5, err_msg=key)
            rows = frame.filter((pl.col("size") == size) & (pl.col("step") == step)).sort("doc_id", "seed")
            assert rows["seed"].to_list() == list(SEEDS) * 3 and rows["doc_id"].to_list() == [0] * 3 + [2] * 3 + [3] * 3
            np.testing.assert_allclose(rows["loss_short"].to_numpy(), ls.ravel(), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(rows["loss_long"].to_numpy(), ll.ravel(), rtol=1e-5, atol=1e-5)


def test_report_section_table_and_figure(lab, full):
    report = (full / "report.md").read_text()
    assert "## In-context learning score" in report and "![icl](figures/icl.png)" in report
    assert (full / "figures" / "icl.png").is_file()
    section = report.split("## In-context learning score", 1)[1].split("\n## ", 1)[0]
    assert "3 of 4 have ≥ 21 ids" in section and "repository" in section
    # the table's first row: s1 at step 0, the mean of loss_short - loss_long over documents and seeds
    frame = pl.read_parquet(full / "icl.parquet").filter((pl.col("size") == "s1") & (pl.col("step") == 0))
    mean = float((frame["loss_short"] - frame["loss_long"]).mean())
    row = next(line for line in section.splitlines() if line.startswith("| s1 | 0 |"))
    assert f"{mean:.3f} [" in row and "3 × 3" in row
    settings = json.loads((full / "study.json").read_text())["results"]["measure"]
    assert settings["icl_text"] is None and settings["icl_positions"] == list(POSITIONS)


def test_too_short_documents_still_run_and_the_section_says_so(lab, tmp_path):
    out = tmp_path / "short"
    run_study(_cfg(lab, out, icl_positions=(100, 450, 501)), progress=False)  # the repository's positions
    report = (out / "report.md").read_text()
    assert "No ICL score: none of the 4 documents has the 502 ids" in report
    assert pl.read_parquet(out / "icl.parquet").height == 0
    assert not (out / "figures" / "icl.png").exists()
    assert "icl_loss_short" not in np.load(store.group_path(out, "s1", 0)).files


def test_icl_text_none_writes_nothing(lab, tmp_path):
    out = tmp_path / "none"
    run_study(_cfg(lab, out, icl_text="none", icl_positions=POSITIONS), progress=False)
    assert not (out / "icl.parquet").exists() and not (out / "figures" / "icl.png").exists()
    assert "In-context learning" not in (out / "report.md").read_text()
    assert "icl_loss_short" not in np.load(store.group_path(out, "s2", 8)).files
    assert json.loads((out / "study.json").read_text())["results"]["measure"]["icl_text"] == "none"


def test_a_separate_icl_text_is_scored_and_recorded_by_content(lab, tmp_path):
    other = tmp_path / "icl.txt"
    other.write_text("<|endoftext|>".join(_docs((5, 40, 22), 7)), encoding="utf-8")
    out = tmp_path / "other"
    suite = dataclasses.replace(lab["suite"], sizes=("s2",), steps=(8,))
    run_study(_cfg(lab, out, suite=suite, icl_text=str(other), icl_positions=POSITIONS), progress=False)
    doc, ls, ll, ks, kl = _oracle(lab, "s2", 8, text=other)
    assert list(doc) == [1, 2]
    g = np.load(store.group_path(out, "s2", 8))
    np.testing.assert_allclose(g["icl_loss_long"], ll, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g["icl_kl_short"], ks, rtol=1e-5, atol=1e-5)
    rec = json.loads((out / "study.json").read_text())["results"]["measure"]["icl_text"]
    assert rec["source"] == str(other) and len(rec["sha256"]) == 64 and rec["n_tokens"] == 5 + 40 + 22 + 4


def test_bad_icl_inputs_fail_before_any_compute(lab, tmp_path):
    out = tmp_path / "ctx"
    with pytest.raises(SeedKLError, match=r"--icl_positions=1,60,68: the long context is 67 tokens but size s1's "
                                          r"model takes 64 positions; use e.g. --icl_positions=4,60,68"):
        run_study(_cfg(lab, out, icl_positions=(1, 60, 68)), progress=False)
    with pytest.raises(SeedKLError, match="--icl_text=.*no such file"):
        run_study(_cfg(lab, out, icl_text=str(tmp_path / "missing.txt")), progress=False)
    assert not (out / "groups").exists()
    from seedkl_jax.data.text import read_text  # --vocab_size narrower than the rows' ids: named before compute

    narrow = dataclasses.replace(lab["tok"], vocab_size=5)
    with pytest.raises(SeedKLError, match=r"--text=.*eval.txt: the ICL score's rows hold token id \d+, "
                                          r"outside the 5 ids"):
        icl.prepare(_cfg(lab, out, icl_positions=POSITIONS), narrow, read_text(lab["text"], lab["tok"]))


def test_masked_lms_get_a_section_and_no_arrays(lab):
    cfg = StudyConfig.from_flat(suite=lab["suite"], text=str(lab["text"]), out="x", mlm_scoring="unmasked")
    from seedkl_jax.data.text import read_text

    prepared = icl.prepare(cfg, lab["tok"], read_text(lab["text"], lab["tok"]))
    assert icl.keys(prepared) == () and icl.score(prepared, None, None, vocab_size=36, seed_names=SEEDS) == {}
    [(title, md)] = icl.write(prepared, [], "unused", lab["suite"])
    assert title == "In-context learning score" and "defined for causal LMs" in md


def test_a_resumed_run_writes_the_same_icl_files(lab, full, tmp_path):
    """A kill loses at most the group being computed: a copy of the finished run with one group file gone
    (as a kill before that group was saved leaves it) resumes to the same icl.parquet and ICL section."""
    import shutil

    out = tmp_path / "resumed"
    shutil.copytree(full, out)
    lost = store.group_path(out, list(SIZES)[-1], STEPS[-1])
    lost.unlink()
    kept = store.group_path(out, list(SIZES)[0], STEPS[0]).stat().st_mtime_ns
    (out / "icl.parquet").unlink()
    run_study(_cfg(lab, out, icl_positions=POSITIONS), progress=False)
    assert lost.is_file() and store.group_path(out, list(SIZES)[0], STEPS[0]).stat().st_mtime_ns == kept
    assert pl.read_parquet(out / "icl.parquet").equals(pl.read_parquet(full / "icl.parquet"))
    section = lambda d: (d / "report.md").read_text().split("## In-context learning score", 1)[1].split("\n## ", 1)[0]
    assert section(out) == section(full)
