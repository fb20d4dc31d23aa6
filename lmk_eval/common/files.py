"""Writing files the way a shared results folder needs: atomic, umask-honouring, checked first.

``tempfile`` creates files 0600 and folders 0700 whatever the umask, which made every result
unreadable to the rest of a group; everything written here is created with the mode a plain
``open`` or ``mkdir`` gives it (0666 / 0777 narrowed by the umask, by the kernel).
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

from lmk_eval.common.errors import LmkEvalError


def _unique(parent: Path, prefix: str, suffix: str = "") -> Path:
    return parent / f"{prefix}{os.getpid()}-{secrets.token_hex(6)}{suffix}"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` so that readers see the old file or the new one, never half of it. The
    temporary file is created by ``os.open`` with mode 0666, which the umask narrows as for any
    plain ``open`` (no process-wide ``os.umask`` call, which would race with threads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _unique(path.parent, f".{path.name}.", ".tmp")
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk: name the file, leave no half of it
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def staging_dir(parent: Path, prefix: str) -> Path:
    """A fresh folder under ``parent`` (mode 0777 less the umask), to be renamed into place."""
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        path = _unique(parent, prefix)
        try:
            path.mkdir(mode=0o777)
            return path
        except FileExistsError:
            continue


def honour_umask(folder: Path) -> None:
    """Give every file under ``folder`` the mode a plain ``open`` would: libraries that save models
    (safetensors) create their files 0600 whatever the umask. The mode is read from a probe file
    created 0666 and narrowed by the kernel, not from a process-wide ``os.umask`` call."""
    probe = _unique(folder, ".mode-", ".probe")
    os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        mode = probe.stat().st_mode & 0o777
    finally:
        probe.unlink()
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o777 != mode:
            path.chmod(mode)


def remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _name_max(base: Path) -> int:
    try:
        return os.pathconf(base, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def check_path_names(path: Path, what: str) -> None:
    """Refuse a path the filesystem cannot hold (a name over its limit) or a dangling link."""
    existing = prefix = Path(path.anchor or ".")
    for part in path.parts[1:]:
        limit = _name_max(existing)  # of the filesystem the name would be created on
        if len(os.fsencode(part)) > limit:
            raise LmkEvalError(
                f"{what} '{path}' has a name of {len(os.fsencode(part))} bytes ('{part[:24]}...');"
                f" the filesystem allows {limit}: choose a shorter path"
            )
        prefix = prefix / part
        if prefix.is_dir():
            existing = prefix
    if os.path.islink(path) and not os.path.exists(path):
        raise LmkEvalError(
            f"{what} '{path}' is a link to '{os.readlink(path)}', which does not exist;"
            " remove the link or choose another path"
        )


def check_writable_dir(path: Path, what: str, folders: tuple[str, ...] = ()) -> None:
    """Fail now, in one line, if ``path`` cannot become a folder we write into (nor the
    ``folders`` named inside it); writes nothing."""
    path = Path(os.path.abspath(path))
    check_path_names(path, what)
    for name in folders:
        inner = path / name
        if inner.exists() and not inner.is_dir():
            raise LmkEvalError(f"'{inner}' is a file where {what} keeps a folder; move it away")
    if path.exists() and not path.is_dir():
        raise LmkEvalError(f"{what} '{path}' is a file, not a folder; choose another path")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise LmkEvalError(f"{what} '{path}' lies under the file '{base}'; choose another path")
    try:
        probe = Path(tempfile.mkdtemp(dir=base, prefix=".lmk-eval-probe-"))
        probe.rmdir()
    except OSError as exc:
        raise LmkEvalError(
            f"cannot write {what} '{path}': '{base}' is not writable ({exc.strerror});"
            " choose another path"
        ) from None


def check_writable_file(path: Path, what: str) -> None:
    """As ``check_writable_dir`` for a file we are about to (over)write."""
    path = Path(os.path.abspath(path))
    check_path_names(path, what)
    if path.is_dir():
        raise LmkEvalError(f"{what} '{path}' is a folder; give a file name")
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise LmkEvalError(f"{what} '{path}' lies under the file '{base}'; choose another path")
    check_writable_dir(path.parent, f"folder of {what}")


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
