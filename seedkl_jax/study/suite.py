"""A seed suite: sizes x steps x seeds, resolved to checkpoints by two string templates.

Why templates: the same study runs on hub suites (PolyPythias: model `EleutherAI/pythia-{size}-seed{seed}`
at revision `step{step}`) and on local folders (`/data/suite/{size}/seed{seed}/step{step}`, revision
template empty) without any code knowing which. Placeholders are `{size}`, `{seed}`, `{step}`.

Seeds are integers (PolyPythias' 1..9, MultiBERTs' 0..24) or names (the Mistral GPT-2 runs are named
runs, e.g. `alias-gpt2-small-x21`: seed 21); `--seeds` takes either, and a name is used as written.

Before any compute the study calls `missing_checkpoints` and refuses to start unless every checkpoint
resolves: a sweep of 100 groups should not die on group 73 because one folder is missing. Local
checkpoints are checked on disk; hub checkpoints are looked up in the local HF cache and, for the rest,
on the hub (one query per repository; hf/hub.py). When the hub cannot be reached the uncached ones
are all listed as unverifiable, which also stops the run (point the templates at local folders instead).
"""
from __future__ import annotations

import dataclasses
import json
import os
import string
from pathlib import Path
from typing import Any, Iterator

from seedkl_jax.analysis.lr import PYTHIA as PYTHIA_LR
from seedkl_jax.config import seed_value  # noqa: F401  (the one seed rule; also imported from here)
from seedkl_jax.hf import hub
from seedkl_jax.hf.checkpoint import local_problem
from seedkl_jax.errors import SeedKLError

PLACEHOLDERS = ("size", "seed", "step")
# The 20 checkpoints the paper evaluates: log-spaced early training, then the regular saves, then the last.
POLYPYTHIA_STEPS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512,
                    1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 143000)
# MultiBERTs (arXiv 2106.16163): google/multiberts-seed_{0..4}-step_{N}k, N in thousands of steps.
MULTIBERTS_STEPS = tuple(range(0, 201, 20)) + tuple(range(300, 2001, 100))
# Stanford CRFM's Mistral GPT-2 runs (seed in the name). Checkpoints are branches checkpoint-N, saved every
# 10 steps to 100, every 50 to 2,000, every 100 to 20,000 and every 1,000 to 400,000 (Mistral's schedule);
# this log-spaced subset lies on that schedule (not verified against the hub from this machine).
MISTRAL_STEPS = (10, 20, 40, 80, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25000, 50000, 100000, 200000,
                 400000)
# Where the paper's phases start on PolyPythia's step axis (convergence, divergence, reconvergence).
PAPER_PHASE_STEPS = (16, 256, 2000)
MISTRAL_SMALL = ("alias-gpt2-small-x21", "battlestar-gpt2-small-x49", "caprica-gpt2-small-x81",
                 "darkmatter-gpt2-small-x343", "expanse-gpt2-small-x777")
MISTRAL_MEDIUM = ("arwen-gpt2-medium-x21", "beren-gpt2-medium-x49", "celebrimbor-gpt2-medium-x81",
                  "durin-gpt2-medium-x343", "eowyn-gpt2-medium-x777")
# PolyPythias' decoupled 160m runs (model cards of EleutherAI/pythia-160m-data-seed{1-3} / -weight-seed{1-3}):
# data-seedK varies only the data order (weight init fixed), weight-seedK only the init (data order fixed),
# pythia-160m is the original run (seed 1234) both share the fixed part with. Factor value 0 = the original's.
DECOUPLED_160M = {"pythia-160m": {"init": 0, "data": 0},
                  **{f"pythia-160m-data-seed{k}": {"init": 0, "data": k} for k in (1, 2, 3)},
                  **{f"pythia-160m-weight-seed{k}": {"init": k, "data": 0} for k in (1, 2, 3)}}


