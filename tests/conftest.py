"""Shared pytest helpers for seedkl_jax: every test file may use these (keep this file small).

Environment, set here before any test imports jax or huggingface_hub:
    JAX_PLATFORMS=cpu, JAX_DEFAULT_MATMUL_PRECISION=highest   exact float32 matmuls on CPU
    HF_HUB_OFFLINE=1   no test touches the network (a test that needs a dead hub sets its own env)
    SEEDKL_CACHE       a fresh directory per test (autouse fixture), never ~/.cache/seedkl;
                       pass cache_dir=... explicitly to share a cache across a test's loads

Names:
    SHARED                  Path of ../shared beside the project root (may be absent)
    shared_or_skip          fixture -> SHARED, or skips the test when ../shared is absent
    shared_path(rel)        -> SHARED / rel, or pytest.skip when that file is missing
    TINY, PYTHIA_14M        transformers.GPTNeoXConfig kwargs: a tiny shape (vocab 512, width 64,
                            2 layers) and the pythia-14m shape (vocab 50,304, width 128, 6 layers)
    hf_checkpoint           session fixture -> make(seed=0, *, fmt="safetensors", tokenizer=None,
                            **config) -> Path of a HF checkpoint dir:
        a random-init transformers.GPTNeoXForCausalLM (torch.manual_seed(seed); config = TINY
        updated by **config, e.g. make(**PYTHIA_14M) or make(use_parallel_residual=False))
        saved with save_pretrained. Same seed and config -> same weights in every fmt:
          "safetensors"  model.safetensors (float32)
          "sharded"      model-0000k-of-0000n.safetensors + model.safetensors.index.json
          "bin"          pytorch_model.bin (torch.save, plus old Pythia's rotary/mask buffers)
          "fp16", "bf16" model.safetensors in that dtype (config says so too)
        tokenizer: None | "tiny" (tiny_tokenizer) | "neox" (../shared's NeoX tokenizer.json; skips
        when absent) | a tokenizer.json path to copy. Built once per session per arguments:
        treat the directory as read-only (copy it to modify).
    torch_logits(ckpt, ids, attention_mask=None) -> np.ndarray [B,T,V]
        the oracle: transformers' GPTNeoXForCausalLM from `ckpt`, float32, eval mode
    tiny_tokenizer(path, words=TINY_WORDS) -> Path
        writes a word-level tokenizer.json: <|endoftext|> = 0, <unk> = 1, then `words`
"""
from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

TINY = dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=256, rotary_pct=0.25, max_position_embeddings=512)
PYTHIA_14M = dict(vocab_size=50304, hidden_size=128, num_hidden_layers=6, num_attention_heads=4,
                  intermediate_size=512, rotary_pct=0.25, max_position_embeddings=2048)
TINY_WORDS = ("the a cat dog sat ran on under mat log and . ,").split()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEEDKL_CACHE", str(tmp_path / "seedkl-cache"))


@pytest.fixture
def shared_or_skip() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (fixtures live beside the project root)")
    return SHARED


def shared_path(rel: str) -> Path:
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


def tiny_tokenizer(path: Path, words=TINY_WORDS) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(["<|endoftext|>"])
    tok.save(str(path))
    return Path(path)


