"""Minimal pairs (--minimal_pairs): sentence log-probs against float64 transformers oracles (a causal
GPT-NeoX, default and --compat=paper scoring; a BERT with the pseudo-log-likelihood), the per-task
statistics against a hand computation, bad input named by its line, and a study end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from seedkl_jax.analysis.minimal_pairs import stats_table, task_stats
from seedkl_jax.data.minimal_pairs import read_minimal_pairs
from seedkl_jax.data.tokenizer import load_tokenizer
from seedkl_jax.errors import SeedKLError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PAIRS = [  # TINY_WORDS: the a cat dog sat ran on under mat log and . ,
    {"sentence_good": "the cat sat on the mat .", "sentence_bad": "the cat on sat the mat .", "UID": "order"},
    {"sentence_good": "a dog ran .", "sentence_bad": "a dog ran the .", "UID": "order", "field": "syntax"},
    {"sentence_good": "the dog sat under a log", "sentence_bad": "dog the sat under a log", "UID": "det",
     "linguistics_term": "determiners"},
    {"sentence_good": "the cat sat on the mat and the dog ran under the log .",  # a second padded length
     "sentence_bad": "the cat sat on the mat and the dog ran under log the .", "UID": "long"},
]


def _jsonl(path: Path, objs, blank_after: int | None = None) -> Path:
    lines = [json.dumps(o) for o in objs]
    if blank_after is not None:
        lines.insert(blank_after, "")
    path.write_text("\n".join(lines) + "\n")
    return path


def _params(ckpts, stacked: bool = False):
    from seedkl_jax.convert.loader import load
    from seedkl_jax.kernels.compare import seed_params, stack_params

    models = [load(str(c)) for c in ckpts]
    ps = [m.params for m in models]
    return models[0].config, (stack_params(ps) if stacked else seed_params(ps))


def _score(ckpts, tok, sentences, *, paper=False, masked=False, stacked=False):
    from seedkl_jax.kernels.sentences import sentence_logprobs

    cfg, params = _params(ckpts, stacked)
    rows = int(cfg.vocab_size) if paper else tok.vocab_size
    return sentence_logprobs(params, cfg, sentences, vocab_rows=rows, start=tok.eos_id,
                             end=tok.eos_id if paper else None, cls=tok.cls_id, sep=tok.sep_id, mask=tok.mask_id,
                             pad=tok.pad_id or 0)


def _sentences(tok):
    return [tok.encode(p[k])[0] for p in PAIRS for k in ("sentence_good", "sentence_bad")]


@pytest.mark.parametrize("paper", [False, True])
@pytest.mark.parametrize("stacked", [False, True])
def test_causal_logprobs_match_a_float64_oracle(hf_checkpoint, tmp_path, paper, stacked):
    ckpts = [hf_checkpoint(s, tokenizer="tiny", initializer_range=0.5) for s in (11, 12)]
    tok = load_tokenizer(str(ckpts[0]))
    sents = _sentences(tok)
    got = _score(ckpts, tok, sents, paper=paper, stacked=stacked)  # [N,S]
    V = 512 if paper else tok.vocab_size  # the full head (512 rows) vs the tokenizer's 15 ids
    assert tok.vocab_size < 512
    for s, ckpt in enumerate(ckpts):
        model = transformers.GPTNeoXForCausalLM.from_pretrained(ckpt, dtype=torch.float64).eval()
        for n, ids in enumerate(sents):
            full = [tok.eos_id, *ids.tolist()] + ([tok.eos_id] if paper else [])
            with torch.no_grad():
                z = model(torch.tensor([full])).logits[0, :-1, :V].double()
            want = torch.log_softmax(z, -1).gather(1, torch.tensor(full[1:])[:, None]).sum().item()
            np.testing.assert_allclose(got[n, s], want, rtol=1e-5, atol=1e-4)
    assert got.std() > 0.5  # seeds and sentences differ: the comparison can fail


def test_paper_and_default_scoring_differ(hf_checkpoint):
    ckpts = [hf_checkpoint(s, tokenizer="tiny", initializer_range=0.5) for s in (11, 12)]
    tok = load_tokenizer(str(ckpts[0]))
    sents = _sentences(tok)
    assert np.abs(_score(ckpts, tok, sents) - _score(ckpts, tok, sents, paper=True)).min() > 1e-3


def test_masked_pll_matches_a_float64_oracle(family_checkpoint):
    ckpts = [family_checkpoint("bert", s, tokenizer="wordpiece") for s in (21, 22)]
    tok = load_tokenizer(str(ckpts[0]))
    assert tok.mask_id is not None and tok.vocab_size < 512
    sents = _sentences(tok)
    got = _score(ckpts, tok, sents)
    for s, ckpt in enumerate(ckpts):
        model = transformers.BertForPreTraining.from_pretrained(ckpt, dtype=torch.float64).eval()
        for n, ids in enumerate(sents):
            base = [tok.cls_id, *ids.tolist(), tok.sep_id]
            want = 0.0
            for k in range(1, len(ids) + 1):  # each token masked in turn
                row = list(base)
                row[k] = tok.mask_id
                with torch.no_grad():
                    z = model(torch.tensor([row])).prediction_logits[0, k, :tok.vocab_size].double()
                want += torch.log_softmax(z, -1)[base[k]].item()
            np.testing.assert_allclose(got[n, s], want, rtol=1e-5, atol=1e-4)
    assert got.std() > 0.05


def test_statistics_match_a_hand_computation():
    # one pair, two seeds: d = log 3 (p_good = 3/4) and d = 0 (1/2); the paper's KL(P_1 || P_2)
    st = task_stats(np.array([[np.log(3.0), 0.0]]), np.zeros((1, 2)))
    assert st["kl_paper"] == pytest.approx(0.75 * np.log(0.75 / 0.5) + 0.25 * np.log(0.25 / 0.5), abs=1e-12)
    assert st["kl_pair"] == pytest.approx(st["kl_paper"], abs=1e-12)  # one pair: the same thing
    assert list(st["accuracy"]) == [1.0, 0.0] and st["agreement"] == 0.0  # a tie counts as wrong

    rng = np.random.default_rng(0)
    good, bad = rng.normal(size=(5, 3)) * 3, rng.normal(size=(5, 3)) * 3
    st = task_stats(good, bad)
    p = np.exp(good) / (np.exp(good) + np.exp(bad))  # [N,S] good's 2-way share, by hand
    kl = lambda a, b: a * np.log(a / b) + (1 - a) * np.log((1 - a) / (1 - b))  # noqa: E731
    pairs = [(0, 1), (0, 2), (1, 2)]
    P = p.mean(0)
    assert st["kl_paper"] == pytest.approx(np.mean([kl(P[i], P[j]) for i, j in pairs]), rel=1e-12)
    assert st["kl_pair"] == pytest.approx(np.mean([[kl(p[n, i], p[n, j]) for i, j in pairs] for n in range(5)]),
                                          rel=1e-12)
    right = good > bad
    assert np.allclose(st["accuracy"], right.mean(0))
    assert st["agreement"] == pytest.approx(np.mean([(right[:, i] == right[:, j]).mean() for i, j in pairs]))
    assert st["kl_pair"] > st["kl_paper"] > 0  # averaging first hides disagreement on single pairs

    table = stats_table([("s", 4, good, bad)], ("x", "y", "x", "y", "y"))
    assert table["task"].to_list() == ["x", "y"] and table["n_pairs"].to_list() == [2, 3]
    only_x = task_stats(good[[0, 2]], bad[[0, 2]])
    assert table.row(0, named=True)["kl_paper"] == pytest.approx(only_x["kl_paper"])


def test_saturated_pairs_stay_finite():
    st = task_stats(np.array([[0.0, -900.0], [0.0, 5.0]]), np.array([[900.0, 0.0], [1.0, 0.0]]))
    assert np.isfinite(st["kl_paper"]) and np.isfinite(st["kl_pair"]) and st["kl_pair"] > 0


@pytest.fixture(scope="module")
def tiny_tok(tmp_path_factory):
    from conftest import tiny_tokenizer

    return load_tokenizer(str(tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")))


def test_reader_keeps_line_index_task_and_tokens(tiny_tok, tmp_path):
    mp = read_minimal_pairs(str(_jsonl(tmp_path / "blimp.jsonl", PAIRS, blank_after=1)), tiny_tok)
    assert mp.pair.tolist() == [0, 2, 3, 4]  # the blank line 1 keeps its index
    assert mp.task == ("order", "order", "det", "long") and mp.tasks() == ["order", "det", "long"]
    assert mp.field == (None, "syntax", None, None) and mp.term == (None, None, "determiners", None)
    assert mp.good[0].tolist() == tiny_tok.encode("the cat sat on the mat .")[0].tolist()
    no_uid = read_minimal_pairs(str(_jsonl(tmp_path / "anaphor.jsonl", [{k: v for k, v in PAIRS[0].items()
                                                                         if k != "UID"}])), tiny_tok)
    assert no_uid.task == ("anaphor",)  # the file's name, as the paper's script names tasks


@pytest.mark.parametrize("body,line", [
    ('{"sentence_good": "a dog ran ."}\n', 1),
    ('{"sentence_good": "a dog ran .", "sentence_bad": "a dog ."}\nnot json\n', 2),
    ('{"sentence_good": "a dog ran .", "sentence_bad": "a dog ."}\n\n{"sentence_good": "", "sentence_bad": "a"}\n', 3),
    ('[1, 2]\n', 1),
    ('', 1),
    ('\n\n', 1),
])
def test_bad_input_is_one_error_naming_the_line(tiny_tok, tmp_path, body, line):
    f = tmp_path / "bad.jsonl"
    f.write_text(body)
    with pytest.raises(SeedKLError, match=rf"--minimal_pairs=.*bad\.jsonl line {line}\b"):
        read_minimal_pairs(str(f), tiny_tok)


def test_too_long_sentences_and_missing_files_are_named(tiny_tok, tmp_path):
    f = _jsonl(tmp_path / "p.jsonl", PAIRS)
    with pytest.raises(SeedKLError, match="line 1: sentence_good has 7 tokens"):
        read_minimal_pairs(str(f), tiny_tok, max_tokens=6)
    with pytest.raises(SeedKLError, match="no such file"):
        read_minimal_pairs(str(tmp_path / "absent.jsonl"), tiny_tok)


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def lab(tmp_path_factory, hf_checkpoint):
    from conftest import tiny_tokenizer
    from seedkl_jax.study.suite import Suite

    root = tmp_path_factory.mktemp("mp-study")
    tok_file = tiny_tokenizer(root / "tokenizer.json")
    for j, step in enumerate((0, 8)):
        for seed in (1, 2):
            ckpt = hf_checkpoint(500 + 10 * j + seed, tokenizer=tok_file, initializer_range=0.5,
                                 max_position_embeddings=64)
            link = root / "suite" / f"seed{seed}" / f"step{step}"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(ckpt, target_is_directory=True)
    text = root / "eval.txt"
    text.write_text("the cat sat on the mat . a dog ran under the log .<|endoftext|>the dog sat on a mat .\n")
    suite = Suite(sizes=("tiny",), steps=(0, 8), seeds=(1, 2),
                  model_template=str(root / "suite" / "seed{seed}" / "step{step}"))
    return dict(root=root, suite=suite, text=str(text), pairs=str(_jsonl(root / "pairs.jsonl", PAIRS)),
                tok=load_tokenizer(str(tok_file)))


def _cfg(lab, out, **kw):
    from seedkl_jax.study.run import StudyConfig

    return StudyConfig.from_flat(suite=lab["suite"], text=lab["text"], out=str(out), pos="none",
                                 cache_dir=str(lab["root"] / "cache"), n_boot=20, **kw)


def test_study_writes_minimal_pairs_table_figure_and_section(lab, tmp_path):
    from seedkl_jax.study.run import run_study

    out = tmp_path / "out"
    report = run_study(_cfg(lab, out, minimal_pairs=lab["pairs"]), progress=False)
    df = pl.read_parquet(out / "minimal_pairs.parquet")
    assert df.columns == ["size", "step", "seed", "task", "pair", "logp_good", "logp_bad"]
    assert df.height == 2 * 2 * len(PAIRS)
    assert sorted(set(df["pair"])) == [0, 1, 2, 3] and set(df["task"]) == {"order", "det", "long"}
    # the persisted numbers are the scorer's on the same checkpoints
    ckpts = [lab["suite"].checkpoint("tiny", 8, s)[0] for s in (1, 2)]
    want = _score(ckpts, lab["tok"], _sentences(lab["tok"]))
    got = df.filter(pl.col("step") == 8).sort(["pair", "seed"])
    np.testing.assert_allclose(got["logp_good"].to_numpy(), want[0::2].ravel(), rtol=1e-6)
    np.testing.assert_allclose(got["logp_bad"].to_numpy(), want[1::2].ravel(), rtol=1e-6)
    text = Path(report).read_text()
    assert "## Minimal pairs" in text and "figures/minimal_pairs.png" in text
    assert "| tiny | order | 2 |" in text and "all (mean over tasks)" in text
    assert (out / "figures" / "minimal_pairs.png").stat().st_size > 1000
    settings = json.loads((out / "study.json").read_text())["results"]["measure"]["minimal_pairs"]
    assert len(settings["sha256"]) == 64
    with np.load(out / "groups" / "tiny" / "step8.npz") as z:
        assert z["mp_logp_good"].shape == (len(PAIRS), 2)
    # a kill loses at most the group being computed: without its file, a rerun recomputes just it and
    # writes the same table and section
    before = df
    (out / "groups" / "tiny" / "step8.npz").unlink()
    report = run_study(_cfg(lab, out, minimal_pairs=lab["pairs"]), progress=False)
    assert pl.read_parquet(out / "minimal_pairs.parquet").equals(before)
    section = lambda t: t.split("## Minimal pairs", 1)[1].split("\n## ", 1)[0]
    assert section(Path(report).read_text()) == section(text)


def test_a_bad_pairs_file_fails_before_any_compute(lab, tmp_path):
    from seedkl_jax.study.run import run_study

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(PAIRS[0]) + "\n" + json.dumps({"sentence_good": "a dog"}) + "\n")
    out = tmp_path / "out"
    with pytest.raises(SeedKLError, match=r"bad\.jsonl line 2"):
        run_study(_cfg(lab, out, minimal_pairs=str(bad)), progress=False)
    assert not list(out.glob("groups/**/*.npz"))


def test_demo_grammar_pairs_differ_in_one_word_and_read_back(tmp_path):
    from seedkl_jax.lab import grammar as G

    g = G.Grammar()
    pairs = G.minimal_pairs(g, seed=1, n_per_task=20)
    assert pairs == G.minimal_pairs(g, seed=1, n_per_task=20) != G.minimal_pairs(g, seed=2, n_per_task=20)
    assert [p["UID"] for p in pairs] == [t for t in G.PAIR_TASKS for _ in range(20)]
    for p in pairs:
        good, bad = p["sentence_good"].split(), p["sentence_bad"].split()
        assert len(good) == len(bad) and sum(a != b for a, b in zip(good, bad)) == 1, p
    for p in pairs[:20]:  # the object: from the verb's own cluster in the good sentence only
        verb = p["sentence_good"].split()[2][:-2]
        k = g.verbs.index(verb) % g.config.clusters
        clusters = [g.nouns.index(s.split()[4]) % g.config.clusters for s in (p["sentence_good"], p["sentence_bad"])]
        assert clusters[0] == k != clusters[1]
    tok_dir = tmp_path / "tok"
    G.save_tokenizer(G.build_tokenizer(g), tok_dir)
    tok = load_tokenizer(str(tok_dir / "tokenizer.json"))
    mp = read_minimal_pairs(str(G.write_minimal_pairs(g, 1, tmp_path / "mp.jsonl", n_per_task=20)), tok)
    assert len(mp) == 60 and mp.tasks() == list(G.PAIR_TASKS)
    assert all(1 not in ids for ids in mp.good + mp.bad)  # no [UNK]: every word is in the lexicon


def test_a_bert_study_scores_pairs_by_pseudo_log_likelihood(family_checkpoint, tmp_path):
    import shutil

    from conftest import TINY_WORDS, wordpiece_vocab
    from seedkl_jax.study.run import StudyConfig, run_study
    from seedkl_jax.study.suite import Suite

    vocab = wordpiece_vocab(tmp_path / "vocab.txt", TINY_WORDS)
    for j, step in enumerate((0, 1)):
        for seed in (0, 1):
            ckpt = family_checkpoint("bert", 700 + 10 * j + seed, vocab_size=5 + len(TINY_WORDS),
                                     max_position_embeddings=64, initializer_range=0.5, hidden_size=16,
                                     num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
            d = tmp_path / "suite" / f"seed{seed}" / f"step{step}"
            d.mkdir(parents=True)
            for f in ckpt.iterdir():
                (d / f.name).symlink_to(f)
            shutil.copy(vocab, d / "vocab.txt")
    text = tmp_path / "eval.txt"
    text.write_text("the cat sat on the mat . a dog ran under the log .<|endoftext|>the dog sat on a mat .")
    suite = Suite(sizes=("b",), steps=(0, 1), seeds=(0, 1), model_template=str(tmp_path / "suite/seed{seed}/step{step}"))
    out = tmp_path / "out"
    report = run_study(StudyConfig.from_flat(
        suite=suite, text=str(text), out=str(out), pos="none", cache_dir=str(tmp_path / "cache"), n_boot=20,
        minimal_pairs=str(_jsonl(tmp_path / "pairs.jsonl", PAIRS))), progress=False)
    tok = load_tokenizer(str(tmp_path / "suite/seed0/step1"))
    want = _score([tmp_path / f"suite/seed{s}/step1" for s in (0, 1)], tok, _sentences(tok))
    got = pl.read_parquet(out / "minimal_pairs.parquet").filter(pl.col("step") == 1).sort(["pair", "seed"])
    np.testing.assert_allclose(got["logp_good"].to_numpy(), want[0::2].ravel(), rtol=1e-6)
    np.testing.assert_allclose(got["logp_bad"].to_numpy(), want[1::2].ravel(), rtol=1e-6)
    assert "pseudo-log-likelihood" in Path(report).read_text()
