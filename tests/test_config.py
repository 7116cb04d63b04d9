"""The typed study config (seedkl_jax/config.py): flags generated from it, a config rebuilt from
parsed flags, validation when built, the multi-host agreement and study.json's settings derived
from its field metadata."""
from __future__ import annotations

import dataclasses
import enum
import json
import types

import numpy as np
import pytest
from absl import flags

from seedkl_jax import config
from seedkl_jax.cli import flags as config_flags
from seedkl_jax.config import (AnalysisConfig, Compat, KernelConfig, OutputConfig, ScoringConfig, StudyConfig,
                               SuiteConfig, TextConfig)
from seedkl_jax.errors import SeedKLError

# What `seedkl run --help` listed before the flags were generated (external scripts use these names).
RUN_FLAGS = {"preset", "model_template", "revision_template", "sizes", "steps", "seeds", "text", "tokenizer",
             "counts", "pos", "out", "overwrite", "wait", "window", "overlap", "mlm_scoring", "vocab_chunk",
             "kernel", "kernel_form", "position_block", "cache_logits", "vocab_size", "cache_dir",
             "save_pair_positions", "n_boot", "compat"} | {"surprisal_seed"} | {  # + issue 18's held-out seed
             "metrics", "save_topk", "icl_text", "icl_positions", "minimal_pairs", "seed_factors"}  # + issue 20


def _fresh_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    config_flags.define(StudyConfig, module_name="test_config", flag_values=fv)
    return fv


def _parse(argv: list[str]) -> StudyConfig:
    fv = _fresh_flags()
    fv(["seedkl run"] + argv)
    from seedkl_jax.cli import run as cli_run

    return cli_run.build_config(fv)


def test_flags_are_the_config_fields():
    fv = _fresh_flags()
    cli = config_flags.cli_fields()
    names = config.flag_names()
    assert {names[p] for p in cli} == RUN_FLAGS == set(fv) - {"flagfile", "undefok"} - set(flags.FlagValues())
    for path, f in cli.items():
        flag = fv[names[path]]
        assert flag.help.strip() and f.metadata["help"] in flag.help, path
        default = f.default.value if isinstance(f.default, enum.Enum) else f.default
        assert flag.default == (list(default) if isinstance(default, tuple) else default), path
    # every field has help; only Python-only fields are not flags
    assert {p for p, f in config.fields().items() if not f.metadata["cli"]} == {
        "suite.lr_schedule", "suite.phase_steps", "suite.factor_table", "text.pos_required", "dtype", "mesh"}
    assert all(f.metadata["help"].strip() for f in config.fields().values())


def test_flag_kinds_follow_the_field_types():
    fv = _fresh_flags()
    kinds = {n: fv[n].parser.flag_type() for n in ("sizes", "window", "overwrite", "compat", "kernel_form", "text")}
    assert kinds == {"sizes": "comma separated list of strings", "window": "int", "overwrite": "bool",
                     "compat": "string enum", "kernel_form": "string enum", "text": "string"}
    with pytest.raises(flags.IllegalFlagValueError):
        fv(["x", "--kernel_form=fast"])


