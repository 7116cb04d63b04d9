"""Checkpoint conversion: formats, dtypes, the orbax cache (hits, invalidation, crashes), the hub
path (faked in-process, and a dead endpoint), bad inputs and the `seedkl convert` CLI."""
import json
import os
import shutil
import socket
import subprocess
import sys
import types
from pathlib import Path

import huggingface_hub
import jax
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from seedkl_jax.convert import cache, loader, weights
from seedkl_jax.convert.loader import load
from seedkl_jax.errors import SeedKLError

ROOT = Path(__file__).resolve().parents[1]


def _leaves(params):
    return jax.tree_util.tree_leaves_with_path(params)


def _assert_same_params(a, b):
    la, lb = _leaves(a), _leaves(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (path, x), (_, y) in zip(la, lb):
        assert x.dtype == y.dtype and np.array_equal(x, y), jax.tree_util.keystr(path)


def _entries(cache_dir: Path) -> list[Path]:
    """Complete cache entries under `cache_dir`."""
    models = Path(cache_dir) / "models"
    return [p for p in models.iterdir() if cache.is_complete(p)] if models.is_dir() else []


def _copy(ckpt: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(ckpt, tmp_path / "ckpt"))


# --------------------------------------------------------------------------- formats

def test_formats_give_identical_params(hf_checkpoint, tmp_path):
    st, sharded, bin_ = (hf_checkpoint(seed=3, fmt=f) for f in ("safetensors", "sharded", "bin"))
    assert len(list(sharded.glob("model-*-of-*.safetensors"))) > 1
    assert (bin_ / "pytorch_model.bin").is_file() and not list(bin_.glob("*.safetensors"))
    ref = load(str(st), cache_dir=tmp_path)
    for other in (sharded, bin_):
        m = load(str(other), cache_dir=tmp_path)
        assert m.source == "convert" and m.config == ref.config
        _assert_same_params(ref.params, m.params)
    # and the params are the checkpoint's tensors (transposed to [in, out]), not e.g. all zeros
    sd = load_file(st / "model.safetensors")
    np.testing.assert_array_equal(ref.params["layers"]["attn"]["qkv"]["kernel"][1],
                                  sd["gpt_neox.layers.1.attention.query_key_value.weight"].T)


@pytest.mark.parametrize("fmt,np_dtype", [("fp16", np.float16), ("bf16", ml_dtypes.bfloat16)])
def test_half_precision_checkpoints_keep_their_dtype(hf_checkpoint, fmt, np_dtype):
    """fp16/bf16 weights stay in their dtype (exactly the stored values) in params and cache."""
    ref = load(str(hf_checkpoint(seed=3)))
    half = load(str(hf_checkpoint(seed=3, fmt=fmt)))
    assert json.loads((hf_checkpoint(seed=3, fmt=fmt) / "config.json").read_text())["dtype"] != "float32"
    assert str(half.hf_config.dtype).endswith("float32")
    expected = jax.tree.map(lambda a: a.astype(np_dtype), ref.params)
    _assert_same_params(expected, half.params)
    _assert_same_params(expected, load(str(hf_checkpoint(seed=3, fmt=fmt))).params)  # from the cache


def test_old_pythia_style_config(hf_checkpoint, tmp_path):
    """Pythia's config.json (transformers 4.24): rotary_pct/rotary_emb_base keys, torch_dtype float16."""
    ckpt = _copy(hf_checkpoint(seed=3, rotary_pct=0.5, rotary_emb_base=500), tmp_path)
    config = json.loads((ckpt / "config.json").read_text())
    rope = config.pop("rope_parameters")
    config.pop("dtype")
    config.update(rotary_pct=rope["partial_rotary_factor"], rotary_emb_base=rope["rope_theta"],
                  torch_dtype="float16", transformers_version="4.24.0")
    (ckpt / "config.json").write_text(json.dumps(config))
    m = load(str(ckpt))
    assert (m.config.rotary_pct, m.config.rotary_emb_base) == (0.5, 500.0)
    assert str(m.hf_config.dtype).endswith("float32")
    assert m.params["embed_in"]["embedding"].dtype == np.float32


# --------------------------------------------------------------------------- cache

def test_second_load_restores_from_cache(hf_checkpoint, tmp_path, monkeypatch):
    ckpt = hf_checkpoint(seed=4)
    first = load(str(ckpt), cache_dir=tmp_path)
    assert first.source == "convert"

    def no_conversion(*args, **kwargs):
        raise AssertionError("re-converted although the cache holds this checkpoint")

    monkeypatch.setattr(weights, "read_state_dict", no_conversion)
    monkeypatch.setattr(loader, "convert", no_conversion)
    second = load(str(ckpt), cache_dir=tmp_path)
    assert second.source == "cache"
    assert second.cache_entry == first.cache_entry and second.local_dir == str(ckpt)
    assert second.config == first.config and second.hf_config.to_dict() == first.hf_config.to_dict()
    _assert_same_params(first.params, second.params)
    ids = np.arange(24).reshape(2, 12)
    np.testing.assert_array_equal(first.logits(ids), second.logits(ids))
    # a different dtype is a different entry
    monkeypatch.undo()
    assert load(str(ckpt), cache_dir=tmp_path, dtype="bfloat16").source == "convert"
    assert len(_entries(tmp_path)) == 2


def test_default_cache_dir_is_seedkl_cache_env(hf_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("SEEDKL_CACHE", str(tmp_path / "env-cache"))
    m = load(str(hf_checkpoint(seed=4)))
    assert Path(m.cache_entry).parent == tmp_path / "env-cache" / "models"
    assert _entries(tmp_path / "env-cache") == [Path(m.cache_entry)]


def test_changed_checkpoint_is_reconverted(hf_checkpoint, tmp_path):
    ckpt = _copy(hf_checkpoint(seed=4), tmp_path)
    old = load(str(ckpt), cache_dir=tmp_path / "c")
    shutil.copy(hf_checkpoint(seed=5) / "model.safetensors", ckpt / "model.safetensors")
    new = load(str(ckpt), cache_dir=tmp_path / "c")
    assert new.source == "convert" and new.cache_entry != old.cache_entry
    assert not np.array_equal(old.params["embed_in"]["embedding"], new.params["embed_in"]["embedding"])
    assert _entries(tmp_path / "c") == [Path(new.cache_entry)]  # the stale entry is gone


def test_killed_writer_leaves_no_valid_entry(hf_checkpoint, tmp_path):
    """A process killed just before the completion marker: its files stay, but never load."""
    ckpt, cache_dir = hf_checkpoint(seed=4), tmp_path / "c"
    script = ("import os, sys\nfrom seedkl_jax.convert import cache, loader\n"
              "cache._finish = lambda *a: os._exit(9)\n"
              "loader.load(sys.argv[1], cache_dir=sys.argv[2])\n")
    proc = subprocess.run([sys.executable, "-c", script, str(ckpt), str(cache_dir)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 9, proc.stderr[-2000:]
    leftovers = list((cache_dir / "models").iterdir())
    assert leftovers and all(p.name.startswith(".tmp-") for p in leftovers)
    assert list(leftovers[0].glob("params/*"))  # the crash really was mid-write
    assert _entries(cache_dir) == []
    m = load(str(ckpt), cache_dir=cache_dir)
    assert m.source == "convert" and _entries(cache_dir) == [Path(m.cache_entry)]
    assert not list((cache_dir / "models").glob(".tmp-*"))  # the dead writer's folder went with that store


def test_disk_full_inside_orbax_is_one_line_and_leaves_nothing(hf_checkpoint, tmp_path, monkeypatch):
    """orbax/tensorstore report a full disk as a ValueError carrying the errno in its text."""
    def full(*a, **k):
        raise ValueError('OUT_OF_RANGE: Error writing "embed_in/0.0" in OCDBT database: Failed to write '
                         "338165 bytes to file 14: No space left on device [os_error_code='28']")

    monkeypatch.setattr(cache, "_checkpointer", lambda: types.SimpleNamespace(save=full))
    with pytest.raises(SeedKLError) as e:
        load(str(hf_checkpoint(seed=4)), cache_dir=tmp_path / "c")
    assert str(e.value).startswith(f"params cache {tmp_path / 'c'}: No space left on device (the disk is full")
    assert "partial entry was removed" in str(e.value)
    assert list((tmp_path / "c" / "models").iterdir()) == []


def test_entry_without_marker_is_not_loaded(hf_checkpoint, tmp_path, monkeypatch):
    ckpt, cache_dir = hf_checkpoint(seed=4), tmp_path / "c"
    entry = Path(load(str(ckpt), cache_dir=cache_dir).cache_entry)
    (entry / cache.MARKER).unlink()  # as if the marker was never written
    assert cache.restore(entry) is None
    m = load(str(ckpt), cache_dir=cache_dir)
    assert m.source == "convert" and cache.is_complete(entry)

    # a failure while writing leaves nothing behind at all
    shutil.rmtree(cache_dir)
    monkeypatch.setattr(cache, "_finish", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        load(str(ckpt), cache_dir=cache_dir)
    assert list((cache_dir / "models").iterdir()) == []


# --------------------------------------------------------------------------- hub (faked / dead)

def _fake_hub(monkeypatch, snapshot: Path, downloaded: list):
    def model_info(self, repo_id, revision=None, timeout=None, **kw):
        assert (repo_id, revision) == ("Org/tiny-seed1", "step8")
        return types.SimpleNamespace(sha="0" * 40, siblings=[types.SimpleNamespace(rfilename=p.name)
                                                             for p in snapshot.iterdir()])

    def hf_hub_download(repo_id, filename, revision=None, **kw):
        downloaded.append(filename)
        return str(snapshot / filename)

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)


def test_hub_download_then_offline_cache_hit(hf_checkpoint, tmp_path, monkeypatch):
    snapshot = _copy(hf_checkpoint(seed=6, tokenizer="tiny"), tmp_path)
    shutil.copy(hf_checkpoint(seed=6, fmt="bin") / "pytorch_model.bin", snapshot)
    downloaded = []
    _fake_hub(monkeypatch, snapshot, downloaded)
    m = load("Org/tiny-seed1@step8", cache_dir=tmp_path / "c")
    assert (m.name, m.revision, m.source) == ("Org/tiny-seed1", "step8", "convert")
    assert sorted(downloaded) == ["config.json", "model.safetensors", "tokenizer.json"]  # no .bin
    assert m.local_dir == m.cache_entry and (Path(m.local_dir) / "tokenizer.json").is_file()
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", None)  # any hub call would now fail
    again = load("Org/tiny-seed1", revision="step8", cache_dir=tmp_path / "c")
    assert again.source == "cache"
    _assert_same_params(m.params, again.params)


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_convert(hf_checkpoint, tmp_path):
    """`seedkl convert` fills the cache and says where; a dead hub is a one-line error, exit 2."""
    ckpt, cache_dir = hf_checkpoint(seed=4), tmp_path / "c"
    cmd = [sys.executable, "-c", "import sys; from seedkl_jax.cli import main; sys.exit(main())",
           "convert", f"--cache_dir={cache_dir}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run(cmd + [f"--model={ckpt}"], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    [entry] = _entries(cache_dir)
    assert f"cache entry: {entry}" in ok.stdout and "converted" in ok.stdout
    assert "tensor" in ok.stderr  # the progress bar
    assert load(str(ckpt), cache_dir=cache_dir).source == "cache"

    dead = {**env, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{_dead_port()}",
            "HF_HOME": str(tmp_path / "hf")}
    bad = subprocess.run(cmd + ["--model=EleutherAI/pythia-14m", "--revision=step1"], cwd=ROOT,
                         env=dead, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    [line] = [ln for ln in bad.stderr.splitlines() if "error" in ln]
    assert "EleutherAI/pythia-14m@step1" in line and "hub was unreachable" in line
    assert "local checkpoint directory" in line
    assert _entries(cache_dir) == [entry]


# --------------------------------------------------------------------------- bad inputs

def _rewrite_weights(ckpt: Path, edit):
    sd = load_file(ckpt / "model.safetensors")
    edit(sd)
    save_file(sd, ckpt / "model.safetensors")


def _truncate(path: Path, keep: float = 0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _edit(change):
    """A bad-input case that damages the copied checkpoint, then loads it."""
    def make(ckpt, tmp_path):
        change(ckpt)
        return str(ckpt), {}
    return make


BAD = {  # case -> (make(ckpt copy, tmp_path) -> (model, load kwargs), expected message regex)
    "missing path": (lambda c, t: (str(t / "nope" / "ckpt"), {}), "no such directory"),
    "revision on a local dir": (lambda c, t: (str(c), {"revision": "step1"}), "takes no revision"),
    "conflicting revisions": (lambda c, t: ("Org/m@step1", {"revision": "step2"}), "contradicts"),
    "bad dtype": (lambda c, t: (str(c), {"dtype": "float16"}), "dtype='float16': not supported"),
    "no config.json": (_edit(lambda c: (c / "config.json").unlink()), "no config.json"),
    "no weights": (_edit(lambda c: (c / "model.safetensors").unlink()), "no weights"),
    "unsupported family": (_edit(lambda c: (c / "config.json").write_text('{"model_type": "llama"}')),
                           r"model_type 'llama' is not supported \(supported: bert, gpt2, gpt_neox\)"),
    "truncated safetensors": (_edit(lambda c: _truncate(c / "model.safetensors")),
                              "truncated or corrupt.*re-download"),
    "missing tensor": (_edit(lambda c: _rewrite_weights(
        c, lambda sd: sd.pop("gpt_neox.layers.1.mlp.dense_4h_to_h.bias"))),
        r"missing 1 tensors.*dense_4h_to_h\.bias"),
    "extra tensor": (_edit(lambda c: _rewrite_weights(c, lambda sd: sd.update(stray=np.zeros(3, np.float32)))),
                     r"unexpected 1 tensors.*stray"),
    "mis-shaped tensor": (_edit(lambda c: _rewrite_weights(
        c, lambda sd: sd.update({"gpt_neox.final_layer_norm.bias": np.zeros(7, np.float32)}))),
        r"mis-shaped gpt_neox\.final_layer_norm\.bias \(7,\)"),
    "hub offline": (lambda c, t: ("EleutherAI/pythia-70m-seed3@step1000", {}),
                    "EleutherAI/pythia-70m-seed3@step1000: not a local directory, and the Hugging Face "
                    "hub was unreachable.*pass a local checkpoint directory"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_raises_clear_error_and_caches_nothing(hf_checkpoint, tmp_path, case):
    make, pattern = BAD[case]
    ckpt = _copy(hf_checkpoint(seed=7), tmp_path)
    model, kwargs = make(ckpt, tmp_path)
    with pytest.raises(SeedKLError, match=pattern) as err:
        load(model, cache_dir=tmp_path / "c", **kwargs)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "c").exists() or _entries(tmp_path / "c") == []


def test_truncated_pytorch_bin(hf_checkpoint, tmp_path):
    ckpt = _copy(hf_checkpoint(seed=7, fmt="bin"), tmp_path)
    _truncate(ckpt / "pytorch_model.bin", 0.7)
    with pytest.raises(SeedKLError, match="pytorch_model.bin: unreadable.*truncated or corrupt"):
        load(str(ckpt), cache_dir=tmp_path / "c")
    assert _entries(tmp_path / "c") == []


def test_missing_shard(hf_checkpoint, tmp_path):
    ckpt = _copy(hf_checkpoint(seed=3, fmt="sharded"), tmp_path)
    next(ckpt.glob("model-*-of-*.safetensors")).unlink()
    with pytest.raises(SeedKLError, match=r"model.safetensors.index.json: shard\(s\) .* missing"):
        load(str(ckpt), cache_dir=tmp_path / "c")


def test_hub_revision_not_found(tmp_path, monkeypatch):
    def model_info(self, repo_id, revision=None, **kw):
        response = types.SimpleNamespace(headers={}, request=None, status_code=404)
        raise huggingface_hub.errors.RevisionNotFoundError("404 Revision Not Found", response=response)

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    with pytest.raises(SeedKLError, match=r"EleutherAI/pythia-14m@step7: revision 'step7' not found"):
        load("EleutherAI/pythia-14m", "step7", cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_damaged_entry_is_reconverted(hf_checkpoint, tmp_path):
    ckpt, cache_dir = hf_checkpoint(seed=4), tmp_path / "c"
    first = load(str(ckpt), cache_dir=cache_dir)
    shutil.rmtree(Path(first.cache_entry) / "params")  # e.g. a partial cleanup by hand
    with pytest.warns(UserWarning, match=r"is corrupt \(params/.* is missing\): dropped"):
        again = load(str(ckpt), cache_dir=cache_dir)
    assert again.source == "convert" and again.cache_entry == first.cache_entry
    _assert_same_params(first.params, again.params)
    assert load(str(ckpt), cache_dir=cache_dir).source == "cache"


def test_config_read_directly_equals_transformers(hf_checkpoint, tmp_path):
    """NeoXConfig is built from config.json without transformers: the same as from transformers' own
    reading of it (its to_dict, every field filled), for the v5 layout that save_pretrained writes and
    for Pythia's v4 layout; a config that lacks a field gets transformers' default."""
    from transformers import GPTNeoXConfig

    from seedkl_jax.hf.families import config_dict, model_config

    via_transformers = lambda config: model_config(GPTNeoXConfig.from_dict(dict(config)).to_dict(), "x")
    v5 = json.loads((hf_checkpoint(seed=3, rotary_pct=0.5, rotary_emb_base=500) / "config.json").read_text())
    rope = v5["rope_parameters"]
    v4 = {k: v for k, v in v5.items() if k not in ("rope_parameters", "dtype")}
    v4.update(rotary_pct=rope["partial_rotary_factor"], rotary_emb_base=rope["rope_theta"])
    for config in (v5, v4):
        assert model_config(config, "x") == via_transformers(config)
    assert model_config(v4, "x").rotary_pct == 0.5
    partial = {k: v for k, v in v4.items() if k != "layer_norm_eps"}
    assert model_config(partial, "x") == via_transformers(partial)
    bare = {"model_type": "gpt_neox", "hidden_size": 64, "num_attention_heads": 4}  # transformers' defaults
    assert model_config(bare, "x") == via_transformers(bare)
    cfg = model_config(v5, "x")
    assert model_config(config_dict(cfg), "x") == cfg == via_transformers(config_dict(cfg))  # written, read back
    with pytest.raises(SeedKLError, match="x:"):
        model_config(dict(v5, hidden_size=30), "x")  # not divisible by the heads


def test_cache_hit_does_not_import_transformers(hf_checkpoint, tmp_path):
    ckpt = hf_checkpoint(seed=4)
    load(str(ckpt), cache_dir=tmp_path)  # convert + store
    code = (f"import sys; from seedkl_jax.convert.loader import load; "
            f"m = load({str(ckpt)!r}, cache_dir={str(tmp_path)!r}); assert m.source == 'cache'; "
            "print(sorted(k for k in ('transformers', 'torch') if k in sys.modules)); "
            "print(type(m.hf_config).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=os.environ | {"JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:2] == ["[]", "GPTNeoXConfig"]  # hf_config still there, on demand


def test_entries_of_an_older_params_layout_miss(hf_checkpoint, tmp_path, monkeypatch):
    """The cache key carries the params layout version: an entry written under another layout (e.g. the
    flat pre-Flax NeoX tree) is never restored, and converting again replaces it."""
    ckpt = hf_checkpoint(seed=4)
    monkeypatch.setattr(cache, "LAYOUT_VERSION", 1)
    old = load(str(ckpt), cache_dir=tmp_path)
    monkeypatch.undo()
    new = load(str(ckpt), cache_dir=tmp_path)
    assert new.source == "convert" and new.cache_entry != old.cache_entry
    assert _entries(tmp_path) == [Path(new.cache_entry)]  # the old-layout entry is gone
    assert load(str(ckpt), cache_dir=tmp_path).source == "cache"


def _imports(path: Path) -> set[str]:
    """seedkl_jax modules a file imports (at the top or inside functions)."""
    import ast

    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m.startswith("seedkl_jax.")}


def test_layers_below_kernels_and_data_do_not_reach_up():
    """models -> hf -> convert -> kernels | data: convert/ imports neither kernels/ nor data/, hf/ nothing
    above it, models/ no family-module -> registry loop, data/tokenizer.py hf/ rather than convert/."""
    import seedkl_jax

    pkg = Path(seedkl_jax.__file__).parent
    above = {"models": ("hf", "convert", "kernels", "data", "study"), "hf": ("convert", "kernels", "data", "study"),
             "convert": ("kernels", "data", "study", "analysis", "report")}
    for layer, banned in above.items():
        for f in sorted((pkg / layer).glob("*.py")):
            bad = [m for m in _imports(f) if m.split(".")[1] in banned]
            assert not bad, (f, bad)
    for f in sorted((pkg / "models").glob("*.py")):
        if f.name not in ("family.py", "__init__.py"):
            assert not [m for m in _imports(f) if m.startswith("seedkl_jax.models.family")], f
    tok = _imports(pkg / "data" / "tokenizer.py")
    assert any(m.startswith("seedkl_jax.hf") for m in tok) and not any(m.startswith("seedkl_jax.convert") for m in tok)
