"""Fail before compute, never half-write (issue 13): up-front checkpoint checks, NaN weights, the lock
on --out, disk errors. Uses test_study's suite (2 sizes x 3 steps x 3 seeds), each broken variant a
folder of symlinks to its files with the damaged ones replaced."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from seedkl_jax.convert import cache
from seedkl_jax.errors import SeedKLError
from seedkl_jax.study import lock
from seedkl_jax.study.run import run_study
from conftest import lock_holder
from test_study import SEEDS, _cfg, _flagfile, lab  # noqa: F401  (lab: the module fixture)

ROOT = Path(__file__).resolve().parents[1]


def _variant(lab, root: Path, edit, suite=None):
    """The lab suite as symlinks under root; edit(size, step, seed, folder) may replace files."""
    suite = suite or lab["suite"]
    for size, step, seed, path, _ in suite.checkpoints():
        d = root / size / f"seed{seed}" / f"step{step}"
        d.mkdir(parents=True)
        for f in Path(path).iterdir():
            (d / f.name).symlink_to(f)
        edit(size, step, seed, d)
    return dataclasses.replace(suite, model_template=str(root / "{size}" / "seed{seed}" / "step{step}"))


def _own(d: Path, name: str) -> Path:
    """Replace the symlink d/name by a private copy of its file (to damage it)."""
    target = (d / name).resolve()
    (d / name).unlink()
    shutil.copy(target, d / name)
    return d / name


def _edit_config(d: Path, **changes):
    path = _own(d, "config.json")
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.fixture
def no_compute(monkeypatch):
    """Any checkpoint load or kernel call fails the test: the run must stop before compute."""
    from seedkl_jax.convert import loader
    from seedkl_jax.kernels import compare

    def boom(*a, **k):
        raise AssertionError("computed although the suite was broken")

    monkeypatch.setattr(loader, "load", boom)
    monkeypatch.setattr(compare, "compare_stacked", boom)


def _nothing_written(out: Path):
    assert not (out / "study.json").exists() and not list(out.rglob("*.npz")), sorted(out.rglob("*"))


# ---------------------------------------------------------------- up-front checks


def test_third_group_of_another_family_fails_fast_before_any_compute(lab, tmp_path, no_compute):
    assert lab["suite"].groups()[2] == ("s1", 64)
    def edit(size, step, seed, d):
        if (size, step, seed) == ("s1", 64, 2):
            _edit_config(d, model_type="llama")
    suite = _variant(lab, tmp_path / "suite", edit)
    out = tmp_path / "out"
    t0 = time.perf_counter()
    with pytest.raises(SeedKLError) as e:
        run_study(_cfg(lab, out, suite=suite), progress=False)
    assert time.perf_counter() - t0 < 5
    msg = str(e.value)
    assert "1 problem(s)" in msg and "model_type 'llama' is not supported (supported: bert, gpt2, gpt_neox)" in msg
    assert str(tmp_path / "suite" / "s1" / "seed2" / "step64" / "config.json") in msg
    assert "\n" not in msg
    _nothing_written(out)


def test_every_broken_checkpoint_is_listed_in_one_error(lab, tmp_path, no_compute):
    def edit(size, step, seed, d):
        if (size, step, seed) == ("s1", 4, 1):  # truncated weights
            f = _own(d, "model.safetensors")
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        elif (size, step, seed) == ("s2", 0, 3):  # another vocabulary
            _edit_config(d, vocab_size=lab["rows"] + 16)
        elif (size, step, seed) == ("s2", 64, 2):  # unreadable config
            _own(d, "config.json").write_text("{not json")
    suite = _variant(lab, tmp_path / "suite", edit)
    with pytest.raises(SeedKLError) as e:
        run_study(_cfg(lab, tmp_path / "out", suite=suite), progress=False)
    msg = str(e.value)
    assert "3 problem(s)" in msg, msg
    assert re.search(r"s1/seed1/step4/model.safetensors: truncated or corrupt \(\d+ bytes, its header needs \d+\)", msg)
    assert (f"size s2 step 0: seed 3 ({tmp_path / 'suite' / 's2' / 'seed3' / 'step0'}) differs from seed 1: "
            f"vocab_size {lab['rows']} vs {lab['rows'] + 16}") in msg
    assert "s2/seed2/step64/config.json: unreadable" in msg
    _nothing_written(tmp_path / "out")


def test_incomplete_shard_index_and_narrow_vocab_are_found(lab, tmp_path, hf_checkpoint, no_compute):
    sharded = hf_checkpoint(3, fmt="sharded", vocab_size=lab["rows"], hidden_size=16, num_hidden_layers=1,
                            num_attention_heads=2, intermediate_size=32)
    one = dataclasses.replace(lab["suite"], sizes=("s1",), steps=(0,))

    def edit(size, step, seed, d):
        if seed == 2:  # a sharded checkpoint whose index names a shard that is not there
            for f in d.iterdir():
                f.unlink()
            for f in sharded.iterdir():
                if f.name != sorted(sharded.glob("model-*.safetensors"))[-1].name:
                    (d / f.name).symlink_to(f)
        if seed == 3:
            _edit_config(d, vocab_size=8)
    suite = _variant(lab, tmp_path / "suite", edit, suite=one)
    with pytest.raises(SeedKLError) as e:
        run_study(_cfg(lab, tmp_path / "out", suite=suite), progress=False)
    msg = str(e.value)
    assert re.search(r"seed2/step0/model.safetensors.index.json: shard\(s\) model-\d+-of-\d+.safetensors missing", msg)
    assert f"vocab_size 8 but the tokenizer has {lab['tok'].vocab_size} ids" in msg


def test_window_longer_than_the_models_context(lab, tmp_path, no_compute):
    suite = _variant(lab, tmp_path / "suite", lambda size, step, seed, d: size == "s2" and _edit_config(
        d, max_position_embeddings=8))
    with pytest.raises(SeedKLError) as e:
        run_study(_cfg(lab, tmp_path / "out", suite=suite, window=1024, overlap=512), progress=False)
    span = min(1024, len(lab["ids"]) - 1)
    assert (f"--window=1024: the text is scored in windows of {span} tokens, longer than the 8-token "
            "context of size s2") in str(e.value) and "pass --window=8 or less" in str(e.value)
    assert str(e.value).count("--window=1024") == 1  # once per size, not per checkpoint


def test_safetensors_header_check_accepts_good_files(hf_checkpoint):
    from seedkl_jax.hf import checks

    for fmt in ("safetensors", "sharded", "bin", "bf16"):
        assert checks.weights_problems(hf_checkpoint(3, fmt=fmt)) == [], fmt


# ---------------------------------------------------------------- NaN weights


def test_nan_weights_name_the_checkpoint_and_drop_its_cache_entry(lab, tmp_path):
    one = dataclasses.replace(lab["suite"], sizes=("s1",), steps=(4,))

    def edit(size, step, seed, d):
        if seed == 2:
            sd = load_file(d / "model.safetensors")
            sd["gpt_neox.final_layer_norm.weight"][3] = np.nan
            (d / "model.safetensors").unlink()
            save_file(sd, d / "model.safetensors")
    suite = _variant(lab, tmp_path / "suite", edit, suite=one)
    cache_dir = tmp_path / "cache"
    with pytest.raises(SeedKLError) as e:
        run_study(_cfg(lab, tmp_path / "out", suite=suite, cache_dir=str(cache_dir)), progress=False)
    path = tmp_path / "suite" / "s1" / "seed2" / "step4"
    assert f"size s1 step 4 seed 2 ({path}): NaN/inf weights in " in str(e.value)
    assert "params-cache entry was dropped" in str(e.value)
    cached = {r["model"] for r in cache.entries(cache_dir)}
    assert str(path) not in cached and str(tmp_path / "suite" / "s1" / "seed1" / "step4") in cached


# ---------------------------------------------------------------- one writer per --out


def test_a_locked_out_is_refused_and_a_dead_holders_lock_is_not(lab, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with lock.hold(out):
        with pytest.raises(SeedKLError, match=rf"--out={out}: another seedkl run \(pid {os.getpid()}\) is writing"):
            run_study(_cfg(lab, out), progress=False)
    _nothing_written(out)
    # a holder killed with SIGKILL leaves the lock file, never the lock
    holder = lock_holder(out, 600)
    with pytest.raises(SeedKLError, match=rf"pid {holder.pid}\)"):
        with lock.hold(out):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    assert (out / lock.LOCK_FILE).exists()
    with lock.hold(out):
        pass


def test_wait_queues_behind_the_holder(tmp_path, capfd):
    out = tmp_path / "out"
    out.mkdir()
    holder = lock_holder(out, 3)
    t0 = time.perf_counter()
    with lock.hold(out, wait=True):
        assert time.perf_counter() - t0 > 1.5  # got the lock only once the holder let go (after ~3 s)
    assert f"waiting for the other run (pid {holder.pid})" in capfd.readouterr().err
    holder.wait(timeout=60)


def _cli(args: list[str], env_extra: dict | None = None) -> subprocess.Popen:
    code = "import sys; from seedkl_jax.cli import main; sys.exit(main(['seedkl', *sys.argv[1:]]))"
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, env=dict(os.environ, **(env_extra or {})),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _report_is_complete(out: Path):
    report = (out / "report.md").read_text()
    figures = re.findall(r"\]\((figures/[^)]+)\)", report)
    assert figures and all((out / f).is_file() for f in figures), figures
    assert sorted(str(p.relative_to(out)) for p in out.glob("figures/*")) == sorted(set(figures))
    assert not list(out.glob(".staging*")) and not list(out.rglob("*.tmp"))


def test_two_concurrent_runs_into_one_out(lab, tmp_path):
    out = tmp_path / "out"
    flagfile = _flagfile(lab, out)
    flagfile.write_text(flagfile.read_text().replace("--steps=0,4,64", "--steps=0,4"))
    runs = [_cli(["run", f"--flagfile={flagfile}"]) for _ in range(2)]
    results = [(p.wait(timeout=900), *p.communicate()) for p in runs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], [r[2][-2000:] for r in results]
    loser = next(r for r in results if r[0] == 2)
    [line] = [ln for ln in loser[2].splitlines() if ln.strip()]  # the loser stops before any progress bar
    winner = runs[[r[0] for r in results].index(0)]
    assert f"seedkl run: error: --out={out}: another seedkl run (pid {winner.pid}) is writing to it" in line
    _report_is_complete(out)


# ---------------------------------------------------------------- disk and filesystem errors


LIMITED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
from seedkl_jax.cli import main
sys.exit(main(['seedkl', *sys.argv[2:]]))
"""


