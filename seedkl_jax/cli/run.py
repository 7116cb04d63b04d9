"""`seedkl run`: the convergence study on a seed suite, configured by absl flags (flagfiles work:
`seedkl run --flagfile=study.flags`).

A suite starts from `--preset` (polypythia: EleutherAI/pythia-{size}-seed{seed} at revision
step{step}, 5 sizes x 20 steps x seeds 1,3,5,7,9) and any of --model_template, --revision_template,
--sizes, --steps, --seeds replaces that part. For local checkpoints:

  seedkl run --preset= --model_template=/data/suite/{size}/seed{seed}/step{step} --revision_template= \\
      --sizes=14m,70m --steps=0,16,256,2000 --seeds=1,2,3 --text=eval.txt --out=results/

Resume, and one writer per folder:

  seedkl run --flagfile=study.flags           # killed? rerun the same command: finished groups are kept
  seedkl run --flagfile=study.flags --wait    # queue behind another run writing the same --out

The flag names are fixed: external scripts use them. Exit status: 0 done, 2 bad input or environment
(one error line; every checkpoint is checked before any compute), 1 a bug.
"""
from __future__ import annotations

import os

from absl import flags

from seedkl_jax.errors import SeedKLError

def _preset_help() -> str:
    from seedkl_jax.study.suite import describe_presets

    return ("Built-in suite to start from; '' = none, then --model_template, --sizes, --steps and --seeds are all "
            "needed. Presets:\n" + describe_presets())


_PRESET = flags.DEFINE_string("preset", "polypythia", _preset_help())
_MODEL_TEMPLATE = flags.DEFINE_string(
    "model_template", None, "Checkpoint of one (size, seed, step): hub id or local folder with {size}, {seed}, "
    "{step} placeholders, e.g. EleutherAI/pythia-{size}-seed{seed} or /data/suite/{size}/seed{seed}/step{step}. "
    "A local path (starting with / . or ~) implies --revision_template= unless that flag is given.")
_REVISION_TEMPLATE = flags.DEFINE_string(
    "revision_template", None, "Hub revision of one checkpoint, e.g. step{step}; empty = the model template "
    "gives local paths (no revision).")
_SIZES = flags.DEFINE_list("sizes", None, "Comma list of sizes (the {size} values), e.g. 14m,70m.")
_STEPS = flags.DEFINE_list("steps", None, "Comma list of training steps (ascending), e.g. 0,16,256,2000.")
_SEEDS = flags.DEFINE_list("seeds", None, "Comma list of seeds (at least 2): integers or names, e.g. 1,3,5,7,9 or "
                           "alias-gpt2-small-x21,battlestar-gpt2-small-x49.")
_TEXT = flags.DEFINE_string(
    "text", None, "Evaluation text: a UTF-8 file whose documents are separated by <|endoftext|>, a folder of "
    "*.txt files (one document each), or an .npy of token ids used as given. Text is scored as "
    "<|endoftext|> + documents + <|endoftext|>.")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "tokenizer.json, model folder or hub id; default: the suite's "
                                 "first checkpoint. Every checkpoint must carry the same tokenizer.")
_COUNTS = flags.DEFINE_string("counts", None, "Token frequencies for the frequency bins and the unigram baseline: "
                              ".npy with one count per token id (length = tokenizer vocab); default: counted "
                              "over the text.")
_POS = flags.DEFINE_string("pos", "stanza", "Part-of-speech tags: stanza (tagged once, cached; if stanza or its "
                           "model is unavailable the study goes on without tags unless --pos=stanza was given "
                           "explicitly), none, or a JSON file with one [token_str, tag] per token id.")
_OUT = flags.DEFINE_string("out", "seedkl-out", "Output folder (tokens/pairs/token_meta/summary parquet, "
                           "phases.json, figures/, report.md, groups/). Rerunning into it resumes.")
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Recompute finished groups (and accept new settings) in --out.")
_WAIT = flags.DEFINE_boolean("wait", False, "If another seedkl run is writing to --out, wait for it to end "
                             "(default: exit 2 at once).")
_WINDOW = flags.DEFINE_integer("window", None, "Tokens the models see at once: texts longer than this are "
                               "scored in sliding windows. Must fit every model's context (max_position_embeddings), "
                               "checked before any compute; default the model's context (GPT-NeoX 2048, GPT-2 1024, "
                               "BERT 512 incl. [CLS]/[SEP]).")
_OVERLAP = flags.DEFINE_integer("overlap", None, "Overlap between consecutive windows (left context kept); default "
                                "half the window (causal models; masked LMs score documents in chunks, no overlap).")
_MLM_SCORING = flags.DEFINE_enum(
    "mlm_scoring", None, ["unmasked", "masked"], "Masked LMs (BERT) only: 'unmasked' (default, the paper's: each "
    "document fed as is, the MLM distribution at every wordpiece) or 'masked' (every wordpiece masked once, in 7 "
    "interleaved passes: 7x the forward passes).")
_VOCAB_CHUNK = flags.DEFINE_integer("vocab_chunk", None, "Vocab chunk of the fused KL kernel; default: the "
                                    "kernel's benchmarked choice.")
_KERNEL = flags.DEFINE_enum("kernel", "fused", ["fused", "naive"], "Divergence kernel: fused (vocab-chunked) or "
                            "naive (materialises all [S,P,V] log-probs; a baseline, much more memory).")