def _save(model, out: Path, fmt: str) -> None:
    import torch

    if fmt == "fp16":
        model = model.half()
    elif fmt == "bf16":
        model = model.to(torch.bfloat16)
    # "sharded": a third of the model per shard, so even the tiniest config gets several shards.
    nbytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    model.save_pretrained(out, max_shard_size=max(1, nbytes // 3) if fmt == "sharded" else "50GB")
    if fmt == "bin":  # what pre-safetensors Pythia checkpoints look like on disk
        from safetensors.torch import load_file

        sd = load_file(out / "model.safetensors")
        cfg = model.config
        head = cfg.hidden_size // cfg.num_attention_heads
        pct = (getattr(cfg, "rope_parameters", None) or {}).get("partial_rotary_factor",
                                                                getattr(cfg, "rotary_pct", 0.25))
        rot = int(head * pct)
        for i in range(cfg.num_hidden_layers):
            sd[f"gpt_neox.layers.{i}.attention.rotary_emb.inv_freq"] = 1.0 / (
                10000 ** (torch.arange(0, rot, 2).float() / rot))
            sd[f"gpt_neox.layers.{i}.attention.bias"] = torch.tril(torch.ones(1, 1, 8, 8, dtype=torch.bool))
            sd[f"gpt_neox.layers.{i}.attention.masked_bias"] = torch.tensor(-1e9)
        torch.save(sd, out / "pytorch_model.bin")
        (out / "model.safetensors").unlink()


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory):
    built: dict[str, Path] = {}

    def make(seed: int = 0, *, fmt: str = "safetensors", tokenizer: str | os.PathLike | None = None,
             **config) -> Path:
        key = json.dumps([seed, fmt, str(tokenizer), sorted(config.items())])
        if key in built:
            return built[key]
        import torch
        from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

        assert fmt in ("safetensors", "sharded", "bin", "fp16", "bf16"), fmt
        if tokenizer == "neox":
            tokenizer = shared_path("fixtures/neox-tokenizer/tokenizer.json")
        out = tmp_path_factory.mktemp(f"ckpt-{fmt}-s{seed}")
        torch.manual_seed(seed)
        model = GPTNeoXForCausalLM(GPTNeoXConfig(**{**TINY, **config})).eval()
        _save(model, out, fmt)
        if tokenizer == "tiny":
            tiny_tokenizer(out / "tokenizer.json")
        elif tokenizer is not None:
            shutil.copy(tokenizer, out / "tokenizer.json")
        built[key] = out
        return out

    return make


def lock_holder(out: Path, seconds: float):
    """A child process holding `out`'s seedkl lock for `seconds` (returned once it holds it: Popen)."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path\n"
                              "from seedkl_jax.study import lock\n"
                              "with lock.hold(Path(sys.argv[1])):\n print('held', flush=True); time.sleep(float(sys.argv[2]))",
                              str(out), str(seconds)], cwd=Path(__file__).resolve().parents[1],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def link_suite(root: Path, make, sizes: dict, steps, seeds, *, base: int, size_stride: int = 100,
               **config) -> str:
    """A local suite of tiny GPT-NeoX checkpoints: root/suite/{size}/seed{seed}/step{step}, each a symlink to
    `make(base + size_stride*i + 10*j + seed, **sizes[size], **config)` (make: the hf_checkpoint fixture), so
    every checkpoint has its own random init. Returns the suite's model template."""
    for i, size in enumerate(sizes):
        for j, step in enumerate(steps):
            for seed in seeds:
                ckpt = make(base + size_stride * i + 10 * j + seed, **sizes[size], **config)
                link = root / "suite" / size / f"seed{seed}" / f"step{step}"
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(ckpt, target_is_directory=True)
    return str(root / "suite" / "{size}" / "seed{seed}" / "step{step}")


@functools.lru_cache(maxsize=2)
def _torch_model(ckpt: str):
    import torch
    from transformers import GPTNeoXForCausalLM

    return GPTNeoXForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()


def torch_logits(ckpt, ids, attention_mask=None) -> np.ndarray:
    import torch

    mask = None if attention_mask is None else torch.as_tensor(np.asarray(attention_mask))
    with torch.no_grad():
        out = _torch_model(str(ckpt))(torch.as_tensor(np.asarray(ids)), attention_mask=mask)
    return out.logits.float().numpy()


# ---------------------------------------------------------------- other families (GPT-2, BERT)
# family_checkpoint(kind, seed=0, *, fmt="safetensors", tokenizer=None, **config) -> Path
#   kind "gpt2" (GPT2LMHeadModel), "bert" (BertForPreTraining) or "bert-nohead" (a bare BertModel);
#   config updates TINY_GPT2 / TINY_BERT; fmt "safetensors" or "bin" (pytorch_model.bin, as MultiBERTs;
#   "bin-tf" also spells LayerNorm weights gamma/beta, as TF-converted checkpoints do);
#   tokenizer: None | "wordpiece" (vocab.txt of TINY_WORDS) | "bpe" (tokenizer.json of TINY_WORDS).
# family_logits(ckpt, kind, ids, attention_mask=None, dtype="float32") -> np.ndarray [B,T,V] (the oracle)
TINY_GPT2 = dict(vocab_size=512, n_embd=64, n_layer=2, n_head=4, n_positions=128)
TINY_BERT = dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=128, max_position_embeddings=128)
_HF_CLASSES = {"gpt2": ("GPT2Config", "GPT2LMHeadModel"), "bert": ("BertConfig", "BertForPreTraining"),
               "bert-nohead": ("BertConfig", "BertModel")}


def wordpiece_vocab(path: Path, words=TINY_WORDS) -> Path:
    """vocab.txt of a BERT WordPiece tokenizer: [PAD]=0, [UNK], [CLS], [SEP], [MASK], then `words`."""
    Path(path).write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    return Path(path)


@pytest.fixture(scope="session")
def family_checkpoint(tmp_path_factory):
    built: dict[str, Path] = {}

    def make(kind: str, seed: int = 0, *, fmt: str = "safetensors", tokenizer: str | None = None, **config) -> Path:
        key = json.dumps([kind, seed, fmt, tokenizer, sorted(config.items())])
        if key in built:
            return built[key]
        import torch
        import transformers

        cfg_cls, model_cls = (getattr(transformers, n) for n in _HF_CLASSES[kind])
        base = TINY_GPT2 if kind == "gpt2" else TINY_BERT
        torch.manual_seed(seed)
        model = model_cls(cfg_cls(**{**base, **config})).eval()
        out = tmp_path_factory.mktemp(f"{kind}-{fmt}-s{seed}")
        model.save_pretrained(out)
        if fmt.startswith("bin"):
            sd = {k: v.contiguous() for k, v in model.state_dict().items()}
            if fmt == "bin-tf":
                sd = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
                      for k, v in sd.items()}
            torch.save(sd, out / "pytorch_model.bin")
            (out / "model.safetensors").unlink()
        if tokenizer == "wordpiece":
            wordpiece_vocab(out / "vocab.txt")
            (out / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
        elif tokenizer == "bpe":
            tiny_tokenizer(out / "tokenizer.json")
        built[key] = out
        return out

    return make


@functools.lru_cache(maxsize=4)
def _family_model(ckpt: str, kind: str, dtype: str):
    import torch
    import transformers

    model = getattr(transformers, _HF_CLASSES[kind][1]).from_pretrained(ckpt, dtype=torch.float32).eval()
    return model.double() if dtype == "float64" else model


def family_logits(ckpt, kind: str, ids, attention_mask=None, dtype: str = "float32") -> np.ndarray:
    import torch

    mask = None if attention_mask is None else torch.as_tensor(np.asarray(attention_mask))
    with torch.no_grad():
        out = _family_model(str(ckpt), kind, dtype)(torch.as_tensor(np.asarray(ids)), attention_mask=mask)
    z = out.prediction_logits if kind == "bert" else out.logits
    return z.numpy().astype(np.float64 if dtype == "float64" else np.float32)
