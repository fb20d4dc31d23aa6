"""Asking the Hugging Face hub (or the mirror ``HF_ENDPOINT`` names) what a model id or a task's
dataset revision is, before any work: huggingface_hub decides reachability and offline mode
(``HF_HUB_OFFLINE``, its endpoint, proxies); offline, its cache answers. Every failure is one line.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from lmk_eval.common.errors import LmkEvalError, first_line

TIMEOUT_S = 10.0  # one API call; a dead endpoint fails in this long, not in a library's retries
LOCAL = "a model directory, a BEIR folder, or a bundled task: `lmk-eval tasks`"
log = logging.getLogger("lmk_eval")


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def _reason(exc: Exception) -> str:
    """The hub error in a few words: not found, no such revision, or why it could not be asked."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(exc, RevisionNotFoundError):
        return "no such revision"
    if isinstance(exc, RepositoryNotFoundError):
        return "no such repository (or it is private: log in with `hf auth login`)"
    return f"the hub at {endpoint()} did not answer ({first_line(exc) or type(exc).__name__})"


def _check_id(repo_id: str, kind: str, what: str) -> None:
    """A repo id huggingface_hub itself rejects, refused as that (the hub is never asked)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise LmkEvalError(
            f"{kind} '{repo_id}'{what} is not a valid {kind} id: a hub id is 'name' or 'owner/name'"
            " of letters, digits, '-', '_' and '.' (at most 96 characters)"
        ) from None


def _cached_commit(repo_id: str, repo_type: str, revision: str | None) -> str | None:
    """The commit of a cached snapshot, or None when it is not cached. Without a revision: the one
    ``main`` points at, else the only snapshot (files fetched by commit leave no ``main`` ref)."""
    from huggingface_hub import CacheNotFound, scan_cache_dir

    try:
        cached = [
            r for r in scan_cache_dir().repos if r.repo_id == repo_id and r.repo_type == repo_type
        ]
    except CacheNotFound:
        return None
    if not cached:
        return None
    commits = [r.commit_hash for r in cached[0].revisions]
    refs = {ref: r.commit_hash for r in cached[0].revisions for ref in r.refs}
    if revision is None:
        return refs.get("main") or (commits[0] if len(commits) == 1 else None)
    return refs.get(revision) or (revision if revision in commits else None)


@lru_cache(maxsize=64)
def commit(
    repo_id: str, repo_type: str = "model", revision: str | None = None, what: str = ""
) -> str:
    """The commit ``revision`` (default: main) of a hub repo points at; offline, the cached one.
    ``what`` names the repo in errors (an mteb task's dataset, say)."""
    from huggingface_hub import HfApi

    kind = "dataset" if repo_type == "dataset" else "model"
    shown = f"hub {kind} '{repo_id}'" + (f" at revision {revision}" if revision else "") + what
    _check_id(repo_id, kind, what)
    if offline():
        found = _cached_commit(repo_id, repo_type, revision)
        if found is None:
            raise LmkEvalError(
                f"HF_HUB_OFFLINE is set and {shown} is not in the Hugging Face cache; run once with"
                f" the hub reachable (or unset HF_HUB_OFFLINE), or use local files instead ({LOCAL})"
            )
        return found
    api = HfApi()
    info = api.dataset_info if repo_type == "dataset" else api.model_info
    try:
        return str(info(repo_id, revision=revision, timeout=TIMEOUT_S).sha)
    except Exception as exc:  # noqa: BLE001 - unreachable, unknown repo or revision, auth: one line
        raise LmkEvalError(
            f"cannot resolve {shown} to a commit: {_reason(exc)}; offline, use local files instead ({LOCAL})"
        ) from None


@lru_cache(maxsize=8)
def serves(repo_id: str) -> bool:
    """Whether this model's hub files can be had now: the hub answers for it or, offline, the
    Hugging Face cache holds its snapshot (the model the id names, as an online run recorded it)."""
    if offline():
        return _cached_commit(repo_id, "model", None) is not None
    try:
        commit(repo_id)
    except LmkEvalError:
        return False
    return True


@lru_cache(maxsize=8)
def stand_in(repo_id: str, packaged: str) -> bool:
    """True where the packaged copy stands in for ``repo_id`` (neither the hub nor, offline, the cache
    has it); said once."""
    if serves(repo_id):
        return False
    why = (
        "HF_HUB_OFFLINE is set and the cache does not hold it"
        if offline()
        else f"the hub at {endpoint()} does not serve it"
    )
    log.warning(f"lmk-eval: {repo_id}: {why}, so the packaged copy ({packaged}) is used")
    return True
