"""Fixed costs and options of the compute path (issue 12): kernel options reach the kernel from the
flags and StudyConfig, fp16/bf16 params stay half-size in the cache, and a second process reuses the
first one's compiled steps. No test here asserts a time."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from conftest import tiny_tokenizer
from seedkl_jax.convert import cache
from seedkl_jax.convert.loader import load

ROOT = Path(__file__).resolve().parents[1]


def test_kernel_flags_build_the_study_config(tmp_path):
    from absl import flags
    from absl.testing import flagsaver

    from seedkl_jax.cli import run as cli_run

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    common = dict(preset="", model_template=str(tmp_path / "{size}/seed{seed}/step{step}"), sizes=["a"],
                  steps=["0"], seeds=["1", "2"], text="eval.txt")
    with flagsaver.flagsaver(kernel="naive", kernel_form="pair", position_block=64, cache_logits=True, **common):
        cfg = cli_run.build_config()
    k = cfg.kernel
    assert (k.kernel, k.form, k.position_block, k.cache_logits) == ("naive", "pair", 64, True)
    with flagsaver.flagsaver(**common):
        cfg = cli_run.build_config()
    k = cfg.kernel
    assert (k.kernel, k.form, k.position_block, k.cache_logits) == ("fused", None, None, None)


def test_study_passes_kernel_options_to_compare(hf_checkpoint, tmp_path, monkeypatch):
    """StudyConfig's kernel fields arrive at compare_stacked unchanged, and the results are the
    same to float32 rounding whichever form computes them."""
    from seedkl_jax.kernels import compare as compare_mod
    from seedkl_jax.study.run import StudyConfig, run_study
    from seedkl_jax.study.suite import Suite

    tok = tiny_tokenizer(tmp_path / "tok")
    for seed in (1, 2):
        link = tmp_path / "suite" / f"seed{seed}" / "step0"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(hf_checkpoint(seed, tokenizer=tok, initializer_range=0.5), target_is_directory=True)
    (tmp_path / "eval.txt").write_text("the cat sat on the mat . the dog ran under the log , and sat .\n")
    suite = Suite(sizes=["tiny"], steps=[0], seeds=[1, 2], model_template=str(tmp_path / "suite/seed{seed}/step{step}"),
                  revision_template="")
    seen, real = [], compare_mod.compare_stacked

    def recording(*args, **kw):
        k = kw["kernel"]  # the resolved KernelConfig (kernels.compare.resolve_kernel, once per run)
        seen.append({"form": k.form, "position_block": k.position_block, "cache_logits": k.cache_logits,
                     "kernel": k.kernel})
        return real(*args, **kw)

    monkeypatch.setattr(compare_mod, "compare_stacked", recording)
    kl = {}
    for form, pb in (("pair", 4), ("onepass", 8)):
        out = tmp_path / f"out-{form}"
        run_study(StudyConfig.from_flat(suite=suite, text=str(tmp_path / "eval.txt"), out=str(out), pos="none",
                                        n_boot=10, kernel_form=form, position_block=pb, cache_logits=False),
                  progress=False)
        kl[form] = np.load(next((out / "groups").rglob("*.npz")))["kl"]
        timings = json.loads((out / "timings.json").read_text())
        assert {"params_wait_s", "compare_s", "save_s"} <= set(timings["groups"][0])
        assert timings["kernel_form"] == form  # the run records which form produced its numbers
    # once per run: the other --compat's unigram rides in the same pass at the first step (analysis/compat.py)
    assert seen == [{"form": "pair", "position_block": 4, "cache_logits": False, "kernel": "fused"},
                    {"form": "onepass", "position_block": 8, "cache_logits": False, "kernel": "fused"}]
    assert kl["pair"].max() > 0.01
    np.testing.assert_allclose(kl["onepass"], kl["pair"], rtol=0, atol=1e-5 * max(1.0, kl["pair"].max()))


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_half_precision_cache_entries_are_half_size(hf_checkpoint, tmp_path, fmt):
    full = load(str(hf_checkpoint(seed=5)), cache_dir=tmp_path / "c32")
    half = load(str(hf_checkpoint(seed=5, fmt=fmt)), cache_dir=tmp_path / "c16")
    size = lambda m: sum(f.stat().st_size for f in (Path(m.cache_entry) / "params").rglob("*") if f.is_file())
    assert cache.is_complete(Path(half.cache_entry)) and size(half) < 0.6 * size(full), (size(half), size(full))
    from seedkl_jax.kernels.compare import stack_params

    stacked = stack_params([half.params, half.params])  # upcast on device, exactly
    emb, emb_half = stacked["embed_in"]["embedding"], half.params["embed_in"]["embedding"]
    assert emb.dtype == np.float32 and emb_half.dtype == (np.float16 if fmt == "fp16" else ml_dtypes.bfloat16)
    np.testing.assert_array_equal(np.asarray(emb[1]), emb_half.astype(np.float32))


_SCRIPT = textwrap.dedent("""
    import sys, types
    import jax, numpy as np
    hits = []
    jax.monitoring.register_event_listener(
        lambda name, **kw: hits.append(1) if name == "/jax/compilation_cache/cache_hits" else None)
    from seedkl_jax.kernels.compare import compare  # the library's (api.compare is an entry point: it sets it)
    from seedkl_jax.models.gpt_neox import NeoXConfig, init_params
    cfg = NeoXConfig(vocab_size=96, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    models = [types.SimpleNamespace(params=jax.tree.map(np.asarray, init_params(cfg, jax.random.key(s))),
                                    config=cfg, name=str(s), revision=None, real_vocab_size=90) for s in (0, 1)]
    compare(models, np.arange(10) % 90, window=16, overlap=8)  # compare leaves the process setting alone
    untouched = jax.config.jax_compilation_cache_dir is None
    from seedkl_jax.kernels.compare import use_compilation_cache
    use_compilation_cache()  # what the entry points (cli, api) do
    out = compare(models, np.arange(40) % 90, window=16, overlap=8)
    print(untouched, jax.config.jax_compilation_cache_dir, len(hits), float(out["kl"].sum()))
""")


def test_second_process_reuses_the_compiled_step(tmp_path):
    env = {"SEEDKL_CACHE": str(tmp_path / "seedkl"), "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "PATH": "/usr/bin:/bin"}
    runs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs.append(proc.stdout.split())
    (untouched1, dir1, hits1, kl1), (_, dir2, hits2, kl2) = runs
    assert untouched1 == "True"
    assert dir1 == dir2 == str(tmp_path / "seedkl" / "xla") and any((tmp_path / "seedkl" / "xla").iterdir())
    assert int(hits1) == 0 and int(hits2) >= 1 and kl1 == kl2


def test_hard_linked_checkpoints_share_one_cache_copy(hf_checkpoint, tmp_path):
    """One checkpoint hard-linked as two steps: the second entry's params are links to the first's."""
    src = hf_checkpoint(seed=6)
    steps = []
    for step in (0, 1):
        d = tmp_path / f"step{step}"
        d.mkdir()
        for f in src.iterdir():
            os.link(f, d / f.name)
        steps.append(d)
    a, b = (load(str(d), cache_dir=tmp_path / "cache") for d in steps)
    assert a.cache_entry != b.cache_entry and cache.is_complete(Path(b.cache_entry))
    assert (a.source, b.source) == ("convert", "cache")  # the second is restored from the linked copy
    files = lambda m: sorted(f for f in (Path(m.cache_entry) / "params").rglob("*") if f.is_file())
    assert files(a) and all(x.stat().st_ino == y.stat().st_ino for x, y in zip(files(a), files(b)))
    again = load(str(steps[1]), cache_dir=tmp_path / "cache")
    assert again.source == "cache"
    for x, y in zip(jax_leaves(a.params), jax_leaves(again.params)):
        np.testing.assert_array_equal(x, y)


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def test_kernel_imports_nothing_from_data():
    """The compute path (kernels/) reads no tokenizer or text: not even a lazy import of data/."""
    for f in (ROOT / "seedkl_jax" / "kernels").glob("*.py"):
        assert "seedkl_jax.data" not in f.read_text(), f
