"""A seed suite: sizes x steps x seeds, resolved to checkpoints by two string templates.

Why templates: the same study runs on hub suites (PolyPythias: model `EleutherAI/pythia-{size}-seed{seed}`
at revision `step{step}`) and on local folders (`/data/suite/{size}/seed{seed}/step{step}`, revision
template empty) without any code knowing which. Placeholders are `{size}`, `{seed}`, `{step}`.

Before any compute the study calls `missing_checkpoints` and refuses to start unless every checkpoint
resolves: a sweep of 100 groups should not die on group 73 because one folder is missing. Local
checkpoints are checked on disk; hub checkpoints are looked up in the local HF cache and, for the rest,
on the hub (one query per repository). When the hub cannot be reached the uncached ones are all listed
as unverifiable, which also stops the run (point the templates at local folders instead).
"""
from __future__ import annotations

import dataclasses
import os
import string
from typing import Any, Iterator

from seedkl_jax.analysis.lr import PYTHIA as PYTHIA_LR
from seedkl_jax.errors import SeedKLError

PLACEHOLDERS = ("size", "seed", "step")
# The 20 checkpoints the paper evaluates: log-spaced early training, then the regular saves, then the last.
POLYPYTHIA_STEPS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512,
                    1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 143000)
HUB_TIMEOUT_S = 10.0
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


@dataclasses.dataclass(frozen=True)
class Suite:
    """sizes x steps x seeds; `checkpoint(size, step, seed) -> (model, revision or None)`.

    sizes: labels substituted for {size} (e.g. "70m"); steps: training steps, ascending; seeds: ints.
    model_template: hub id or local path; revision_template: hub revision, "" for local paths.
    """

    sizes: tuple[str, ...]
    steps: tuple[int, ...]
    seeds: tuple[int, ...]
    model_template: str
    revision_template: str = ""
    lr_schedule: Any = dataclasses.field(default=None, compare=False)  # analysis.lr.LRSchedule (figure only)

    def __post_init__(self):
        # Accept lists from callers; keep tuples so the suite is hashable and compares by value.
        object.__setattr__(self, "sizes", tuple(str(s) for s in self.sizes))
        object.__setattr__(self, "steps", tuple(int(s) for s in self.steps))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))

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

    def checkpoint(self, size: str, step: int, seed: int) -> tuple[str, str | None]:
        """(model id or local path, revision or None) of one checkpoint."""
        values = {"size": size, "step": int(step), "seed": int(seed)}
        model = self.model_template.format(**values)
        if self.is_local:
            return os.path.abspath(os.path.expanduser(model)), None
        return model, self.revision_template.format(**values)

    def groups(self) -> list[tuple[str, int]]:
        """(size, step) in run order: sizes as given, steps ascending."""
        return [(size, step) for size in self.sizes for step in self.steps]

    def checkpoints(self) -> Iterator[tuple[str, int, int, str, str | None]]:
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
    ),
}
POLYPYTHIA_AVAILABLE_SEEDS = tuple(range(1, 10))


def get_preset(name: str) -> Suite:
    if name not in PRESETS:
        raise SeedKLError(f"--preset={name!r}: unknown preset; choose one of {sorted(PRESETS)} or give "
                          "--preset='' with --model_template, --sizes, --steps and --seeds")
    return PRESETS[name]


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
    except ValueError:
        raise SeedKLError(f"{flag}={','.join(items)}: not a comma list of {kind.__name__}s; e.g. {flag}=1,3,5") from None


def _fields(flag: str, template: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise SeedKLError(f"{flag}={template!r}: not a valid template ({e}); use {{size}}, {{seed}}, {{step}}") from None


def _local_problem(path: str) -> str | None:
    if not os.path.isdir(path):
        return "no such directory"
    if not os.path.isfile(os.path.join(path, "config.json")):
        return "no config.json"
    if not any(os.path.isfile(os.path.join(path, f)) for f in WEIGHT_FILES):
        return "no weights (model.safetensors or pytorch_model.bin)"
    return None


def _hub_cached(model: str, revision: str | None, cache_dir, dtype: str) -> bool:
    """Loadable offline: in seedkl's converted-params cache, or config.json in HF's local cache."""
    try:
        from seedkl_jax.convert import cache
        if cache.is_complete(cache.entry_dir(cache.cache_root(cache_dir), model, revision, dtype, None)):
            return True
    except Exception:  # the cache layout is the loader's business; fall back to HF's cache
        pass
    try:
        from huggingface_hub import try_to_load_from_cache
        return isinstance(try_to_load_from_cache(model, "config.json", revision=revision), str)
    except Exception:  # malformed repo id etc.: let the hub query decide
        return False


def _hub_missing(todo: list[tuple[str, str | None]]) -> list[str]:
    """Query the hub once per repository for its refs; returns problems (or raises when unreachable)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ConnectionError("HF_HUB_OFFLINE is set")
    api, problems, refs = HfApi(), [], {}
    try:  # one short reachability probe, so a dead network costs seconds, not a timeout per repository
        api.model_info(todo[0][0], timeout=HUB_TIMEOUT_S)
    except (RepositoryNotFoundError, HFValidationError):
        pass  # reachable; that repository is reported below
    for model, revision in todo:
        if model not in refs:
            try:
                r = api.list_repo_refs(model)
                refs[model] = {b.name for b in r.branches} | {t.name for t in r.tags}
            except (RepositoryNotFoundError, HFValidationError):
                refs[model] = None
        if refs[model] is None:
            problems.append(f"{model}: no such hub repository")
        elif revision is not None and revision not in refs[model] and not _is_commit(revision):
            problems.append(f"{model}@{revision}: no such revision on the hub")
    return problems


def _is_commit(revision: str) -> bool:
    return len(revision) == 40 and all(c in "0123456789abcdef" for c in revision.lower())


def missing_checkpoints(suite: Suite, cache_dir=None, dtype: str = "float32") -> list[str]:
    """Every checkpoint of the suite that cannot be loaded, one line each ('' list = all present).

    Local: the folder, its config.json and a weights file must exist. Hub: converted in seedkl's cache
    (`cache_dir`, `dtype` as the loads will use), in the local HF cache, or the repository and revision exist on the hub; if the hub is unreachable every uncached checkpoint
    is listed as unverifiable (the run must not start on a guess).
    """
    problems, todo = [], []
    for size, step, seed, model, revision in suite.checkpoints():
        if suite.is_local:
            why = _local_problem(model)
            if why:
                problems.append(f"{model}: {why} (size {size}, step {step}, seed {seed})")
        elif not _hub_cached(model, revision, cache_dir, dtype):
            todo.append((model, revision))
    if todo:
        try:
            problems += _hub_missing(todo)
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