_KERNEL_FORM = flags.DEFINE_enum("kernel_form", None, ["pair", "einsum", "onepass", "native"],
                                 "KL form of the fused kernel: pair (two passes, exact), einsum, onepass (one "
                                 "pass, online rescaling), native (onepass with a compiled CPU chunk update; one "
                                 "device); default: the backend's measured choice (native on CPU where it builds).")
_POSITION_BLOCK = flags.DEFINE_integer("position_block", None, "Positions per block of the fused kernel (Pb); "
                                       "default: the kernel's benchmarked choice for the form.")
_CACHE_LOGITS = flags.DEFINE_boolean("cache_logits", None, "Two-pass forms: keep each block's logits from pass 1 "
                                     "for pass 2 instead of recomputing them; default: off on CPU, on elsewhere.")
_VOCAB_SIZE = flags.DEFINE_integer(
    "vocab_size", None, "Normalise next-token distributions over ids < N (the real vocabulary); default: every id "
    "the tokenizer defines. The shared NeoX tokenizer fixture defines 4 ids beyond Pythia's 50,277: pass 50277.")
_CACHE_DIR = flags.DEFINE_string("cache_dir", None, "Converted-params cache (default $SEEDKL_CACHE or "
                                 "~/.cache/seedkl); also caches PoS tags.")
_SAVE_PAIR_POSITIONS = flags.DEFINE_boolean("save_pair_positions", False, "Also write pair_positions.parquet: "
                                            "KL of every ordered seed pair at every position.")
_N_BOOT = flags.DEFINE_integer("n_boot", 1000, "Bootstrap replicates for the summary's 95% intervals.")
_COMPAT = flags.DEFINE_enum("compat", "none", ["none", "paper"], "paper = the paper's own choices: final-surprisal "
                            "bins from the first seed, one frequency bin for counts >= 1e5, the unsmoothed unigram "
                            "with the paper's floor for zero counts; none = our corrected defaults (the report says "
                            "how much each moves the results).")

_SURPRISAL_SEED = flags.DEFINE_string("surprisal_seed", None, "A seed NOT among --seeds whose surprisal at each "
                                      "size's last step defines the final-surprisal bins (e.g. 2 for PolyPythia "
                                      "comparing 1,3,5,7,9); default: from the compared seeds.")


def _looks_local(template: str) -> bool:
    """A filesystem path, not a hub id (hub ids are `owner/name`, never starting with / . or ~)."""
    return template.startswith(("/", ".", "~")) or os.path.isabs(template)


def build_config():
    """StudyConfig from the parsed flags."""
    from seedkl_jax.study.run import StudyConfig
    from seedkl_jax.study.suite import Suite, get_preset, parse_list, seed_value

    sizes = parse_list("--sizes", _SIZES.value, str)
    steps = parse_list("--steps", _STEPS.value, int)
    seeds = parse_list("--seeds", _SEEDS.value, seed_value)
    revision = _REVISION_TEMPLATE.value
    if revision is None and _MODEL_TEMPLATE.value is not None and _looks_local(_MODEL_TEMPLATE.value):
        revision = ""  # a local path template with the preset's hub revision makes no sense
    if _PRESET.value:
        suite = get_preset(_PRESET.value).override(sizes=sizes, steps=steps, seeds=seeds,
                                                   model_template=_MODEL_TEMPLATE.value, revision_template=revision)
    else:
        missing = [f for f, v in (("--model_template", _MODEL_TEMPLATE.value), ("--sizes", sizes),
                                  ("--steps", steps), ("--seeds", seeds)) if v is None]
        if missing:
            raise SeedKLError(f"--preset='': {', '.join(missing)} must be given without a preset; "
                              "give them or use --preset=polypythia")
        suite = Suite(sizes=sizes, steps=steps, seeds=seeds, model_template=_MODEL_TEMPLATE.value,
                      revision_template=revision or "")
    if not _TEXT.value:
        raise SeedKLError("--text: required; give a text file, a folder of .txt documents or an .npy of ids")
    return StudyConfig(
        suite=suite, text=_TEXT.value, out=_OUT.value, tokenizer=_TOKENIZER.value or None,
        counts=_COUNTS.value or None, pos=_POS.value,
        pos_required=_POS.value == "stanza" and flags.FLAGS["pos"].present,
        overwrite=_OVERWRITE.value, wait=_WAIT.value, window=_WINDOW.value, overlap=_OVERLAP.value,
        mlm_scoring=_MLM_SCORING.value,
        vocab_chunk=_VOCAB_CHUNK.value or None, kernel=_KERNEL.value, kernel_form=_KERNEL_FORM.value,
        position_block=_POSITION_BLOCK.value or None, cache_logits=_CACHE_LOGITS.value,
        vocab_size=_VOCAB_SIZE.value, cache_dir=_CACHE_DIR.value or None,
        save_pair_positions=_SAVE_PAIR_POSITIONS.value, n_boot=_N_BOOT.value, compat=_COMPAT.value,
        surprisal_seed=seed_value(_SURPRISAL_SEED.value) if _SURPRISAL_SEED.value else None,
    )


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise SeedKLError(f"seedkl run: unexpected argument(s) {argv[1:]}; every setting is a --flag")
    from seedkl_jax.study.run import run_study

    report = run_study(build_config())
    print(f"report: {report}")
    return 0