def _limited(limit: int, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LIMITED, str(limit), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)


def _snapshot(out: Path) -> dict:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_disk_full_while_writing_outputs_keeps_the_previous_ones(lab, tmp_path):
    out = tmp_path / "out"
    one = dataclasses.replace(lab["suite"], sizes=("s1",), steps=(0, 4))
    run_study(_cfg(lab, out, suite=one), progress=False)
    before = _snapshot(out)
    flagfile = _flagfile(lab, out)
    flags = flagfile.read_text().replace("--sizes=s1,s2", "--sizes=s1").replace("--steps=0,4,64", "--steps=0,4")
    flagfile.write_text(flags.replace("--save_pair_positions\n", ""))
    r = _limited(3000, ["run", f"--flagfile={flagfile}"])  # every group is done: only the outputs are written
    assert r.returncode == 2, r.stderr[-3000:]
    [line] = [ln for ln in r.stderr.splitlines() if "error" in ln.lower()]  # (and the progress bar)
    assert "Traceback" not in r.stderr and line.startswith("seedkl run: error: "), line
    assert "File too large" in line and "ulimit -f" in line, line
    after = _snapshot(out)
    after.pop(lock.LOCK_FILE), before.pop(lock.LOCK_FILE)
    assert after == before  # every previous output byte for byte, nothing staged left


