"""The Hugging Face hub: how `id@revision` resolves, how the hub is asked (timeouts), what works offline.

A checkpoint is a local folder or a hub id with an optional revision ("EleutherAI/pythia-70m@step1000",
"google/multiberts-seed_0-step_20k", "stanford-crfm/alias-gpt2-small-x21@checkpoint-400000"). What its
files are is hf/checkpoint.py's (config.json, weights) and hf/tokenizer.py's (tokenizer files) business;
this module only fetches the files a caller picks from a repository's listing.

The hub is queried with a timeout of HUB_TIMEOUT_S seconds; offline (HF_HUB_OFFLINE=1, or unreachable),
files already in HF's local cache are used as they are. `huggingface_hub` is imported on use only.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

from seedkl_jax.errors import SeedKLError
from seedkl_jax.hf.checkpoint import CONFIG_FILE

HUB_TIMEOUT_S = 10.0

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def ref_string(model: str, revision: str | None) -> str:
    """"id@revision" (or just the id / path) — how checkpoints are named in messages."""
    return f"{model}@{revision}" if revision else model


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def parse_ref(model: str, revision: str | None) -> tuple[str, str | None, bool]:
    """-> (absolute local path or hub id, revision or None, is_local)."""
    revision = revision or None
    path = Path(model).expanduser()
    if path.exists():
        if revision:
            raise SeedKLError(f"{model}: a local directory takes no revision (got {revision!r}); drop "
                              "the revision, or point at that revision's own directory")
        return str(path.resolve()), None, True
    name, at, rev = model.partition("@")
    if at:
        if not rev or (revision and revision != rev):
            raise SeedKLError(f"{model}: revision after '@' is empty or contradicts revision="
                              f"{revision!r}; give it once, e.g. EleutherAI/pythia-70m@step1000")
        revision = rev
    if _HUB_ID.match(name):
        return name, revision, False
    raise SeedKLError(f"{model}: no such directory (and not a hub id like "
                      "EleutherAI/pythia-70m-seed3@step1000); check the path")


def hub_snapshot(repo_id: str, revision: str | None, pick: Callable[[set[str]], list[str]]) -> Path:
    """Download the files `pick(repo listing)` chooses into HF's cache; return their directory.

    Offline (or hub unreachable), a revision already in HF's local cache is used as is.
    """
    import huggingface_hub as hf

    ref = ref_string(repo_id, revision)
    try:
        info = hf.HfApi().model_info(repo_id, revision=revision, timeout=HUB_TIMEOUT_S)
    except Exception as e:
        err = _hub_error(ref, revision, e)
        try:  # unreachable: a revision already in HF's local cache still works
            snap = Path(hf.snapshot_download(repo_id, revision=revision, local_files_only=True))
            pick({p.name for p in snap.iterdir()})
            return snap
        except Exception:
            raise err from e
    try:
        files = pick({s.rfilename for s in info.siblings or []})
    except SeedKLError as e:
        raise SeedKLError(f"{ref}: {e}; pass a transformers checkpoint of a supported family") from None
    path = None
    for name in files:
        try:
            path = hf.hf_hub_download(repo_id, name, revision=info.sha)
        except Exception as e:
            raise _hub_error(ref, revision, e) from e
    return Path(path).parent


def _hub_error(ref: str, revision: str | None, e: Exception) -> SeedKLError:
    """Translate a huggingface_hub / network failure into one actionable line (or re-raise bugs)."""
    from huggingface_hub import errors as he

    if isinstance(e, he.RevisionNotFoundError):
        return SeedKLError(f"{ref}: revision {revision!r} not found on the hub; use an existing branch "
                           "or tag (Pythia: step0 ... step143000; Mistral GPT-2: checkpoint-N; MultiBERTs: main)")
    if isinstance(e, he.RepositoryNotFoundError):
        return SeedKLError(f"{ref}: no such (public) model on the hub and no such local directory; "
                           "check the id or path")
    if isinstance(e, he.HfHubHTTPError):
        return SeedKLError(f"{ref}: the hub refused the request ({str(e).splitlines()[0]}); check the "
                           "id/revision or pass a local checkpoint directory")
    if isinstance(e, (OSError, TimeoutError)) or type(e).__module__.split(".")[0] in ("httpx", "httpx2",
                                                                                        "requests"):
        return SeedKLError(f"{ref}: not a local directory, and the Hugging Face hub was unreachable "
                           f"({type(e).__name__}); pass a local checkpoint directory (config.json + "
                           "weights) or retry online")
    raise e


def in_hf_cache(model: str, revision: str | None) -> bool:
    """config.json of (model, revision) is in HF's local cache (loadable offline if the rest is too)."""
    try:
        from huggingface_hub import try_to_load_from_cache
        return isinstance(try_to_load_from_cache(model, CONFIG_FILE, revision=revision), str)
    except Exception:  # malformed repo id etc.: let the hub query decide
        return False


def hub_config_file(model: str, revision: str | None) -> tuple[Path | None, set[str] | None]:
    """config.json of a hub checkpoint alone (never its weights): (its path in HF's local cache or
    freshly downloaded, or None; the repository's file listing when the hub was asked, else None).
    Unreachable or refused: (None, None), so the caller can say nothing rather than guess."""
    try:
        import huggingface_hub as hf

        found = hf.try_to_load_from_cache(model, CONFIG_FILE, revision=revision)
        if isinstance(found, str):
            return Path(found), None
        if is_offline():
            return None, None
        info = hf.HfApi().model_info(model, revision=revision, timeout=HUB_TIMEOUT_S)
        files = {s.rfilename for s in info.siblings or []}
        if CONFIG_FILE not in files:
            return None, files
        return Path(hf.hf_hub_download(model, CONFIG_FILE, revision=info.sha)), files
    except Exception:  # unreachable or refused: the load itself will say why
        return None, None


def is_commit(revision: str) -> bool:
    return len(revision) == 40 and all(c in "0123456789abcdef" for c in revision.lower())


def missing_on_hub(todo: list[tuple[str, str | None]]) -> list[str]:
    """Query the hub once per repository for its refs; returns problems (raises when unreachable)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError

    if is_offline():
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
        elif revision is not None and revision not in refs[model] and not is_commit(revision):
            problems.append(f"{model}@{revision}: no such revision on the hub")
    return problems