def test_a_config_from_flags_round_trips():
    argv = ["--preset=", "--model_template=/m/{size}/{seed}/{step}", "--sizes=a,b", "--steps=0,4",
            "--seeds=1,x2", "--text=t.txt", "--tokenizer=tok.json", "--counts=c.npy", "--pos=none",
            "--vocab_size=99", "--window=64", "--overlap=16", "--kernel=naive", "--kernel_form=pair",
            "--vocab_chunk=128", "--position_block=8", "--nocache_logits", "--compat=paper", "--n_boot=7",
            "--out=o", "--overwrite", "--wait", "--cache_dir=/c", "--save_pair_positions"]
    cfg = _parse(argv)
    assert cfg == StudyConfig(
        suite=SuiteConfig(preset="", model_template="/m/{size}/{seed}/{step}", revision_template="",
                          sizes=("a", "b"), steps=(0, 4), seeds=(1, "x2")),
        text=TextConfig(text="t.txt", tokenizer="tok.json", counts="c.npy", pos="none", vocab_size=99),
        scoring=ScoringConfig(window=64, overlap=16),
        kernel=KernelConfig(kernel="naive", form="pair", vocab_chunk=128, position_block=8, cache_logits=False),
        analysis=AnalysisConfig(compat="paper", n_boot=7),
        output=OutputConfig(out="o", overwrite=True, wait=True, cache_dir="/c", save_pair_positions=True))
    assert cfg.analysis.compat is Compat.PAPER and f"{cfg.analysis.compat}" == "paper"
    # the config's own values, written back as flags, give the same config
    values = {name: config.get(cfg, path) for path, name in config.flag_names().items() if path in
              config_flags.cli_fields()}
    again = []
    for name, v in values.items():
        if isinstance(v, bool):
            again.append(f"--{'' if v else 'no'}{name}")
        elif v is not None:
            again.append(f"--{name}={','.join(map(str, v)) if isinstance(v, tuple) else v}")
    assert _parse(again) == cfg
    assert StudyConfig.from_flat(**values) == cfg


def test_defaults_and_the_cli_special_cases():
    cfg = _parse(["--text=t"])
    assert cfg == StudyConfig(text=TextConfig(text="t")) and not cfg.text.pos_required
    assert _parse(["--text=t", "--pos=stanza"]).text.pos_required  # given explicitly: stanza must work
    assert _parse(["--text=t", "--model_template=./m/{size}/{seed}"]).suite.revision_template == ""
    assert _parse(["--text=t", "--model_template=o/m-{size}-{seed}"]).suite.revision_template is None


@pytest.mark.parametrize("kw, match", [
    (dict(text=None), "--text: required"),
    (dict(preset="", sizes=("a",)), "--model_template, --steps, --seeds"),
    (dict(seeds=(1,)), "at least 2 seeds"),
    (dict(steps="0,x"), "--steps=0,x: not a comma list"),
    (dict(window=0), "window/overlap"),
    (dict(window=8, overlap=8), "window/overlap"),
    (dict(overlap=-1), "--overlap=-1"),
    (dict(mlm_scoring="half"), "--mlm_scoring"),
    (dict(kernel="fast"), "--kernel='fast'"),
    (dict(kernel_form="fast"), "--kernel_form='fast'"),
    (dict(vocab_chunk=0), "--vocab_chunk=0"),
    (dict(position_block=-2), "--position_block=-2"),
    (dict(n_boot=0), "--n_boot=0"),
    (dict(compat="papers"), "--compat='papers'"),
    (dict(compat="paper"), "--compat=paper needs --counts"),
    (dict(vocab_size=1), "--vocab_size=1"),
    (dict(out=""), "--out"),
    (dict(dtype="float64"), "dtype"),
    (dict(nope=1), "nope: not a setting"),
])
def test_bad_values_fail_when_the_config_is_built(kw, match):
    values = dict(text="t.txt")
    values.update(kw)
    with pytest.raises(SeedKLError, match=match):
        StudyConfig.from_flat(**values)


def test_a_resolved_suite_is_accepted():
    from seedkl_jax.study.suite import PRESETS, resolve_suite

    suite = PRESETS["polypythia"].override(sizes=("70m",), steps=(0, 1))
    cfg = StudyConfig(suite=suite, text=TextConfig(text="t"))
    assert isinstance(cfg.suite, SuiteConfig) and cfg.suite.preset == ""
    assert resolve_suite(cfg.suite) == suite and resolve_suite(cfg.suite).lr_schedule is suite.lr_schedule
    # its analysis-only parts (not part of Suite equality) survive too: the paper's phase lines, seed factors
    assert resolve_suite(cfg.suite).phase_steps == suite.phase_steps == (16, 256, 2000)
    decoupled = PRESETS["polypythia-160m-decoupled"].override(steps=(0, 1))
    again = resolve_suite(StudyConfig(suite=decoupled, text=TextConfig(text="t")).suite)
    assert again.seed_factors == decoupled.seed_factors and again.seed_factors
    by_flags = StudyConfig.from_flat(sizes="70m", steps="0,1", text="t")
    assert resolve_suite(by_flags.suite) == suite


