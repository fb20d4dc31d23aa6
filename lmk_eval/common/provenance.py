"""What produced a number: content hashes of models and data, hub commits, the scoring version.

A stored cell is reused only when everything here matches, so a result can never outlive the
model files, the data or the scoring code it came from. Hashing a directory reads every file once;
file digests are cached by (path, inode, size, mtime, ctime) so later runs pay only for ``stat``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterable
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from lmk_eval.common.errors import LmkEvalError
from lmk_eval.common.files import atomic_write_text

# Bump when what a cell computes changes for the same model, data and options: tokenisation,
# pooling arithmetic, window merging, per-query scoring. Stored cells of another version are
# recomputed. 2: a truncated LMK input never ends in two landmarks; mean_every_k windows weigh by
# pooled positions; per-query scores from pytrec_eval directly. 3: windows merge as the registry
# documents (mean_every_k without a per-window fallback, mean_sqrt_len_tokens exactly); multi_cls
# closes with the tokenizer's suffix and never ends on an empty chunk; placements tokenise apart;
# typed cell records (variant, label, checkpoint).
SCORING_VERSION = 3
SKIPPED_NAMES = {".git", ".cache", "__pycache__"}


def cache_dir() -> Path:
    return Path(os.environ.get("LMK_EVAL_CACHE") or Path.home() / ".cache" / "lmk-eval")


def _cache_path() -> Path:
    return cache_dir() / "file-digests.json"


class _DigestCache:
    """Per-file sha256 keyed by absolute path, inode, size, mtime and ctime (any write moves
    mtime/ctime; two same-size writes within one timestamp tick are the blind spot); shared by
    processes through a lock."""

    def __init__(self) -> None:
        self.path = _cache_path()
        self.entries: dict[str, list] = read_cache(self.path)
        self.dirty = False

    def digest(self, file: Path) -> str:
        st = file.stat()
        key = str(file.resolve())
        stamp = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        hit = self.entries.get(key)
        if isinstance(hit, list) and len(hit) == 5 and hit[:4] == stamp:
            return str(hit[4])
        found = file_sha256(file)
        self.entries[key] = [*stamp, found]
        self.dirty = True
        return found

    def save(self) -> None:
        """Best effort: an unwritable cache only costs a re-hash next time."""
        if self.dirty and merge_into_cache(self.path, self.entries):
            self.dirty = False


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read a megabyte at a time."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def merge_into_cache(path: Path, entries: dict[str, Any]) -> bool:
    """Add ``entries`` to the JSON cache file at ``path`` under its lock, as other processes may
    be adding theirs; best effort (False when it cannot be written: a cache only saves time)."""
    from filelock import FileLock, Timeout

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock", timeout=10):
            current = read_cache(path)
            current.update(entries)
            atomic_write_text(path, json.dumps(current))
        return True
    except (OSError, Timeout):
        return False


def read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def files_digest(root: Path, files: Iterable[Path]) -> str:
    """One sha256 over the given files' paths (relative to ``root``) and contents."""
    cache = _DigestCache()
    h = hashlib.sha256()
    try:
        for f in sorted(files):
            h.update(f"{f.relative_to(root).as_posix()}\0{cache.digest(f)}\n".encode())
    except OSError as exc:
        raise LmkEvalError(
            f"cannot read '{exc.filename}' to fingerprint it: {exc.strerror}"
        ) from None
    finally:
        cache.save()
    return h.hexdigest()


def tree_files(root: Path) -> list[Path]:
    """Every regular file under ``root`` except hidden ones, caches and prose (*.md)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in SKIPPED_NAMES]
        for name in filenames:
            if not name.startswith(".") and not name.endswith(".md"):
                out.append(Path(dirpath) / name)
    return out


def tree_digest(root: Path) -> str:
    return files_digest(root, tree_files(root))


@lru_cache(maxsize=64)
def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def scoring_identity() -> dict[str, Any]:
    """What turns embeddings into scores: this harness's scoring version, mteb, pytrec_eval."""
    return {
        "lmk_eval_scoring": SCORING_VERSION,
        "mteb": package_version("mteb"),
        "pytrec_eval": package_version("pytrec-eval-terrier") or package_version("pytrec-eval"),
    }


@lru_cache(maxsize=1)
def code_info() -> dict[str, Any]:
    """Recorded with each cell for tracing (not part of its identity): package version, git commit."""
    info: dict[str, Any] = {"lmk_eval": package_version("lmk-eval")}
    here = Path(__file__).resolve().parent.parent
    if (here / ".git").exists():
        try:
            out = subprocess.run(
                ["git", "-C", str(here), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            dirty = subprocess.run(
                ["git", "-C", str(here), "status", "--porcelain", "lmk_eval"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            if out.returncode == 0:
                info["git"] = out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
        except (OSError, subprocess.SubprocessError):
            pass
    return info


def digest(obj: Any, length: int = 16) -> str:
    """A short stable hash of a JSON-able object."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def differences(stored: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two identity dicts."""
    out = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(prefix + key)
    return out
