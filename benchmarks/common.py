"""Shared helpers for the benchmarks: a local seed suite, the evaluation text, peak RSS, tables.

Why a local suite: the hub is out of reach here, and timing must not depend on downloads. The suite
is random-init GPT-NeoX checkpoints in HF form (`config.json` + `model.safetensors` + `tokenizer.json`,
what `save_pretrained` writes) laid out as `{root}/{size}/seed{seed}/step{step}`, with the real
Pythia vocab (50,304 rows) so the unembedding and the full-vocab log-prob matrices have the paper's
cost. Weights are normal(0.02) like HF's init, except the output layer, drawn with sd 2.5/sqrt(D) so
the logits spread like a trained model's (sd ~2.5) instead of the near-uniform output of a fresh init
— otherwise every KL is ~1e-4 and the fp16-storage error of the reference would dominate it.

Text: the paper's evaluation sample (`../shared/fixtures/pile-sample`, 4,663 ids, with the shared
NeoX tokenizer) when present; otherwise a synthetic text of Zipf-distributed words over a word-level
tokenizer of 50,277 real ids, the same shape of problem without the fixture.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
from pathlib import Path

import numpy as np

# ../shared beside the checkout; $SEEDKL_SHARED points elsewhere (e.g. a copy carried to a GPU machine).
SHARED = Path(os.environ.get("SEEDKL_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
PYTHIA_VOCAB = 50304  # embedding rows (padded)
REAL_VOCAB = 50277  # tokenizer ids

# Pythia shapes (hidden, layers, heads, intermediate). Everything else is the Pythia default.
SHAPES = {
    "14m": (128, 6, 4, 512),
    "31m": (256, 6, 8, 1024),
    "70m": (512, 6, 8, 2048),
    "160m": (768, 12, 12, 3072),
    "410m": (1024, 24, 16, 4096),
}


def neox_config(size: str, vocab: int = PYTHIA_VOCAB):
    """A Pythia-shaped `NeoXConfig` (context 2048, rotary 25%, parallel residual)."""
    from seedkl_jax.models import NeoXConfig

    d, l, h, f = SHAPES[size]
    return NeoXConfig(vocab_size=vocab, hidden_size=d, num_layers=l, num_heads=h, intermediate_size=f)


# FLOPs of the KL terms per ordered seed pair and vocab id, by kernel form (benchmarks/roofline.py).
KL_FLOPS_PER_PAIR_AND_ID = {"pair": 6, "einsum": 2, "onepass": 3}


def flops_per_token_per_seed(cfg, context: int, seeds: int, form: str = "pair",
                             cache_logits: bool = False) -> dict[str, float]:
    """The FLOP count above, by part, for one predicted token of one seed (cache_logits: the
    kernel keeps pass 1's logits, so pass 2 executes no second unembedding)."""
    D, F, V, L, T = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_layers, context
    layers = L * (2 * D * 3 * D + 2 * D * D + 2 * 2 * D * F + 2 * 2 * T * D)
    parts = {"layers": float(layers), "unembed": float(2 * D * V),
             "kl": float(seeds * KL_FLOPS_PER_PAIR_AND_ID[form] * V)}
    parts["model"] = parts["layers"] + parts["unembed"] + parts["kl"]
    parts["executed"] = parts["model"] + (0 if cache_logits else 2 * D * V)  # recomputed in pass 2
    return parts


def shared_dir() -> Path | None:
    return SHARED if (SHARED / "fixtures" / "pile-sample" / "input_ids.npy").exists() else None


def _synthetic_tokenizer(path: Path) -> None:
    """Word-level tokenizer: id 0 '<|endoftext|>', ids 1..REAL_VOCAB-1 words 'w1'.. (whitespace split)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0} | {f"w{i}": i for i in range(1, REAL_VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(["<|endoftext|>"])
    tok.save(str(path))


def _synthetic_text(n_tokens: int, n_docs: int = 10, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    ids = np.minimum(rng.zipf(1.3, n_tokens), REAL_VOCAB - 1)
    docs = np.array_split(ids, n_docs)
    return "<|endoftext|>".join(" ".join(f"w{i}" for i in d) for d in docs)


def prepare_text(workdir: Path, max_tokens: int | None = None) -> tuple[Path, Path]:
    """Write the evaluation text and a tokenizer.json into workdir; returns (text_path, tokenizer_path).

    max_tokens (for --quick runs) cuts the text to about that many ids (a character cut for the
    shared sample, ~4.6 characters per id there, so slightly fewer).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    text_path, tok_path = workdir / "text.txt", workdir / "tokenizer.json"
    sd = shared_dir()
    if sd is not None:
        shutil.copy(sd / "fixtures" / "neox-tokenizer" / "tokenizer.json", tok_path)
        text = (sd / "fixtures" / "pile-sample" / "input_text.txt").read_text(encoding="utf-8")
        if max_tokens is not None:
            text = text[: max_tokens * 4]  # ~4.6 chars per token in this sample: slightly under
    else:
        _synthetic_tokenizer(tok_path)
        text = _synthetic_text(4661 if max_tokens is None else max_tokens)
    text_path.write_text(text, encoding="utf-8")
    return text_path, tok_path


def encode_text(text_path: Path, tok_path: Path) -> np.ndarray:
    """ids = [eos] + encode(text) + [eos], as the paper scores its sample (eos = id 0)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_path))
    eos = tok.token_to_id("<|endoftext|>")
    body = tok.encode(text_path.read_text(encoding="utf-8"), add_special_tokens=False).ids
    return np.array([eos, *body, eos], dtype=np.int32)


def _random_state_dict(cfg, rng: np.random.Generator) -> dict[str, np.ndarray]:
    D, F, V, L = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_layers
    normal = lambda *shape, sd=0.02: (sd * rng.standard_normal(shape, dtype=np.float32))
    ln = lambda *s: {"scale": np.ones(s, np.float32), "bias": np.zeros(s, np.float32)}
    dense = lambda n_in, n_out: {"kernel": normal(L, n_in, n_out), "bias": np.zeros((L, n_out), np.float32)}
    params = {
        "embed_in": {"embedding": normal(V, D)},
        "layers": {"ln1": ln(L, D), "ln2": ln(L, D), "attn": {"qkv": dense(D, 3 * D), "out": dense(D, D)},
                   "mlp": {"fc_in": dense(D, F), "fc_out": dense(F, D)}},
        "final_ln": ln(D),
        "embed_out": {"kernel": normal(D, V, sd=2.5 / np.sqrt(D))},
    }
    from seedkl_jax.hf.mapping import params_to_state_dict

    return params_to_state_dict(params, cfg)


def build_suite(root: Path, sizes: list[str], steps: list[int], seeds: list[int], tok_path: Path,
                vocab: int = PYTHIA_VOCAB, configs: dict | None = None, dtype: str = "float32",
                link_steps: bool = False) -> str:
    """Write `{root}/{size}/seed{seed}/step{step}` HF checkpoints; returns the model template.

    Deterministic: checkpoint (size, step, seed) is drawn from rng seed hash of those three, so two
    builds give identical files. Existing complete checkpoints are kept (rebuilding is slow).
    `configs` maps size -> NeoXConfig to override the Pythia shapes (tests use tiny ones).
    dtype "float16" stores the weights as Pythia's checkpoints are stored. link_steps: every step of a
    (size, seed) is the first step's files hard-linked (disk bounded; the params cache stores them once).
    """
    from safetensors.numpy import save_file

    from seedkl_jax.hf.families import config_dict

    for si, size in enumerate(sizes):
        cfg = (configs or {}).get(size) or neox_config(size, vocab)
        for step in steps:
            for seed in seeds:
                d = root / size / f"seed{seed}" / f"step{step}"
                if (d / "model.safetensors").exists():
                    continue
                d.mkdir(parents=True, exist_ok=True)
                first = root / size / f"seed{seed}" / f"step{steps[0]}"
                if link_steps and step != steps[0]:
                    for name in ("config.json", "tokenizer.json", "model.safetensors"):  # weights last
                        os.link(first / name, d / name)
                    continue
                rng = np.random.default_rng([si, step, seed])
                sd = {k: v.astype(dtype) for k, v in _random_state_dict(cfg, rng).items()}
                save_file(sd, str(d / "model.safetensors.tmp"), metadata={"format": "pt"})
                (d / "config.json").write_text(json.dumps(config_dict(cfg), indent=1))
                shutil.copy(tok_path, d / "tokenizer.json")
                os.replace(d / "model.safetensors.tmp", d / "model.safetensors")
    return str(root / "{size}" / "seed{seed}" / "step{step}")


def peak_rss_mb() -> float:
    """Peak resident set of this process (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def io_bytes_written() -> int:
    """Bytes this process passed to write() (/proc/self/io wchar); 0 where /proc is absent."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def dir_bytes(path: Path) -> int:
    """Total size of the regular files under path (what a run left on disk)."""
    path = Path(path)
    if not path.exists():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A plain fixed-width text table (markdown-compatible pipes) of dict rows."""
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.rjust(w) for v, w in zip(vals, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(columns), sep, *(line(r) for r in cells)])


def interleaved_best(runs: list, repeats: int) -> list[float]:
    """Best wall time of each run (a callable returning JAX arrays), timed in alternation so load drift
    on a shared machine hits all alike."""
    import time

    import jax

    for run in runs:
        jax.block_until_ready(run())  # warm-up
    best = [float("inf")] * len(runs)
    for _ in range(repeats):
        for i, run in enumerate(runs):
            t0 = time.perf_counter()
            jax.block_until_ready(run())
            best[i] = min(best[i], time.perf_counter() - t0)
    return best
