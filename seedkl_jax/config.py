"""One typed config for a study: `StudyConfig`, a tree of small frozen dataclasses.

Why one tree: every setting is named, typed, defaulted, documented and validated in exactly one
place. The CLI generates its absl flags from these fields (name, help, default: `flag` metadata), the
persisted study settings and the multi-host agreement check are derived from them, and the library
passes the sub-config a layer needs instead of loose keyword arguments.

This module is the ground floor: it imports nothing from seedkl_jax but `errors`, so every layer
(kernels, data, study, analysis, cli) can import the sub-config it consumes.

Tree (flag names in brackets; they are fixed, external scripts use them; * = Python only, no flag):
    StudyConfig                 [dtype*, mesh*]
      suite:    SuiteConfig     [preset, model_template, revision_template, sizes, steps, seeds, lr_schedule*]
      text:     TextConfig      [text, tokenizer, counts, pos, vocab_size, pos_required*]
      scoring:  ScoringConfig   [window, overlap, mlm_scoring]
      kernel:   KernelConfig    [kernel, kernel_form, vocab_chunk, position_block, cache_logits]
      measure:  MeasureConfig   [metrics, save_topk, icl_text, icl_positions, minimal_pairs]
      analysis: AnalysisConfig  [compat, n_boot, surprisal_seed]
      output:   OutputConfig    [out, overwrite, wait, cache_dir, save_pair_positions]

The suite stays as given here (a preset name plus overrides); `study.suite.resolve_suite` turns it
into the checkpoints' `Suite` once, when a study starts. A resolved `Suite` is also accepted as
`StudyConfig(suite=...)` (it becomes preset='' with its fields). From Python:

    StudyConfig(suite=SuiteConfig(sizes=("70m",), steps=(0, 143000)), text=TextConfig(text="eval.txt"),
                output=OutputConfig(out="results"))
    StudyConfig.from_flat(sizes=("70m",), steps=(0, 143000), text="eval.txt", out="results")  # by flag name

Everything that needs no file is validated once, when a config is built (`__post_init__`); what needs
the files (the model's context, the tokenizer's vocab) is checked by the study before any compute.
Field metadata (`setting`) drives: the CLI flags (cli/flags.py), what study.json records
(`results=True`, `results_values`) and what every process of a multi-host run must agree on
(every field but `per_process=True` ones, `agreement_values`).
"""
from __future__ import annotations

import dataclasses
import enum
import re
from typing import Any

from seedkl_jax.errors import SeedKLError


def setting(default: Any, help: str, *, flag: str | None = None, choices: tuple[str, ...] | None = None,
            cli: bool = True, results: bool = False, per_process: bool = False, path: bool = False) -> Any:
    """A config field with its CLI metadata.

    flag: the absl flag's name (default: the field's name); choices: an enum flag's values;
    cli=False: set only from Python (e.g. a mesh); results=True: the persisted groups depend on it
    (a rerun into the same --out must match it; see `results_values`); per_process=True: may differ
    between the processes of one multi-host run (see `agreement_values`); path=True: a local file or
    folder (compared across processes as an absolute path).
    """
    meta = {"help": help, "flag": flag, "choices": choices, "cli": cli, "results": results,
            "per_process": per_process, "path": path}
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults are not allowed in a config; use a tuple")
    return dataclasses.field(default=default, metadata=meta)


class _StrEnum(str, enum.Enum):
    """A str enum that prints as its value (f"{Compat.PAPER}" == "paper", as in reports and messages)."""

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__  # noqa: PLE0302 - format like the plain string


class Compat(_StrEnum):
    """Which statistical choices the analysis makes: ours (NONE) or the paper's own (PAPER)."""

    NONE = "none"
    PAPER = "paper"


class KernelForm(_StrEnum):
    """The fused kernel's KL form (kernels/divergence.py has the math of each): the one list of
    forms, checked once by `kernels.defaults.resolve_kernel`. All are plain XLA (no run-time compiler)."""

    PAIR = "pair"
    EINSUM = "einsum"
    ONEPASS = "onepass"


class KernelKind(_StrEnum):
    FUSED = "fused"
    NAIVE = "naive"


def _enum(kind: type[enum.Enum], value: Any, flag: str):
    if value is None or isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        raise SeedKLError(f"--{flag}={value!r}: must be one of {', '.join(m.value for m in kind)}") from None


