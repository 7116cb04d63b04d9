"""Train a mini seed suite: S seeds of a few GPT-NeoX sizes, saved as HF checkpoints.

Why: PolyPythias live on the hub; the demo needs a suite it can make offline in minutes, and a
researcher needs a lab where warm-up, learning rate, size and data can be varied. As in PolyPythias,
the seed sets both the initialisation and the data order, unless `split_seeds` gives a seed its own
(init seed, data-order seed), as PolyPythias' decoupled 160m runs do (init fixed, data order varied, or
the reverse; analysis/pair_types.py). All S seeds of one size train TOGETHER:
one jitted step is `jax.vmap` of the single-seed AdamW step over stacked params [S, ...], per-seed
optimizer states and per-seed batch indices [S, B] — one compile, one dispatch per step.

Data: the training id stream is cut into non-overlapping chunks [N, T+1] (inputs = chunk[:-1],
targets = chunk[1:]); seed s reads them in the order of its own permutation (a fresh permutation
per epoch), B chunks per step.

Optimizer: AdamW (b1 0.9, b2 0.95, weight decay on matrices only, global-norm clip 1.0 per seed: the
defaults are Pythia's) with linear warm-up lr·(t+1)/warmup over `warmup` steps (the +1 makes step 1 differ from
step 0) and cosine decay to `final_lr_frac`·lr at `steps`.

Vocab: the model's rows are the tokenizer's real size padded up to a multiple of `vocab_multiple`
(8), like Pythia's 50,277 -> 50,304. Padded ids never occur, so training pushes their logits down;
the study normalises over the real vocab only, which this padding exercises.

Checkpoints: at steps 0, 1, 2, 4, ... (powers of two; `ckpt_per_octave` > 1 adds log-spaced steps
between them from step 8 on), every `ckpt_every` steps, and the last step,
in HF form (config.json + model.safetensors + tokenizer files) at
`{workdir}/{size}/seed{seed}/step{step}` — `seedkl run` reads them with
`--model_template={workdir}/{size}/seed{seed}/step{step} --revision_template=`. Each checkpoint dir
is written under a temporary name and renamed; a size is complete when `{workdir}/{size}/done.json`
records the exact settings, so a rerun with the same settings reuses it and a killed run retrains
only the unfinished sizes. With `split_seeds`, `{workdir}/seed_factors.json` (seed -> {"init", "data"})
is the study's `--seed_factors` file for the suite.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from seedkl_jax.errors import SeedKLError
from seedkl_jax.hf.checkpoint import TOKENIZER_FILES
from seedkl_jax.hf.families import config_dict
from seedkl_jax.hf.mapping import params_to_state_dict
from seedkl_jax.models import NeoXConfig, init_params, logits


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One seed suite: sizes (widths; all with `layers` layers, `heads` heads) x seeds x steps.

    The defaults are `seedkl demo`'s default suite (see demo.py for why each value)."""

    widths: tuple[int, ...] = (32, 64, 128)
    layers: int = 2
    heads: int = 4
    context: int = 64  # T: training sequence length (= max_position_embeddings)
    batch: int = 12  # B: sequences per seed per step
    steps: int = 1024
    warmup: int = 100
    lr: float = 1e-3  # peak learning rate
    final_lr_frac: float = 0.1
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.95  # Pythia's
    clip: float = 1.0
    seeds: tuple[int, ...] = (1, 2, 3, 4)
    ckpt_per_octave: int = 2  # log-spaced checkpoints per doubling from step 8 on (2: 8, 11, 16, 23, ...)
    ckpt_every: int = 0  # regular checkpoints besides the log-spaced ones (0 = none)
    init_std: float = 0.02
    vocab_multiple: int = 8
    # seed -> (init seed, data-order seed); a seed not listed uses itself for both. None keeps the key of
    # done.json as before the option existed (_size_key), so suites trained then are reused.
    split_seeds: dict | None = dataclasses.field(default=None, hash=False)

    def init_seed(self, seed: int) -> int:
        return int((self.split_seeds or {}).get(seed, (seed, seed))[0])

    def data_seed(self, seed: int) -> int:
        return int((self.split_seeds or {}).get(seed, (seed, seed))[1])

    def validate(self) -> None:
        checks = [(self.steps >= 1, "steps", "must be >= 1"), (self.batch >= 1, "batch", "must be >= 1"),
                  (self.context >= 2, "context", "must be >= 2"),
                  (0 <= self.warmup <= self.steps, "warmup", f"must be in [0, steps={self.steps}]"),
                  (self.lr > 0, "lr", "must be > 0"), (len(self.seeds) >= 1, "seeds", "give at least one"),
                  (len(set(self.seeds)) == len(self.seeds), "seeds", "must be distinct"),
                  (len(self.widths) >= 1, "widths", "give at least one"),
                  (self.ckpt_per_octave >= 1, "ckpt_per_octave", "must be >= 1"),
                  (all(w % self.heads == 0 and (w // self.heads) % 8 == 0 for w in self.widths),
                   "widths", f"each must be a multiple of 8*heads={8 * self.heads} (head width >= 8)")]
        for ok, name, what in checks:
            if not ok:
                raise SeedKLError(f"train --{name}={getattr(self, name)}: {what}; fix the flag")
        split = self.split_seeds or {}
        odd = [s for s, v in split.items() if s not in self.seeds or len(tuple(v)) != 2]
        if odd:
            raise SeedKLError(f"train split_seeds: entry for {odd[0]!r} is not one of the seeds {list(self.seeds)} "
                              "mapped to (init seed, data seed); fix the mapping")
        runs = {(self.init_seed(s), self.data_seed(s)): s for s in self.seeds}
        if len(runs) < len(self.seeds):
            raise SeedKLError(f"train split_seeds: two seeds get the same (init, data) seeds, so they would train "
                              f"the same model ({split}); give each seed its own pair")

    def checkpoint_steps(self) -> list[int]:
        steps = {0, self.steps} | {2**k for k in range(self.steps.bit_length()) if 2**k <= self.steps}
        p = self.ckpt_per_octave
        steps |= {s for j in range(3 * p, p * self.steps.bit_length() + 1)
                  if (s := round(2 ** (j / p))) <= self.steps}
        if self.ckpt_every > 0:
            steps |= set(range(self.ckpt_every, self.steps + 1, self.ckpt_every))
        return sorted(steps)

    def model_config(self, width: int, vocab_size: int) -> NeoXConfig:
        rows = -(-vocab_size // self.vocab_multiple) * self.vocab_multiple
        cfg = NeoXConfig(vocab_size=rows, hidden_size=width, num_layers=self.layers,
                         num_heads=self.heads, intermediate_size=4 * width,
                         max_position_embeddings=self.context)
        cfg.validate()
        return cfg


def size_name(cfg: NeoXConfig) -> str:
    """Pythia-style size label from the parameter count, e.g. '89k', '1.2m'."""
    n = cfg.num_params()
    return f"{n / 1e6:.1f}m" if n >= 1e6 else f"{n / 1e3:.0f}k"


@dataclasses.dataclass
class TrainedSuite:
    """Where a trained suite lives, in the terms `seedkl_jax.study.suite.Suite` needs."""

    workdir: Path
    sizes: list[str]
    steps: list[int]
    seeds: list[int]
    configs: dict[str, NeoXConfig]
    final_loss: dict[str, float]  # mean over seeds of the last step's training loss, per size

    @property
    def model_template(self) -> str:
        return str(self.workdir / "{size}" / "seed{seed}" / "step{step}")

    def checkpoint(self, size: str, seed: int, step: int) -> Path:
        return self.workdir / size / f"seed{seed}" / f"step{step}"


# -- the step ------------------------------------------------------------------------------------
def lr_schedule(cfg: TrainConfig) -> Callable:
    """Update index t (0-based) -> learning rate: lr*(t+1)/warmup, then cosine to lr*final_lr_frac."""
    warm = max(cfg.warmup, 1)
    decay = optax.cosine_decay_schedule(cfg.lr, max(cfg.steps - cfg.warmup, 1), alpha=cfg.final_lr_frac)

    def schedule(t):
        return jnp.where(t < cfg.warmup, cfg.lr * (t + 1) / warm, decay(t - cfg.warmup))

    return schedule


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    decay_mask = lambda params: jax.tree.map(lambda a: a.ndim >= 2, params)
    return optax.chain(optax.clip_by_global_norm(cfg.clip),
                       optax.adamw(lr_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=1e-8,
                                   weight_decay=cfg.weight_decay, mask=decay_mask))


def make_step(model_cfg: NeoXConfig, tx: optax.GradientTransformation) -> Callable:
    """Single-seed step (params, opt_state, chunks [N,T+1], idx [B]) -> (params, opt_state, loss)."""

    def loss_fn(params, x, y):  # x, y [B,T]
        z = logits(params, model_cfg, x)  # [B,T,V]
        return optax.softmax_cross_entropy_with_integer_labels(z, y).mean()

    def step(params, opt_state, chunks, idx):
        batch = chunks[idx]  # [B,T+1]
        loss, grads = jax.value_and_grad(loss_fn)(params, batch[:, :-1], batch[:, 1:])
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def data_order(seed: int, n_chunks: int, steps: int, batch: int) -> np.ndarray:
    """[steps, B] chunk indices: the seed's own permutation, a fresh one each epoch."""
    rng = np.random.default_rng([seed, 0x5EED])
    need = steps * batch
    order = np.concatenate([rng.permutation(n_chunks) for _ in range(-(-need // n_chunks))])
    return order[:need].reshape(steps, batch).astype(np.int32)


def make_chunks(ids: np.ndarray, context: int) -> np.ndarray:
    """Non-overlapping [N, T+1] windows of the id stream (the tail that does not fill one is dropped)."""
    n = len(ids) // (context + 1)
    if n < 1:
        raise SeedKLError(f"train: {len(ids)} training tokens are fewer than one --context+1="
                          f"{context + 1} window; generate more training text")
    return np.asarray(ids[: n * (context + 1)], np.int32).reshape(n, context + 1)


def train_seeds(model_cfg: NeoXConfig, cfg: TrainConfig, chunks: np.ndarray, seeds: list[int], *,
                vmapped: bool = True, on_step: Callable[[int, dict, np.ndarray | None], None] | None = None):
    """Train `seeds` for cfg.steps; returns stacked params [S, ...] (jax arrays).

    on_step(step, stacked_params, loss [S] | None) is called after init (step 0, loss None) and
    after every update. vmapped=False trains each seed alone with the unvmapped step (the oracle
    the tests compare the vmapped path against); it does not call on_step.
    """
    tx = make_optimizer(cfg)
    step = make_step(model_cfg, tx)
    chunks_dev = jnp.asarray(chunks)
    orders = np.stack([data_order(cfg.data_seed(s), len(chunks), cfg.steps, cfg.batch) for s in seeds])  # [S,steps,B]
    inits = [init_params(model_cfg, jax.random.PRNGKey(cfg.init_seed(s)), std=cfg.init_std) for s in seeds]
    if not vmapped:
        single = jax.jit(step, donate_argnums=(0, 1))
        finals = []
        for params, order in zip(inits, orders):
            opt_state = tx.init(params)
            for t in range(cfg.steps):
                params, opt_state, _ = single(params, opt_state, chunks_dev, jnp.asarray(order[t]))
            finals.append(params)
        return jax.tree.map(lambda *a: jnp.stack(a), *finals)
    params = jax.tree.map(lambda *a: jnp.stack(a), *inits)  # leaves [S, ...]
    opt_state = jax.vmap(tx.init)(params)
    multi = jax.jit(jax.vmap(step, in_axes=(0, 0, None, 0)), donate_argnums=(0, 1))
    if on_step:
        on_step(0, params, None)
    for t in range(cfg.steps):
        params, opt_state, loss = multi(params, opt_state, chunks_dev, jnp.asarray(orders[:, t]))
        if on_step:
            on_step(t + 1, params, loss)
    return params


# -- checkpoints ---------------------------------------------------------------------------------
def save_checkpoint(path: Path, params: dict, model_cfg: NeoXConfig, tokenizer_dir: Path) -> None:
    """HF-form checkpoint dir (config.json, model.safetensors, tokenizer files), written atomically."""
    from safetensors.numpy import save_file

    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(params_to_state_dict(params, model_cfg), str(tmp / "model.safetensors"),
              metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(config_dict(model_cfg), indent=1))
    for name in TOKENIZER_FILES:
        if (Path(tokenizer_dir) / name).exists():
            shutil.copyfile(Path(tokenizer_dir) / name, tmp / name)
    plain = (tmp / "config.json").stat().st_mode & 0o777  # what open() gave under this process's umask
    for f in tmp.iterdir():  # safetensors writes 0600: every file gets the plainly created one's mode
        os.chmod(f, plain)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _size_key(model_cfg: NeoXConfig, cfg: TrainConfig, data_hash: str) -> dict:
    """Everything that determines a size's checkpoints (what done.json must match to reuse them)."""
    train = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "widths"}
    if cfg.split_seeds is None:  # keys written before split_seeds existed stay valid
        train.pop("split_seeds")
    else:
        train["split_seeds"] = {str(s): [cfg.init_seed(s), cfg.data_seed(s)] for s in cfg.seeds}
    return {"model": config_dict(model_cfg), "train": json.loads(json.dumps(train)),
            "checkpoint_steps": cfg.checkpoint_steps(), "data_sha256": data_hash}


def train_suite(cfg: TrainConfig, ids: np.ndarray, tokenizer_dir: str | os.PathLike, vocab_size: int,
                workdir: str | os.PathLike, *, progress: bool = True) -> TrainedSuite:
    """Train (or reuse) every size of the suite in `workdir`; see the module docstring for the layout.

    ids: the training token stream (int, documents separated by the eos id); vocab_size: the
    tokenizer's real vocab size; tokenizer_dir: holds tokenizer.json (copied into each checkpoint).
    """
    from tqdm.auto import tqdm

    cfg.validate()
    workdir = Path(workdir).expanduser().resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    chunks = make_chunks(ids, cfg.context)
    data_hash = hashlib.sha256(np.ascontiguousarray(ids, np.int32).tobytes()).hexdigest()
    ckpt_steps = set(cfg.checkpoint_steps())
    sizes, configs, final_loss = [], {}, {}
    for width in cfg.widths:
        model_cfg = cfg.model_config(width, vocab_size)
        size = size_name(model_cfg)
        if size in configs:
            raise SeedKLError(f"train --widths={','.join(map(str, cfg.widths))}: two widths give the same "
                              f"size label {size}; list distinct widths")
        sizes.append(size)
        configs[size] = model_cfg
        key = _size_key(model_cfg, cfg, data_hash)
        done = workdir / size / "done.json"
        if done.exists() and json.loads(done.read_text()).get("key") == key:
            final_loss[size] = json.loads(done.read_text())["final_loss"]
            continue
        done.unlink(missing_ok=True)
        for s in cfg.seeds:
            shutil.rmtree(workdir / size / f"seed{s}", ignore_errors=True)
        desc = f"train {size} (width {width}, {len(cfg.seeds)} seeds)"
        # The first step includes XLA's compile: say so, and restart the clock after it (else its
        # seconds make the first ETA hours long).
        bar = tqdm(total=cfg.steps, desc=f"{desc}, compiling", disable=not progress, unit="step")
        last = {}

        def on_step(t, params, loss):
            if t in ckpt_steps:
                host = jax.device_get(params)
                for i, s in enumerate(cfg.seeds):
                    save_checkpoint(workdir / size / f"seed{s}" / f"step{t}",
                                    jax.tree.map(lambda a: a[i], host), model_cfg, Path(tokenizer_dir))
            if loss is not None:
                if t == 1:
                    bar.reset()
                    bar.set_description(desc)
                bar.update(1)
                if t % 16 == 0 or t == cfg.steps:
                    last["loss"] = float(jnp.mean(loss))
                    bar.set_postfix(loss=f"{last['loss']:.3f}")

        train_seeds(model_cfg, cfg, chunks, list(cfg.seeds), on_step=on_step)
        bar.close()
        final_loss[size] = last["loss"]
        _write_json_atomic(done, {"key": key, "final_loss": last["loss"]})
    suite = TrainedSuite(workdir, sizes, cfg.checkpoint_steps(), list(cfg.seeds), configs, final_loss)
    _write_json_atomic(workdir / "suite.json", {
        "sizes": sizes, "steps": suite.steps, "seeds": suite.seeds,
        "model_template": suite.model_template, "revision_template": "",
        "num_params": {s: configs[s].num_params() for s in sizes}, "final_loss": final_loss})
    if cfg.split_seeds is not None:  # the study's --seed_factors=FILE for this suite
        _write_json_atomic(workdir / "seed_factors.json", {
            str(s): {"init": cfg.init_seed(s), "data": cfg.data_seed(s)} for s in cfg.seeds})
    return suite