def test_disk_full_while_caching_params_leaves_no_partial_entry(lab, tmp_path):
    cache_dir = tmp_path / "cache"
    ckpt, _ = lab["suite"].checkpoint("s2", 0, 1)
    r = _limited(20_000, ["convert", f"--model={ckpt}", f"--cache_dir={cache_dir}"])
    assert r.returncode == 2, r.stderr[-3000:]
    errors = [ln for ln in r.stderr.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1 and f"params cache {cache_dir}: File too large" in errors[0], r.stderr[-3000:]
    assert "the partial entry was removed" in errors[0]
    assert list((cache_dir / "models").iterdir()) == []


def test_cache_dir_that_is_a_file(lab, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SeedKLError, match=rf"params cache {tmp_path / 'file'}: .* is a file, not a folder"):
        run_study(_cfg(lab, tmp_path / "out", cache_dir=str(tmp_path / "file")), progress=False)
    _nothing_written(tmp_path / "out")


def test_seedkl_cache_pointing_at_a_file_while_storing_is_one_line(hf_checkpoint, tmp_path, monkeypatch):
    from seedkl_jax.convert.loader import load

    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("SEEDKL_CACHE", str(tmp_path / "file"))
    with pytest.raises(SeedKLError) as e:
        load(str(hf_checkpoint(3)))
    assert str(e.value).startswith(f"params cache {tmp_path / 'file'}: Not a directory (a part of the path is a file")
    assert "$SEEDKL_CACHE" in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- progress, leftovers


def test_loading_and_converting_checkpoints_shows_progress(lab, tmp_path, capsys):
    one = dataclasses.replace(lab["suite"], sizes=("s1",), steps=(0,))
    run_study(_cfg(lab, tmp_path / "out", suite=one, cache_dir=str(tmp_path / "cache")), progress=True)
    err = capsys.readouterr().err.replace("\r", "\n")
    frames = [f for f in err.splitlines() if f.startswith("params s1 step 0")]
    assert any(f" {len(SEEDS)}/{len(SEEDS)} " in f and "convert" in f for f in frames), frames[-3:]


def test_a_killed_runs_staging_folder_is_removed_by_the_next_run(lab, tmp_path):
    out = tmp_path / "out"
    one = dataclasses.replace(lab["suite"], sizes=("s1",), steps=(0,))
    (out / ".staging-999999999" / "figures").mkdir(parents=True)  # what a run killed while staging leaves
    (out / ".staging-999999999" / "report.md").write_text("half")
    run_study(_cfg(lab, out, suite=one), progress=False)
    assert not list(out.glob(".staging*")) and "half" not in (out / "report.md").read_text()


def test_hub_checkpoints_are_checked_from_their_config_alone(tmp_path, monkeypatch, hf_checkpoint):
    """A hub suite: config.json and the file list come from the hub (faked); no weights are fetched."""
    import huggingface_hub as hf
    import types

    from seedkl_jax.study import checks
    from seedkl_jax.study.suite import Suite

    good = json.loads((hf_checkpoint(3) / "config.json").read_text())
    (tmp_path / "good.json").write_text(json.dumps(good))
    (tmp_path / "llama.json").write_text(json.dumps(dict(good, model_type="llama")))
    fetched = []

    def model_info(self, repo_id, revision=None, **kw):
        files = ["config.json"] + ([] if revision == "step2" else ["model.safetensors"])
        return types.SimpleNamespace(sha=f"{repo_id}@{revision}", siblings=[types.SimpleNamespace(rfilename=f)
                                                                            for f in files])

    def hf_hub_download(repo_id, filename, revision=None, **kw):
        fetched.append(filename)
        return str(tmp_path / ("llama.json" if revision == "Org/m-seed2@step1" else "good.json"))

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hf, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(hf.HfApi, "model_info", model_info)
    monkeypatch.setattr(hf, "hf_hub_download", hf_hub_download)
    suite = Suite(sizes=("m",), steps=(1, 2), seeds=(1, 2), model_template="Org/{size}-seed{seed}",
                  revision_template="step{step}")
    with pytest.raises(SeedKLError) as e:
        checks.check_suite(suite, vocab_size=16, n_tokens=10, window=2048, cache_dir=tmp_path / "c")
    msg = str(e.value)
    assert "Org/m-seed2@step1: " in msg and "model_type 'llama' is not supported" in msg
    assert msg.count("no model.safetensors / pytorch_model.bin weights") == 2  # both seeds of step 2
    assert set(fetched) == {"config.json"}