def _other(path: str, value):
    """A valid value different from `value` for the setting at `path`."""
    f = config.fields()[path]
    if f.metadata.get("choices"):
        return next(c for c in f.metadata["choices"] if c != (value.value if hasattr(value, "value") else value))
    if isinstance(value, bool) or path in ("kernel.cache_logits", "text.pos_required"):
        return not value
    if path == "scoring.overlap":
        return 1
    if isinstance(value, int) or path in ("scoring.window", "text.vocab_size", "kernel.vocab_chunk",
                                          "kernel.position_block"):
        return (value or 100) + 1
    if path == "suite.steps":
        return (0, 5)
    if path == "measure.metrics":
        return ("kl", "js")
    if path == "measure.icl_positions":
        return (1, 2, 3)
    if isinstance(value, tuple) or path in ("suite.sizes", "suite.seeds"):
        return ("p", "q")
    if path == "dtype":
        return "bfloat16"
    if path == "suite.lr_schedule":
        return types.SimpleNamespace(peak=1.0)
    return f"{value or ''}other"


BASE = dict(text="t.txt", counts="c.npy", window=64, overlap=8)


def test_the_multihost_check_covers_every_shared_setting():
    from seedkl_jax.distributed import flags_digest

    base = StudyConfig.from_flat(**BASE)
    shared = config.agreement_values(base)
    per_process = {"output.wait", "output.cache_dir", "mesh"}
    assert set(config.fields()) - set(shared) == per_process
    # settings the hand-written check used to miss are covered now
    assert {"kernel.form", "analysis.compat", "text.pos", "text.vocab_size"} <= set(shared)
    names = {p: n for p, n in config.flag_names().items()}
    digest = flags_digest(base, "groups")
    assert flags_digest(base, "global") != digest
    for path in config.fields():
        node, _, leaf = path.rpartition(".")
        value = config.get(base, path)
        changed = dataclasses.replace(base, **({leaf: _other(path, value)} if not node else {
            node: dataclasses.replace(getattr(base, node), **{leaf: _other(path, value)})}))
        assert config.get(changed, path) != value, path
        if path in per_process:
            assert flags_digest(changed, "groups") == digest, path
        else:
            assert flags_digest(changed, "groups") != digest, f"--{names[path]} differs but is not caught"
    # the same relative path from another working folder is another file
    assert config.agreement_values(base)["text.text"].endswith("/t.txt")


def _settings(cfg):
    from seedkl_jax.study import run as study_run
    from seedkl_jax.study.suite import resolve_suite

    text = types.SimpleNamespace(source="t.txt", ids=np.arange(10), fingerprint=lambda: "sha-of-text")
    tok = types.SimpleNamespace(vocab_size=50, eos_id=0, vocab=None)
    return study_run._settings(cfg, resolve_suite(cfg.suite), text, tok)