def check_window(window: int, overlap: int) -> None:
    """The one rule on window/overlap numbers (the model's context is checked where it is known)."""
    if window < 1 or not 0 <= overlap < window:
        raise SeedKLError(f"window/overlap: need window ≥ 1 and 0 ≤ overlap < window, got window={window}, "
                          f"overlap={overlap}; e.g. --window=2048 --overlap=1024")


def _positive(value: int | None, flag: str) -> None:
    if value is not None and int(value) < 1:
        raise SeedKLError(f"--{flag}={value}: must be a positive integer")


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """How the divergence kernel runs. `kernels.compare.resolve_kernel(cfg, mesh, n_seeds)` fills every
    None once (the backend's measured choice) and the resolved config is passed down unchanged."""

    kernel: KernelKind = setting(KernelKind.FUSED, "Divergence kernel: fused (vocab-chunked) or naive "
                                 "(materialises all [S,P,V] log-probs; a baseline, much more memory).",
                                 choices=tuple(m.value for m in KernelKind))
    form: KernelForm | None = setting(None, "KL form of the fused kernel: pair (two passes, exact), einsum, "
                                      "onepass (one pass, online rescaling); default: the backend's measured "
                                      "choice (docs/method.md).", flag="kernel_form",
                                      choices=tuple(m.value for m in KernelForm))
    vocab_chunk: int | None = setting(None, "Vocab chunk of the fused KL kernel; default: the kernel's "
                                      "benchmarked choice.")
    position_block: int | None = setting(None, "Positions per block of the fused kernel (Pb); default: the "
                                         "kernel's benchmarked choice for the form.")
    cache_logits: bool | None = setting(None, "Two-pass forms: keep each block's logits from pass 1 for pass 2 "
                                        "instead of recomputing them; default: off on CPU, on elsewhere.")

    def __post_init__(self):
        object.__setattr__(self, "kernel", _enum(KernelKind, self.kernel, "kernel"))
        object.__setattr__(self, "form", _enum(KernelForm, self.form, "kernel_form"))
        _positive(self.vocab_chunk, "vocab_chunk")
        _positive(self.position_block, "position_block")


@dataclasses.dataclass(frozen=True)
class AnalysisConfig:
    """How the persisted per-position results are summarised (analysis/, report/)."""

    compat: Compat = setting(Compat.NONE, "paper = the paper's own choices: final-surprisal bins from the first "
                             "seed, one frequency bin for counts >= 1e5, the unsmoothed unigram with the paper's "
                             "floor for zero counts; none = our corrected defaults (the report says how much each "
                             "moves the results).", choices=tuple(m.value for m in Compat),
                             results=True)  # the kernel's unigram reference differs
    n_boot: int = setting(1000, "Bootstrap replicates for the summary's 95% intervals.")
    surprisal_seed: int | str | None = setting(
        None, "A seed NOT among the compared ones whose surprisal at each size's last step defines the "
        "final-surprisal bins (e.g. PolyPythia's 2: it has seeds 1..9, the paper compares 1,3,5,7,9), so the "
        "bins do not come from the seeds whose KL is measured; default: from the compared seeds (mean, or the "
        "first seed with --compat=paper). The report says which.")

    def __post_init__(self):
        object.__setattr__(self, "compat", _enum(Compat, self.compat, "compat"))
        _positive(self.n_boot, "n_boot")
        if self.surprisal_seed is not None and str(self.surprisal_seed).strip() != "":
            object.__setattr__(self, "surprisal_seed", seed_value(self.surprisal_seed, "surprisal_seed"))
        else:
            object.__setattr__(self, "surprisal_seed", None)


def _local(template: str) -> bool:
    """A filesystem path, not a hub id (hub ids are `owner/name`, never starting with / . or ~)."""
    return template.startswith(("/", ".", "~"))


