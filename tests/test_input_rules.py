"""The input rules the help documents are the rules the code applies (issue 22): every enum flag's
help lists its choices and the parser refuses another value; --text's three forms are read and the
end-of-text tokens are added only where the help says; --pos's JSON shape is accepted and another
refused; --counts' rules each refused with a message naming the file; and the dispatcher's own
lines (no command, an unreadable flagfile)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from absl import flags

from seedkl_jax import config
from seedkl_jax.cli import flags as config_flags
from seedkl_jax.data.annotate import load_counts
from seedkl_jax.data.pos import read_pos_file
from seedkl_jax.data.text import read_text
from seedkl_jax.data.tokenizer import load_tokenizer
from seedkl_jax.errors import SeedKLError
from test_text import tiny_tokenizer_file

ROOT = Path(__file__).resolve().parents[1]
HELP = {f.metadata["flag"] or path.rsplit(".", 1)[-1]: f.metadata["help"]
        for path, f in config_flags.cli_fields(config.StudyConfig).items()}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return load_tokenizer(str(tiny_tokenizer_file(tmp_path_factory.mktemp("tok"))))


def test_every_enum_flag_lists_its_choices_and_refuses_another_value():
    fv = flags.FlagValues()
    names = config_flags.define(config.StudyConfig, module_name="rules", flag_values=fv)
    fields = config_flags.cli_fields(config.StudyConfig)
    enums = [(names[p], f.metadata["choices"]) for p, f in fields.items() if f.metadata.get("choices")]
    assert enums, "no enum flag found: the test would check nothing"
    listing = fv.module_help("rules")
    for name, choices in enums:
        entry = listing.split(f"--{name}:", 1)[1].split("\n  --", 1)[0]
        for choice in choices:
            assert choice in entry, (name, choice)
        with pytest.raises(flags.IllegalFlagValueError):
            fv([sys.argv[0], f"--{name}=not-a-choice"])
        fv.unparse_flags()


def test_text_forms_and_the_end_of_text_tokens_the_help_documents(tok, tmp_path):
    help_ = " ".join(HELP["text"].split())
    assert "folder of *.txt" in help_ and ".npy" in help_ and "nothing added" in help_
    docs = ["the cat sat", "a dog ran on the mat"]
    n_words = sum(len(d.split()) for d in docs)
    one = tmp_path / "eval.txt"
    one.write_text("<|endoftext|>".join(docs), encoding="utf-8")
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, d in enumerate(docs):
        (folder / f"{i}.txt").write_text(d, encoding="utf-8")
    for path in (one, folder):  # <|endoftext|> + documents joined by <|endoftext|> + <|endoftext|>
        ids = read_text(path, tok).ids
        assert len(ids) == n_words + len(docs) + 1, path
        assert ids[0] == ids[-1] == tok.eos_id and int((ids == tok.eos_id).sum()) == len(docs) + 1
    given = np.asarray([3, 4, 5, 6], np.int64)  # no eos at all: scored exactly as given
    np.save(tmp_path / "ids.npy", given)
    assert read_text(tmp_path / "ids.npy", tok).ids.tolist() == given.tolist()


def test_pos_json_shape_the_help_documents(tok, tmp_path):
    help_ = " ".join(HELP["pos"].split())
    assert "per token of the scored text" in help_ and "both end-of-text tokens included" in help_
    text = tmp_path / "eval.txt"
    text.write_text("the cat sat<|endoftext|>a dog ran", encoding="utf-8")
    ids = read_text(text, tok).ids
    strs = tok.decode_tokens(ids.tolist())
    entries = [[s, "UNK" if i == tok.eos_id else "NN"] for s, i in zip(strs, ids)]
    good = tmp_path / "tags.json"
    good.write_text(json.dumps(entries))
    upos, xpos = read_pos_file(good, strs)
    assert len(upos) == len(ids) and upos[1] == "NOUN" and upos[0] is None
    for name, other in [("no_eos", [e for e, i in zip(entries, ids) if i != tok.eos_id]),  # positions only
                        ("per_vocab_id", [["x", "NN"]] * tok.vocab_size),  # one per token id
                        ("a_dict", {s: "NN" for s in strs})]:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(other))
        with pytest.raises(SeedKLError, match=f"--pos={path}"):
            read_pos_file(path, strs)


@pytest.mark.parametrize("name, data, why", [
    ("short", np.ones(5), "(length 5) but the tokenizer has 10 ids"),
    ("negative", np.r_[-1.0, np.ones(9)], "negative count"),
    ("zeros", np.zeros(10), "every count is 0"),
    ("text", np.array(["1"] * 10), "must be finite numbers"),
    ("objects", np.array([1, "a"] * 5, dtype=object), "Python objects"),
    ("not_npy", None, "is not a .npy file"),
])
def test_counts_rules_each_refused_naming_the_file(tmp_path, name, data, why):
    help_ = " ".join(HELP["counts"].split())
    assert "one count per token id" in help_ and "length = tokenizer vocab" in help_
    path = tmp_path / f"{name}.npy"
    if data is None:
        path.write_text("1 2 3\n")
    else:
        np.save(path, data, allow_pickle=True)
    with pytest.raises(SeedKLError) as e:
        load_counts(path, 10)
    assert str(e.value).startswith(f"--counts={path}: ") and why in str(e.value)
    assert "allow_pickle" not in str(e.value) and "unsafe" not in str(e.value)
    assert load_counts(_saved(tmp_path, np.arange(10) + 0.3), 10).tolist() == list(range(10))  # numbers: rounded


def _saved(folder: Path, array) -> Path:
    np.save(folder / "good.npy", array)
    return folder / "good.npy"


def test_a_text_npy_that_is_not_one_is_one_line_without_numpys_advice(tok, tmp_path):
    bad = tmp_path / "ids.npy"
    bad.write_text("3 4 5\n")
    with pytest.raises(SeedKLError) as e:
        read_text(bad, tok)
    assert str(e.value) == (f"--text={bad}: is not a .npy file; give a .npy of integer token ids "
                            "(numpy.save of a 1-D array)")


def _seedkl(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from seedkl_jax.cli import main; sys.exit(main(['seedkl', *sys.argv[1:]]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ))


def test_no_command_is_usage_and_exit_2_and_an_unreadable_flagfile_one_line(tmp_path):
    r = _seedkl()
    assert r.returncode == 2 and r.stderr.startswith("usage: seedkl <command>")
    missing = tmp_path / "study.flags"
    r = _seedkl("run", f"--flagfile={missing}")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"seedkl run: error: --flagfile={missing}: cannot open it (No such file or directory); "
        "give a readable file of --flag=value lines"]
    assert _seedkl("--help").returncode == 0


def test_demo_help_says_what_the_demo_does():
    r = _seedkl("demo", "--help")
    assert r.returncode == 0 and "dispatcher" not in r.stdout
    assert "trains the sizes x seeds" in " ".join(r.stdout.split())


def test_the_size_finding_names_what_is_missing_when_two_sizes_have_too_few_steps():
    """Two sizes with two steps each: the message must not read as if a second size were missing."""
    from test_verdicts import CAL

    groups, meta = CAL.simulate(CAL.Case(), 0, P=200, steps=[0, 1000], sizes=("78k", "200k"))
    size = {f["id"]: f for f in CAL.run(groups, meta, n_boot=20)}["size"]
    assert size["verdict"] == "inconclusive"
    assert "steps per size here: 78k: 2, 200k: 2" in size["evidence"], size["evidence"]