@dataclasses.dataclass(frozen=True)
class Suite:
    """sizes x steps x seeds; `checkpoint(size, step, seed) -> (model, revision or None)`.

    sizes: labels substituted for {size} (e.g. "70m"); steps: training steps, ascending; seeds: ints or names.
    model_template: hub id or local path; revision_template: hub revision, "" for local paths.
    phase_steps: the suite's reference phase boundaries on its own step axis (convergence, divergence,
    reconvergence start) -- PolyPythia's are the paper's 16/256/2000; None (MultiBERTs, Mistral, local
    suites unless given) = no phase lines and no phase verdict (report/plotting.py, analysis/findings.py).
    seed_factors: seed -> {factor: value} (e.g. init and data-order seeds; analysis/pair_types.py), None =
    the seeds are not decomposed; analysis only, like phase_steps.
    """

    sizes: tuple[str, ...]
    steps: tuple[int, ...]
    seeds: tuple[int | str, ...]
    model_template: str
    revision_template: str = ""
    lr_schedule: Any = dataclasses.field(default=None, compare=False)  # analysis.lr.LRSchedule (figure only)
    phase_steps: tuple[int, ...] | None = dataclasses.field(default=None, compare=False)  # analysis only
    seed_factors: dict | None = dataclasses.field(default=None, compare=False)  # analysis only

    def __post_init__(self):
        # Accept lists from callers; keep tuples so the suite is hashable and compares by value.
        object.__setattr__(self, "sizes", tuple(str(s) for s in self.sizes))
        object.__setattr__(self, "steps", tuple(int(s) for s in self.steps))
        object.__setattr__(self, "seeds", tuple(seed_value(s) for s in self.seeds))
        if self.phase_steps is not None:
            object.__setattr__(self, "phase_steps", tuple(int(s) for s in self.phase_steps))

    @property
    def is_local(self) -> bool:
        """Empty revision template = checkpoints are local folders."""
        return not self.revision_template

    def validate(self) -> "Suite":
        """Raise SeedKLError for a suite that cannot be run; return self."""
        for name, values, least in (("--sizes", self.sizes, 1), ("--steps", self.steps, 1), ("--seeds", self.seeds, 2)):
            if len(values) < least:
                raise SeedKLError(f"{name}: needs at least {least} value(s), got {list(values)}; give a comma list")
            dup = sorted({v for v in values if values.count(v) > 1}, key=str)
            if dup:
                raise SeedKLError(f"{name}: repeated value(s) {dup}; list each once")
        if any(s < 0 for s in self.steps):
            raise SeedKLError(f"--steps: negative step in {list(self.steps)}; steps are training steps >= 0")
        if list(self.steps) != sorted(self.steps):
            raise SeedKLError(f"--steps: {list(self.steps)} is not ascending; list steps in training order")
        if not self.model_template:
            raise SeedKLError("--model_template: empty; give e.g. EleutherAI/pythia-{size}-seed{seed} "
                              "or /data/suite/{size}/seed{seed}/step{step}")
        used = set()
        for flag, tmpl in (("--model_template", self.model_template), ("--revision_template", self.revision_template)):
            fields = _fields(flag, tmpl)
            unknown = fields - set(PLACEHOLDERS)
            if unknown:
                raise SeedKLError(f"{flag}={tmpl!r}: unknown placeholder(s) {sorted(unknown)}; "
                                  f"use only {{size}}, {{seed}}, {{step}}")
            used |= fields
        if "seed" not in _fields("--model_template", self.model_template):
            raise SeedKLError(f"--model_template={self.model_template!r}: has no {{seed}}, so every seed would be "
                              "the same checkpoint; put {seed} in it")
        for key, values in (("size", self.sizes), ("step", self.steps)):
            if len(values) > 1 and key not in used:
                raise SeedKLError(f"templates {self.model_template!r} / {self.revision_template!r}: no {{{key}}} "
                                  f"but {len(values)} {key}s are asked for; put {{{key}}} in a template")
        return self

    def checkpoint(self, size: str, step: int, seed: int | str) -> tuple[str, str | None]:
        """(model id or local path, revision or None) of one checkpoint."""
        values = {"size": size, "step": int(step), "seed": seed_value(seed)}
        model = self.model_template.format(**values)
        if self.is_local:
            return os.path.abspath(os.path.expanduser(model)), None
        return model, self.revision_template.format(**values)

    def groups(self) -> list[tuple[str, int]]:
        """(size, step) in run order: sizes as given, steps ascending."""
        return [(size, step) for size in self.sizes for step in self.steps]

    def checkpoints(self) -> Iterator[tuple[str, int, int | str, str, str | None]]:
        """(size, step, seed, model, revision) for every checkpoint of the suite."""
        for size, step in self.groups():
            for seed in self.seeds:
                yield (size, step, seed, *self.checkpoint(size, step, seed))

    def to_dict(self) -> dict[str, Any]:
        return {"sizes": list(self.sizes), "steps": list(self.steps), "seeds": list(self.seeds),
                "model_template": self.model_template, "revision_template": self.revision_template}

    def override(self, **changes: Any) -> "Suite":
        """A copy with the given fields replaced; `None` values keep the current field (flags not given)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


PRESETS: dict[str, Suite] = {
    # PolyPythias (arXiv 2503.09543): seeds 1..9 exist on the hub; the paper's study uses 1,3,5,7,9.
    "polypythia": Suite(
        sizes=("14m", "31m", "70m", "160m", "410m"),
        steps=POLYPYTHIA_STEPS,
        seeds=(1, 3, 5, 7, 9),
        model_template="EleutherAI/pythia-{size}-seed{seed}",
        revision_template="step{step}",
        lr_schedule=PYTHIA_LR,
        phase_steps=PAPER_PHASE_STEPS,
    ),
    # The decoupled 160m runs: the seed is the run's name, its factor table says what each one varies.
    "polypythia-160m-decoupled": Suite(
        sizes=("160m",), steps=POLYPYTHIA_STEPS, seeds=tuple(DECOUPLED_160M),
        model_template="EleutherAI/{seed}", revision_template="step{step}",
        lr_schedule=PYTHIA_LR, phase_steps=PAPER_PHASE_STEPS, seed_factors=DECOUPLED_160M),
    # MultiBERTs: BERT-base uncased, one repo per (seed, step); steps are thousands (step_{N}k), 0..2000.
    # No phase_steps: its first non-zero checkpoint is 20k, so the early phases are never observed (the
    # paper's MultiBERTs figure has no phase lines and dashes the segment up to 20k). Mistral: none either,
    # the paper gives no boundaries for it.
    "multiberts": Suite(sizes=("base",), steps=MULTIBERTS_STEPS, seeds=tuple(range(5)),
                        model_template="google/multiberts-seed_{seed}-step_{step}k", revision_template="main"),
    # The 25 final MultiBERTs (2M steps; "step" 2000 = 2000k labels the one checkpoint).
    "multiberts-final": Suite(sizes=("base",), steps=(2000,), seeds=tuple(range(25)),
                              model_template="google/multiberts-seed_{seed}", revision_template="main"),
    "mistral-gpt2-small": Suite(sizes=("small",), steps=MISTRAL_STEPS, seeds=MISTRAL_SMALL,
                                model_template="stanford-crfm/{seed}", revision_template="checkpoint-{step}"),
    "mistral-gpt2-medium": Suite(sizes=("medium",), steps=MISTRAL_STEPS, seeds=MISTRAL_MEDIUM,
                                 model_template="stanford-crfm/{seed}", revision_template="checkpoint-{step}"),
}
POLYPYTHIA_AVAILABLE_SEEDS = tuple(range(1, 10))


def describe_presets() -> str:
    """One line per preset (for `seedkl run --help`)."""
    lines = []
    for name, s in PRESETS.items():
        seeds = ",".join(map(str, s.seeds)) if len(s.seeds) <= 5 else f"{s.seeds[0]}..{s.seeds[-1]}"
        rev = f" @ {s.revision_template}" if s.revision_template else ""
        lines.append(f"{name}: {s.model_template}{rev}; sizes {','.join(s.sizes)}; {len(s.steps)} steps "
                     f"{s.steps[0]}..{s.steps[-1]}; seeds {seeds}")
    return "\n".join(lines)


def get_preset(name: str) -> Suite:
    if name not in PRESETS:
        raise SeedKLError(f"--preset={name!r}: unknown preset; choose one of {sorted(PRESETS)} or give "
                          "--preset='' with --model_template, --sizes, --steps and --seeds")
    return PRESETS[name]


def resolve_suite(cfg: Any) -> Suite:
    """The checkpoints' Suite of a `config.SuiteConfig`: its preset with the given parts replaced, or,
    with preset '', exactly the given parts (the config has checked they are all there)."""
    if cfg.preset:
        suite = get_preset(cfg.preset).override(sizes=cfg.sizes, steps=cfg.steps, seeds=cfg.seeds,
                                                model_template=cfg.model_template,
                                                revision_template=cfg.revision_template)
    else:
        suite = Suite(sizes=cfg.sizes, steps=cfg.steps, seeds=cfg.seeds, model_template=cfg.model_template,
                      revision_template=cfg.revision_template or "")
    suite = suite.override(lr_schedule=cfg.lr_schedule, phase_steps=getattr(cfg, "phase_steps", None))
    path = getattr(cfg, "seed_factors", None)
    table = read_seed_factors(path) if path else (getattr(cfg, "factor_table", None) or suite.seed_factors)
    return dataclasses.replace(suite, seed_factors=check_seed_factors(table, suite.seeds, path))


def read_seed_factors(path) -> dict:
    """--seed_factors=FILE: a JSON object seed -> {factor: value}; keys are seeds as --seeds writes them."""
    fix = 'give a JSON object seed -> {factor: value}, e.g. {"1": {"init": 1, "data": 0}, "2": {"init": 1, "data": 2}}'
    try:
        raw = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SeedKLError(f"--seed_factors={path}: file not found; {fix}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SeedKLError(f"--seed_factors={path}: not readable JSON ({e}); {fix}") from None
    if not isinstance(raw, dict) or not raw:
        raise SeedKLError(f"--seed_factors={path}: not a non-empty JSON object; {fix}")
    table = {}
    for seed, factors in raw.items():
        if (not isinstance(factors, dict) or not factors
                or any(isinstance(v, bool) or not isinstance(v, (int, str)) for v in factors.values())):
            raise SeedKLError(f"--seed_factors={path}: seed {seed!r} has no {{factor: value}} object of integers "
                              f"or names; {fix}")
        try:
            table[seed_value(seed, "seed_factors")] = dict(factors)
        except SeedKLError:
            raise SeedKLError(f"--seed_factors={path}: {seed!r} is not a seed (an integer or a name of letters, "
                              f"digits, '.', '_', '-'); {fix}") from None
    return table


def check_seed_factors(table: dict | None, seeds, path=None) -> dict | None:
    """The table restricted to `seeds` (in their order); one SeedKLError when a seed is missing or the seeds
    name different factors."""
    if table is None:
        return None
    where = f"--seed_factors={path}" if path else "the preset's seed factors"
    missing = [s for s in seeds if s not in table]
    if missing:
        raise SeedKLError(f"{where}: no factors for seed(s) {missing}; give every compared seed "
                          f"({', '.join(map(str, seeds))}) its factors, or compare only seeds the table has")
    names = {s: list(table[s]) for s in seeds}
    first = names[seeds[0]]
    odd = next((s for s in seeds if sorted(names[s]) != sorted(first)), None)
    if odd is not None:
        raise SeedKLError(f"{where}: seed {odd} has factors {names[odd]} but seed {seeds[0]} has {first}; "
                          "give every seed the same factor names")
    return {s: {k: table[s][k] for k in first} for s in seeds}


def parse_list(flag: str, value: str | list | tuple | None, kind=str) -> tuple | None:
    """'1,3,5' (or a list, as absl's DEFINE_list gives) -> tuple of `kind`; None/empty -> None."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    items = [str(i).strip() for i in items if str(i).strip()]
    if not items:
        return None
    try:
        return tuple(kind(i) for i in items)
    except SeedKLError:  # kind's own message (a SeedKLError is a ValueError too)
        raise
    except ValueError:
        raise SeedKLError(f"{flag}={','.join(items)}: not a comma list of {kind.__name__}s; e.g. {flag}=1,3,5") from None


def _fields(flag: str, template: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise SeedKLError(f"{flag}={template!r}: not a valid template ({e}); use {{size}}, {{seed}}, {{step}}") from None


def _hub_cached(model: str, revision: str | None, cache_dir, dtype: str) -> bool:
    """Loadable offline: in seedkl's converted-params cache, or config.json in HF's local cache."""
    try:
        from seedkl_jax.convert import cache
        if cache.is_complete(cache.entry_dir(cache.cache_root(cache_dir), model, revision, dtype, None)):
            return True
    except Exception:  # the cache layout is the loader's business; fall back to HF's cache
        pass
    return hub.in_hf_cache(model, revision)


def missing_checkpoints(suite: Suite, cache_dir=None, dtype: str = "float32") -> list[str]:
    """Every checkpoint of the suite that cannot be loaded, one line each ('' list = all present).

    Local: the folder, its config.json and a weights file must exist. Hub: converted in seedkl's cache
    (`cache_dir`, `dtype` as the loads will use), in the local HF cache, or the repository and revision exist on the hub; if the hub is unreachable every uncached checkpoint
    is listed as unverifiable (the run must not start on a guess).
    """
    problems, todo = [], []
    for size, step, seed, model, revision in suite.checkpoints():
        if suite.is_local:
            why = local_problem(model)
            if why:
                problems.append(f"{model}: {why} (size {size}, step {step}, seed {seed})")
        elif not _hub_cached(model, revision, cache_dir, dtype):
            todo.append((model, revision))
    if todo:
        try:
            problems += hub.missing_on_hub(todo)
        except Exception as e:  # no network: cannot verify any of them
            problems += [f"{m}@{r}: not in the local cache and the hub is unreachable ({type(e).__name__})"
                         for m, r in todo]
    return problems


def check_complete(suite: Suite, cache_dir=None, dtype: str = "float32") -> None:
    """Raise one SeedKLError listing every missing checkpoint; called before any compute."""
    missing = missing_checkpoints(suite, cache_dir, dtype)
    if missing:
        shown = missing if len(missing) <= 200 else missing[:200] + [f"... and {len(missing) - 200} more"]
        fix = ("fix the paths or --model_template" if suite.is_local else
               "download them or point --model_template/--revision_template='' at local folders")
        raise SeedKLError(f"suite: {len(missing)} of {len(suite.groups()) * len(suite.seeds)} checkpoints missing "
                          f"({fix}): " + "; ".join(shown))


def check_configs(suite: Suite, cache_dir=None, dtype: str = "float32") -> Any:
    """Before any compute, after `study.checks.check_suite` (which compares the raw configs within each
    group): each checkpoint's family-specific needs (`checkpoint_config`: e.g. BERT's MLM head) and one
    family for the whole suite (its scoring and windows depend on it). Returns the first config.

    Local suites read every config.json (cheap); hub suites the first checkpoint's, plus every one already
    on this machine — the rest are checked as their group loads, before that group computes.
    """
    from seedkl_jax.convert.loader import checkpoint_config

    first = None
    for size, step, seed, model, revision in suite.checkpoints():
        if first is not None and not suite.is_local and not _hub_cached(model, revision, cache_dir, dtype):
            continue
        name = hub.ref_string(model, revision)
        config = checkpoint_config(model, revision, dtype=dtype, cache_dir=cache_dir)
        first = first or (name, config)
        if type(first[1]) is not type(config):
            raise SeedKLError(f"suite: {name} is a {config.model_type} checkpoint but {first[0]} a "
                              f"{first[1].model_type} one; a suite must be one model family (check the templates)")
    return first[1]