def _as_tuple(value: Any, flag: str, kind=str) -> tuple | None:
    """A comma list (str, or a list as absl's DEFINE_list gives) as a tuple of `kind`; None or empty ->
    None (not given)."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    items = [i.strip() if isinstance(i, str) else i for i in items]
    items = [i for i in items if i != ""]
    try:
        return tuple(kind(i) for i in items) or None
    except SeedKLError:  # kind's own named error (seed_value) says more than the generic one below
        raise
    except (TypeError, ValueError):
        raise SeedKLError(f"--{flag}={','.join(map(str, items))}: not a comma list of {kind.__name__}s; "
                          f"e.g. --{flag}=1,3,5") from None


_SEED_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*$")


def seed_value(value: Any, flag: str = "seeds") -> int | str:
    """A seed as given: an integer ("3" -> 3), else a name (kept as written, e.g. "alias-gpt2-small-x21")."""
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        pass
    if not _SEED_NAME.match(text):
        raise SeedKLError(f"--{flag}: {text!r} is neither an integer nor a name (letters, digits, '.', '_', '-'); "
                          "e.g. --seeds=1,3,5 or --seeds=alias-gpt2-small-x21,battlestar-gpt2-small-x49")
    return text


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
    """Which checkpoints: a preset and the parts that replace its own (`None` = the preset's).
    `study.suite.resolve_suite` turns it into the checkpoints' `Suite`."""

    preset: str = setting("polypythia", "Built-in suite to start from; '' = none, then --model_template, --sizes, "
                          "--steps and --seeds are all needed.", results=True)
    model_template: str | None = setting(
        None, "Checkpoint of one (size, seed, step): hub id or local folder with {size}, {seed}, {step} "
        "placeholders, e.g. EleutherAI/pythia-{size}-seed{seed} or /data/suite/{size}/seed{seed}/step{step}. "
        "A local path (starting with / . or ~) implies --revision_template= unless that flag is given.",
        results=True)
    revision_template: str | None = setting(None, "Hub revision of one checkpoint, e.g. step{step}; empty = the "
                                            "model template gives local paths (no revision).", results=True)
    sizes: tuple[str, ...] | None = setting(None, "Comma list of sizes (the {size} values), e.g. 14m,70m.",
                                            results=True)
    steps: tuple[int, ...] | None = setting(None, "Comma list of training steps (ascending), e.g. 0,16,256,2000.",
                                            results=True)
    seeds: tuple[int | str, ...] | None = setting(
        None, "Comma list of seeds (at least 2): integers or names, e.g. 1,3,5,7,9 or "
        "alias-gpt2-small-x21,battlestar-gpt2-small-x49.", results=True)
    lr_schedule: Any = setting(None, "analysis.lr.LRSchedule drawn in the figures (the preset's by default).",
                               cli=False)
    # a resolved Suite given from Python keeps its analysis-only parts through `of` (not flags)
    phase_steps: tuple[int, ...] | None = setting(None, "Reference phase boundaries (Suite.phase_steps); None: the "
                                                  "preset's.", cli=False)
    factor_table: Any = setting(None, "seed -> {factor: value} (Suite.seed_factors); --seed_factors replaces it; "
                                "None: the preset's.", cli=False)
    seed_factors: str | None = setting(
        None, "JSON file: seed -> {factor: value} (e.g. {\"1\": {\"init\": 1, \"data\": 0}}); every ordered seed "
        "pair gets the type of the factors that differ (init, data, init+data) and E[conv] is reported per pair "
        "type; default: the preset's table, if it has one.", path=True)

    def __post_init__(self):
        object.__setattr__(self, "sizes", _as_tuple(self.sizes, "sizes", str))
        object.__setattr__(self, "steps", _as_tuple(self.steps, "steps", int))
        object.__setattr__(self, "seeds", _as_tuple(self.seeds, "seeds", seed_value))
        if self.revision_template is None and self.model_template and _local(self.model_template):
            object.__setattr__(self, "revision_template", "")  # a local path with the preset's hub revision: no
        if not self.preset:
            missing = [f"--{f}" for f in ("model_template", "sizes", "steps", "seeds") if getattr(self, f) is None]
            if missing:
                raise SeedKLError(f"--preset='': {', '.join(missing)} must be given without a preset; "
                                  "give them or use --preset=polypythia")
        if self.seeds is not None and len(self.seeds) < 2:
            raise SeedKLError(f"--seeds={','.join(map(str, self.seeds))}: needs at least 2 seeds to compare")

    @classmethod
    def of(cls, suite: Any) -> "SuiteConfig":
        """A resolved `study.suite.Suite` (or a SuiteConfig) as a SuiteConfig: preset='' with its fields."""
        if isinstance(suite, SuiteConfig):
            return suite
        return cls(preset="", model_template=suite.model_template, revision_template=suite.revision_template,
                   sizes=suite.sizes, steps=suite.steps, seeds=suite.seeds,
                   lr_schedule=getattr(suite, "lr_schedule", None), phase_steps=getattr(suite, "phase_steps", None),
                   factor_table=getattr(suite, "seed_factors", None))


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """What is scored and how it is annotated (data/)."""

    text: str | None = setting(
        None, "Evaluation text: a UTF-8 file whose documents are separated by <|endoftext|>, or a folder of *.txt "
        "files (one document each) - scored as <|endoftext|> + documents joined by <|endoftext|> + "
        "<|endoftext|> - or an .npy of integer token ids, scored exactly as given (nothing added; no PoS "
        "from stanza).", results=True, path=True)
    tokenizer: str | None = setting(None, "tokenizer.json, model folder or hub id; default: the suite's first "
                                    "checkpoint. Every checkpoint must carry the same tokenizer.", results=True)
    counts: str | None = setting(None, "Token frequencies for the frequency bins and the unigram baseline: .npy "
                                 "with one count per token id (length = tokenizer vocab); default: counted over "
                                 "the text.", results=True, path=True)
    pos: str = setting("stanza", "Part-of-speech tags: stanza (tagged once, cached; if stanza or its model is "
                       "unavailable the study goes on without tags unless --pos=stanza was given explicitly), "
                       "none, or a JSON file: a list with one [token_str, tag] (or [token_str, upos, xpos]) "
                       "per token of the scored text, in order, both end-of-text tokens included (as many "
                       "entries as the text has token ids; tag UPOS or Penn, null/UNK = none).")
    vocab_size: int | None = setting(
        None, "Normalise next-token distributions over ids < N (the real vocabulary); default: every id the "
        "tokenizer defines (Pythia's NeoX tokenizer: its 50,277 real ids, not the model's 50,304 padded rows).",
        results=True)
    pos_required: bool = setting(False, "stanza unavailable: False = warn and go on untagged, True = an error "
                                 "(the CLI sets it when --pos=stanza is given explicitly).", cli=False)

    def __post_init__(self):
        for name in ("text", "tokenizer", "counts"):  # an empty flag means "not given"
            if getattr(self, name) == "":
                object.__setattr__(self, name, None)
        if not self.pos:
            raise SeedKLError("--pos='': give stanza, none or a JSON file of [token_str, tag] per token of the text")
        if self.vocab_size is not None and int(self.vocab_size) < 2:
            raise SeedKLError(f"--vocab_size={self.vocab_size}: must be ≥ 2 (or unset: every tokenizer id)")


METRICS = ("kl", "top1", "js")


@dataclasses.dataclass(frozen=True)
class MeasureConfig:
    """What is measured beyond the per-position KL: agreement metrics and top-k in the same fused pass
    (kernels/), and probes that need the models themselves (study/probes.py: ICL score, minimal pairs)."""

    metrics: tuple[str, ...] = setting(
        ("kl", "top1"), "Comma list of pairwise metrics computed in the fused pass: kl (always), top1 (do two "
        "seeds' most likely next tokens agree; agreement = 1 - churn), js (Jensen-Shannon divergence; costs a "
        "log per pair per vocab id).", results=True)
    save_topk: int = setting(5, "Each seed's K most likely next tokens and their probabilities at every "
                             "position, written as topk.parquet; 0 = none.", results=True)
    icl_text: str | None = setting(
        None, "Text for the ICL score (documents long enough for --icl_positions); default: the study's text; "
        "'none' = no ICL score.", results=True, path=True)
    icl_positions: tuple[int, ...] = setting(
        (100, 450, 501), "ICL score positions long_start,short_start,target in a document's ids with the start "
        "token: the loss of token `target` given [short_start, target) minus its loss given [long_start, "
        "target) (positive = the longer context helps).", results=True)
    minimal_pairs: str | None = setting(
        None, "BLiMP-format JSONL (sentence_good, sentence_bad, UID) scored per seed: log P(good) - log P(bad), "
        "accuracy and seed agreement per task.", results=True, path=True)

    def __post_init__(self):
        metrics = _as_tuple(self.metrics, "metrics", str) or ()
        bad = [m for m in metrics if m not in METRICS]
        if bad or "kl" not in metrics:
            raise SeedKLError(f"--metrics={','.join(metrics)}: give a comma list of {', '.join(METRICS)} that "
                              "includes kl, e.g. --metrics=kl,top1,js")
        object.__setattr__(self, "metrics", tuple(m for m in METRICS if m in metrics))  # one order
        if int(self.save_topk) < 0:
            raise SeedKLError(f"--save_topk={self.save_topk}: must be ≥ 0 (0 = no top-k)")
        for name in ("icl_text", "minimal_pairs"):
            if getattr(self, name) == "":
                object.__setattr__(self, name, None)
        positions = _as_tuple(self.icl_positions, "icl_positions", int) or ()
        if len(positions) != 3 or not 0 <= positions[0] < positions[1] < positions[2]:
            raise SeedKLError(f"--icl_positions={','.join(map(str, positions))}: give long_start,short_start,target "
                              "with 0 ≤ long_start < short_start < target, e.g. --icl_positions=100,450,501")
        object.__setattr__(self, "icl_positions", positions)

    @property
    def icl(self) -> bool:
        return (self.icl_text or "").lower() != "none"


MLM_SCORING = ("unmasked", "masked")


@dataclasses.dataclass(frozen=True)
class ScoringConfig:
    """How the text is cut into what the models see (kernels/windows.py)."""

    window: int | None = setting(
        None, "Tokens the models see at once: texts longer than this are scored in sliding windows. Must fit "
        "every model's context (max_position_embeddings), checked before any compute; default the model's "
        "context (GPT-NeoX 2048, GPT-2 1024, BERT 512 incl. [CLS]/[SEP]).", results=True)
    overlap: int | None = setting(None, "Overlap between consecutive windows (left context kept); default half the "
                                  "window (causal models; masked LMs score documents in chunks, no overlap).",
                                  results=True)
    mlm_scoring: str | None = setting(
        None, "Masked LMs (BERT) only: 'unmasked' (default, the paper's: each document fed as is, the MLM "
        "distribution at every wordpiece) or 'masked' (every wordpiece masked once, in 7 interleaved passes: 7x "
        "the forward passes).", choices=MLM_SCORING, results=True)

    def __post_init__(self):
        if self.mlm_scoring is not None and self.mlm_scoring not in MLM_SCORING:
            raise SeedKLError(f"--mlm_scoring={self.mlm_scoring!r}: use one of {', '.join(MLM_SCORING)}")
        if self.window is not None:  # a default window comes from the model's context (the study checks it)
            check_window(int(self.window), int(self.overlap or 0))
        elif self.overlap is not None and int(self.overlap) < 0:
            raise SeedKLError(f"--overlap={self.overlap}: must be ≥ 0")


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    """Where the results go and how a run treats what is already there (study/store.py)."""

    out: str = setting("seedkl-out", "Output folder (tokens/pairs/token_meta/summary parquet, phases.json, "
                       "figures/, report.md, groups/). Rerunning into it resumes.", path=True)
    overwrite: bool = setting(False, "Recompute finished groups (and accept new settings) in --out.")
    # only process 0 takes --out's lock, so only its --wait counts
    wait: bool = setting(False, "If another seedkl run is writing to --out, wait for it to end (default: exit 2 "
                         "at once).", per_process=True)
    # each host may keep its converted params on its own local disk
    cache_dir: str | None = setting(None, "Converted-params cache (default $SEEDKL_CACHE or ~/.cache/seedkl); "
                                    "also caches PoS tags.", per_process=True)
    save_pair_positions: bool = setting(False, "Also write pair_positions.parquet: KL of every ordered seed pair "
                                        "at every position.")

    def __post_init__(self):
        if not self.out:
            raise SeedKLError("--out='': give an output folder")
        if self.cache_dir == "":
            object.__setattr__(self, "cache_dir", None)


DTYPES = ("float32", "bfloat16", "float16")


def _node(cls) -> Any:
    return dataclasses.field(default_factory=cls)


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Everything `seedkl run` needs (see the module docstring for the tree and an example)."""

    suite: SuiteConfig = _node(SuiteConfig)
    text: TextConfig = _node(TextConfig)
    scoring: ScoringConfig = _node(ScoringConfig)
    kernel: KernelConfig = _node(KernelConfig)
    measure: MeasureConfig = _node(MeasureConfig)
    analysis: AnalysisConfig = _node(AnalysisConfig)
    output: OutputConfig = _node(OutputConfig)
    dtype: str = setting("float32", "Params dtype of the loads (the kernel stacks and computes in float32).",
                         cli=False, results=True)
    # each process's own devices (multi-host "groups" mode); the study's numbers do not depend on it
    mesh: Any = setting(None, "jax.sharding.Mesh for compare_stacked; None = the default devices.", cli=False,
                        per_process=True)

    def __post_init__(self):
        object.__setattr__(self, "suite", SuiteConfig.of(self.suite))
        if not self.text.text:
            raise SeedKLError("--text: required; give a text file, a folder of .txt documents or an .npy of ids")
        if self.dtype not in DTYPES:
            raise SeedKLError(f"dtype={self.dtype!r}: use one of {', '.join(DTYPES)}")
        if self.analysis.compat == Compat.PAPER and not self.text.counts:
            raise SeedKLError("--compat=paper needs --counts: the paper's frequency bins and unigram come from "
                              "corpus counts (an .npy with one count per token id), not from the evaluation text")

    @classmethod
    def from_flat(cls, suite: Any = None, **values: Any) -> "StudyConfig":
        """A config from settings named by their flag (non-flag fields by their field name), e.g.
        `StudyConfig.from_flat(suite=my_suite, text="eval.txt", out="res", pos="none", kernel_form="pair")`;
        `suite`: a SuiteConfig or resolved Suite (else the suite flags: preset, sizes, ...)."""
        by_name = {name: path for path, name in flag_names(cls).items()}
        unknown = sorted(set(values) - set(by_name))
        if unknown:
            raise SeedKLError(f"{', '.join(unknown)}: not a setting of a study; known: {', '.join(sorted(by_name))}")
        nodes: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            node, _, leaf = by_name[name].rpartition(".")
            nodes.setdefault(node, {})[leaf] = value
        top = nodes.pop("", {})
        kinds = {f.name: f.default_factory for f in dataclasses.fields(cls) if _is_node(f)}
        if suite is not None:
            if "suite" in nodes:
                raise SeedKLError("suite: given both as a suite and as suite flags; give one")
            top["suite"] = suite
        return cls(**top, **{node: kinds[node](**kw) for node, kw in nodes.items()})


# ---------------------------------------------------------------- walking the tree


def _is_node(f: dataclasses.Field) -> bool:
    return isinstance(f.default_factory, type) and dataclasses.is_dataclass(f.default_factory)


def fields(cls: type = StudyConfig, prefix: str = "") -> dict[str, dataclasses.Field]:
    """Every leaf setting of the tree under `cls`, by dotted path (e.g. "scoring.window"), in order."""
    out = {}
    for f in dataclasses.fields(cls):
        if _is_node(f):
            out.update(fields(f.default_factory, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = f
    return out


def flag_names(cls: type = StudyConfig) -> dict[str, str]:
    """Dotted path -> flag name (the field's name unless its metadata names the flag)."""
    return {path: f.metadata.get("flag") or f.name for path, f in fields(cls).items()}


def get(cfg: Any, path: str) -> Any:
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def plain(value: Any) -> Any:
    """A setting's value as JSON would hold it (enums as their strings, tuples as lists)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return value


def results_values(cfg: StudyConfig) -> dict[str, Any]:
    """Every `results=True` setting, by dotted path: what the persisted groups depend on."""
    return {path: plain(get(cfg, path)) for path, f in fields(type(cfg)).items() if f.metadata.get("results")}


def agreement_values(cfg: StudyConfig) -> dict[str, Any]:
    """Every setting that all processes of one multi-host run must share, by dotted path: all but the
    `per_process=True` ones (path=True ones as absolute paths: the same relative path in another working
    folder is another file). A process with other values would work on another study or group list."""
    import os

    out = {}
    for path, f in fields(type(cfg)).items():
        if f.metadata.get("per_process"):
            continue
        value = get(cfg, path)
        out[path] = os.path.abspath(os.path.expanduser(value)) if f.metadata.get("path") and value else plain(value)
    return out