def test_study_json_records_the_results_settings(tmp_path, monkeypatch):
    from seedkl_jax.study import checks, store

    monkeypatch.setattr(checks, "vocab_fingerprint", lambda t: "sha-of-vocab")
    counts = tmp_path / "c.npy"
    np.save(counts, np.ones(50))
    base = StudyConfig.from_flat(**{**BASE, "counts": str(counts)})
    settings = _settings(base)
    results = settings["results"]
    assert settings["format"] == store.SETTINGS_FORMAT and settings["annotation"] == {"pos": "stanza"}
    marked = {p for p, f in config.fields().items() if f.metadata["results"]}
    assert marked == {"suite.preset", "suite.model_template", "suite.revision_template", "suite.sizes",
                      "suite.steps", "suite.seeds", "text.text", "text.tokenizer", "text.counts",
                      "text.vocab_size", "scoring.window", "scoring.overlap", "scoring.mlm_scoring",
                      "analysis.compat", "dtype", "measure.metrics", "measure.save_topk", "measure.icl_text",
                      "measure.icl_positions", "measure.minimal_pairs"}
    assert set(results) == {"suite", "text", "scoring", "measure", "analysis", "dtype"}
    assert set(results["text"]) == {"text", "tokenizer", "counts", "vocab_size"}
    assert results["scoring"] == {"window": 64, "overlap": 8, "mlm_scoring": None}
    assert results["analysis"] == {"compat": "none"} and results["dtype"] == "float32"
    assert results["text"]["text"]["sha256"] == "sha-of-text" and len(results["text"]["counts"]["sha256"]) == 64
    assert results["suite"]["sizes"] == ["14m", "31m", "70m", "160m", "410m"]  # the resolved suite
    json.dumps(settings)  # JSON as written
    # a results setting changes what is recorded; a setting the groups do not depend on does not
    for flag, value in (("window", 32), ("compat", "paper"), ("vocab_size", 40), ("sizes", "70m")):
        assert _settings(StudyConfig.from_flat(**{**BASE, "counts": str(counts), flag: value}))["results"] != results
    for flag, value in (("n_boot", 5), ("kernel_form", "pair"), ("vocab_chunk", 64), ("save_pair_positions", True)):
        assert _settings(StudyConfig.from_flat(**{**BASE, "counts": str(counts), flag: value}))["results"] == results
    # another spelling of the same checkpoints records the same suite
    from seedkl_jax.study.suite import PRESETS
    spelled = StudyConfig.from_flat(suite=PRESETS["polypythia"], **{**BASE, "counts": str(counts)})
    assert _settings(spelled)["results"] == results


def test_an_out_from_an_older_layout_is_refused_clearly(tmp_path):
    from seedkl_jax.study import store

    (tmp_path / store.SETTINGS_FILE).write_text(json.dumps({"results": {"window": 8}, "annotation": {}}))
    store.save_group(tmp_path, "s", 0, [1, 2], {"kl": np.zeros((3, 2, 2), np.float32)})
    new = {"format": store.SETTINGS_FORMAT, "results": {"scoring": {"window": 8}}, "annotation": {}}
    with pytest.raises(SeedKLError, match="another seedkl version.*--overwrite"):
        store.claim(tmp_path, new, overwrite=False)
    store.claim(tmp_path, new, overwrite=True)  # --overwrite recomputes in it
    store.save_group(tmp_path, "s", 0, [1, 2], {"kl": np.zeros((3, 2, 2), np.float32)})
    store.claim(tmp_path, new, overwrite=False)  # the new layout resumes


def test_the_api_entry_points_turn_on_the_compilation_cache(monkeypatch):
    """The process-wide compile-cache setting is the entry points' choice (cli, api), not the study's."""
    from seedkl_jax import api
    from seedkl_jax.kernels import compare as compare_mod
    from seedkl_jax.study import run as study_run

    calls = []
    monkeypatch.setattr(compare_mod, "use_compilation_cache", lambda cache_dir=None: calls.append(cache_dir))
    monkeypatch.setattr(study_run, "run_study", lambda cfg, **kw: ("ran", cfg.output.cache_dir))
    cfg = StudyConfig.from_flat(text="t", cache_dir="/my/cache")
    assert api.run_study(cfg) == ("ran", "/my/cache") and calls == ["/my/cache"]
    assert api.StudyConfig is StudyConfig and not hasattr(api.StudyConfig, "__wrapped__")
    import inspect
    assert "use_compilation_cache" not in inspect.getsource(study_run)
