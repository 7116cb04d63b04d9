"""Suites (presets, templates, overrides, missing checkpoints) and the `seedkl run` flags."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from absl import flags
from absl.testing import flagsaver

from seedkl_jax.errors import SeedKLError
from seedkl_jax.study import suite as suite_lib
from seedkl_jax.study.suite import PRESETS, Suite, check_complete, missing_checkpoints, parse_list, resolve_suite

ROOT = Path(__file__).resolve().parents[1]

# The paper's 20 evaluation checkpoints, written out independently of the code under test.
PAPER_STEPS = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 143000]


def test_polypythia_preset_is_the_papers_suite():
    s = PRESETS["polypythia"]
    assert list(s.steps) == PAPER_STEPS and len(s.steps) == 20
    assert list(s.sizes) == ["14m", "31m", "70m", "160m", "410m"]
    assert list(s.seeds) == [1, 3, 5, 7, 9]
    assert set(s.seeds) <= set(suite_lib.POLYPYTHIA_AVAILABLE_SEEDS) == set(range(1, 10))
    assert s.checkpoint("70m", 1000, 3) == ("EleutherAI/pythia-70m-seed3", "step1000")
    assert not s.is_local
    s.validate()


def test_override_replaces_only_given_parts():
    s = PRESETS["polypythia"].override(seeds=(1, 2), steps=None, sizes=("14m",))
    assert s.seeds == (1, 2) and s.sizes == ("14m",) and s.steps == PRESETS["polypythia"].steps
    assert s.model_template == PRESETS["polypythia"].model_template
    assert s.groups() == [("14m", st) for st in PAPER_STEPS]
    assert len(list(s.checkpoints())) == 20 * 2


def test_local_template_resolves_to_absolute_paths(tmp_path):
    s = Suite(sizes=["a"], steps=[0, 5], seeds=[1, 2], model_template=str(tmp_path / "{size}/seed{seed}/step{step}"))
    assert s.is_local
    assert s.checkpoint("a", 5, 2) == (str(tmp_path / "a/seed2/step5"), None)
    rel = Suite(sizes=["a"], steps=[0], seeds=[1, 2], model_template="rel/{size}/s{seed}")
    assert rel.checkpoint("a", 0, 1) == (os.path.abspath("rel/a/s1"), None)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(seeds=[1]), "--seeds: needs at least 2"),
    (dict(seeds=[1, 1, 2]), "--seeds: repeated"),
    (dict(steps=[4, 2]), "not ascending"),
    (dict(steps=[-1, 2]), "negative step"),
    (dict(sizes=[]), "--sizes: needs at least 1"),
    (dict(model_template="m/{size}-{sede}"), "unknown placeholder"),
    (dict(model_template="m/{size}-{step}"), "has no {seed}"),
    (dict(model_template="m/{size}-{seed}", revision_template=""), "no {step}"),
    (dict(model_template="m/x-{seed}", revision_template="step{step}", sizes=["a", "b"]), "no {size}"),
    (dict(model_template="m/{size}-{seed", revision_template="step{step}"), "not a valid template"),
])
def test_validate_refuses_unusable_suites(kwargs, needle):
    base = dict(sizes=["a"], steps=[0, 2], seeds=[1, 2], model_template="m/{size}-{seed}", revision_template="step{step}")
    base.update(kwargs)
    with pytest.raises(SeedKLError, match=__import__("re").escape(needle)):
        Suite(**base).validate()


def _make_ckpt(path: Path, weights=True, config=True):
    path.mkdir(parents=True)
    if config:
        (path / "config.json").write_text("{}")
    if weights:
        (path / "model.safetensors").write_bytes(b"x")


def test_missing_local_checkpoints_are_all_listed(tmp_path):
    s = Suite(sizes=["a", "b"], steps=[0, 1], seeds=[1, 2], model_template=str(tmp_path / "{size}/{seed}/{step}"))
    for size, step, seed, path, _ in s.checkpoints():
        if (size, step, seed) == ("a", 1, 2):
            _make_ckpt(Path(path), weights=False)
        elif (size, step, seed) == ("b", 0, 1):
            _make_ckpt(Path(path), config=False)
        elif (size, step, seed) not in {("b", 1, 1), ("b", 1, 2)}:
            _make_ckpt(Path(path))
    missing = missing_checkpoints(s)
    assert len(missing) == 4
    for frag, why in [("a/2/1", "no weights"), ("b/1/0", "no config.json"), ("b/1/1", "no such directory"),
                      ("b/2/1", "no such directory")]:
        assert any(frag in m and why in m for m in missing), (frag, missing)
    with pytest.raises(SeedKLError) as e:
        check_complete(s)
    msg = str(e.value)
    assert "4 of 8 checkpoints missing" in msg and "\n" not in msg
    assert all(m in msg for m in missing)


def test_hub_checkpoints_unverifiable_offline_are_listed(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    s = Suite(sizes=["14m"], steps=[0, 1], seeds=[1, 2], model_template="seedkl-test-none/pythia-{size}-seed{seed}",
              revision_template="step{step}")
    missing = missing_checkpoints(s)
    assert len(missing) == 4 and all("hub is unreachable" in m for m in missing)
    assert any("seedkl-test-none/pythia-14m-seed2@step1" in m for m in missing)
    with pytest.raises(SeedKLError, match="local folders"):
        check_complete(s)


def test_parse_list():
    assert parse_list("--seeds", "1, 3,5", int) == (1, 3, 5)
    assert parse_list("--seeds", ["1", "3"], int) == (1, 3)
    assert parse_list("--sizes", None) is None and parse_list("--sizes", "") is None
    with pytest.raises(SeedKLError, match="--steps=1,x"):
        parse_list("--steps", "1,x", int)


def test_to_dict_round_trips():
    s = PRESETS["polypythia"]
    assert Suite(**s.to_dict()) == s
    json.dumps(s.to_dict())


# ---------------------------------------------------------------- the CLI flags

FIXED_FLAGS = ["preset", "model_template", "revision_template", "sizes", "steps", "seeds", "text", "tokenizer",
               "counts", "pos", "out", "overwrite", "window", "overlap"]


def _config(argv):
    from seedkl_jax.cli import run as cli_run

    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["seedkl run"] + argv)
        return cli_run.build_config()


def test_flags_override_the_preset():
    cfg = _config(["--seeds=1,2", "--steps=0,16", "--text=t.txt", "--out=o", "--window=64", "--overlap=16"])
    assert resolve_suite(cfg.suite) == PRESETS["polypythia"].override(seeds=(1, 2), steps=(0, 16))
    assert (cfg.text.text, cfg.output.out, cfg.scoring.window, cfg.scoring.overlap) == ("t.txt", "o", 64, 16)
    assert cfg.text.pos == "stanza" and not cfg.text.pos_required  # default: stanza if it can, else untagged
    assert _config(["--text=t", "--pos=stanza"]).text.pos_required


def test_local_template_flag_implies_no_revision(tmp_path):
    suite = lambda argv: resolve_suite(_config(argv).suite)  # noqa: E731
    local = suite([f"--model_template={tmp_path}/{{size}}/seed{{seed}}/step{{step}}", "--text=t"])
    assert local.is_local and local.sizes == PRESETS["polypythia"].sizes
    assert suite(["--model_template=me/pythia-{size}-seed{seed}", "--text=t"]).revision_template == "step{step}"
    assert suite(["--model_template=me/m-{size}-{seed}-{step}", "--revision_template=", "--text=t"]).is_local


def test_flagfile(tmp_path):
    ff = tmp_path / "study.flags"
    ff.write_text("--preset=\n--model_template=/x/{size}/{seed}/{step}\n--revision_template=\n--sizes=a,b\n"
                  "--steps=0,1,2\n--seeds=3,4\n--text=/t.txt\n--overwrite\n--counts=/c.npy\n--pos=none\n")
    cfg = _config([f"--flagfile={ff}"])
    assert resolve_suite(cfg.suite) == Suite(sizes=("a", "b"), steps=(0, 1, 2), seeds=(3, 4),
                                             model_template="/x/{size}/{seed}/{step}")
    assert cfg.output.overwrite and cfg.text.counts == "/c.npy" and cfg.text.pos == "none"


def test_no_preset_needs_every_part():
    with pytest.raises(SeedKLError, match="--sizes, --steps"):
        _config(["--preset=", "--model_template=/x/{seed}", "--seeds=1,2", "--text=t"])
    with pytest.raises(SeedKLError, match="unknown preset"):
        resolve_suite(_config(["--preset=nope", "--text=t"]).suite)
    with pytest.raises(SeedKLError, match="--text: required"):
        _config([])


def test_help_documents_the_fixed_flags():
    code = "import sys; from seedkl_jax.cli import main; sys.exit(main(['seedkl', 'run', '--help']))"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "--text" in r.stdout, r.stderr  # (absl exits 1 after --help)
    for name in FIXED_FLAGS:
        assert f"--{name}" in r.stdout or f"--[no]{name}" in r.stdout, name


# ---------------------------------------------------------------- the other public suites (issue 11)

def test_multiberts_presets():
    s = PRESETS["multiberts"]
    # 29 checkpoints: 0, 20, ..., 200 thousand steps, then 300, ..., 2000 thousand (written out here)
    assert list(s.steps) == [0, 20, 40, 60, 80, 100, 120, 140, 160, 180, 200] + list(range(300, 2001, 100))
    assert len(s.steps) == 29 and list(s.seeds) == [0, 1, 2, 3, 4]
    assert s.checkpoint("base", 20, 3) == ("google/multiberts-seed_3-step_20k", "main")
    final = PRESETS["multiberts-final"]
    assert list(final.seeds) == list(range(25)) and len(final.steps) == 1
    assert final.checkpoint("base", 2000, 24) == ("google/multiberts-seed_24", "main")
    for name in ("multiberts", "multiberts-final"):
        PRESETS[name].validate()


def test_mistral_presets_have_named_seeds():
    small, medium = PRESETS["mistral-gpt2-small"], PRESETS["mistral-gpt2-medium"]
    assert small.seeds == ("alias-gpt2-small-x21", "battlestar-gpt2-small-x49", "caprica-gpt2-small-x81",
                           "darkmatter-gpt2-small-x343", "expanse-gpt2-small-x777")
    assert [s.split("-")[0] for s in medium.seeds] == ["arwen", "beren", "celebrimbor", "durin", "eowyn"]
    assert small.checkpoint("small", 400000, "alias-gpt2-small-x21") == (
        "stanford-crfm/alias-gpt2-small-x21", "checkpoint-400000")
    # log-spaced, ascending, on Mistral's saving schedule (every 10 to 100, 50 to 2k, 100 to 20k, 1000 to 400k)
    steps = small.steps
    assert list(steps) == sorted(steps) and steps[-1] == 400000 and steps == medium.steps
    on_schedule = lambda n: (n <= 100 and n % 10 == 0) or (n <= 2000 and n % 50 == 0) or (
        n <= 20000 and n % 100 == 0) or n % 1000 == 0
    assert all(on_schedule(n) for n in steps)
    assert all(b / a <= 2.5 for a, b in zip(steps, steps[1:]))
    small.validate(), medium.validate()


def test_seeds_may_be_names():
    assert parse_list("--seeds", "1, alias-x21,3", suite_lib.seed_value) == (1, "alias-x21", 3)
    s = Suite(sizes=["a"], steps=[0], seeds=["alias", "beren"], model_template="/x/{size}/{seed}")
    assert s.checkpoint("a", 0, "beren") == ("/x/a/beren", None)
    assert Suite(**s.to_dict()) == s
    with pytest.raises(SeedKLError, match="neither an integer nor a name"):
        parse_list("--seeds", "1,a b", suite_lib.seed_value)
    cfg = _config(["--preset=mistral-gpt2-small", "--seeds=alias-gpt2-small-x21,caprica-gpt2-small-x81", "--text=t"])
    assert cfg.suite.seeds == ("alias-gpt2-small-x21", "caprica-gpt2-small-x81")


def test_help_lists_every_preset():
    code = "import sys; from seedkl_jax.cli import main; sys.exit(main(['seedkl', 'run', '--help']))"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    for name, s in PRESETS.items():
        assert f"{name}: {s.model_template}" in r.stdout, name
    assert "--mlm_scoring" in r.stdout


def test_mlm_scoring_flag_and_window_defaults():
    cfg = _config(["--preset=multiberts", "--text=t", "--mlm_scoring=masked"])
    sc = cfg.scoring
    assert sc.mlm_scoring == "masked" and sc.window is None and sc.overlap is None  # from the model's context
    with pytest.raises(flags.IllegalFlagValueError):
        _config(["--text=t", "--mlm_scoring=half"])
