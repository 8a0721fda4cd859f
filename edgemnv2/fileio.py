"""Atomic artifact writes: build under a temporary name in the same folder, then rename.

A crash, Ctrl-C or full disk leaves the destination either absent or the previous whole file,
never half-written. Existing outputs are kept unless the caller passes force=True.
"""

import hashlib
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import UserError

TEMP_MARKER = ".partial-"


def refuse_overwrite(path: Path, force: bool) -> None:
    if Path(path).exists() and not force:
        raise UserError(f"{path} already exists; pass --force to overwrite it")


@contextmanager
def atomic_output(path: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    refuse_overwrite(path, force)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {path.parent}: {exc.strerror}") from None
    temp = temp_path(path)
    try:
        yield temp
        _replace(temp, path)
    except OSError as exc:
        raise UserError(f"could not write {path}: {exc.strerror or exc}") from None
    finally:
        _remove(temp)


def temp_path(path: Path) -> Path:
    """A temporary sibling of `path` that names the writing process, so leftovers of a killed
    process (SIGKILL gives no chance to clean up) can be told apart from a live writer's."""
    return path.with_name(f"{TEMP_MARKER}{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete temporary files left by writers that no longer run (e.g. a SIGKILLed convert)."""
    removed = []
    for temp in Path(folder).glob(f"{TEMP_MARKER}*"):
        pid_text = temp.name[len(TEMP_MARKER):].split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _pid_alive(int(pid_text)):
            _remove(temp)
            removed.append(temp)
    return removed


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on an output folder: concurrent writers commit one at a time."""
    import fcntl

    lock_file = Path(folder) / ".edgemnv2.lock"
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def commit(temp: Path, path: Path) -> None:
    """Move a finished temporary file or folder into place in one rename."""
    _replace(temp, path)


def discard(temp: Path) -> None:
    _remove(temp)


def _replace(temp: Path, path: Path) -> None:
    if temp.is_dir():  # directory artifacts (.mlpackage): move the old one aside, then swap
        backup = path.with_name(f"{TEMP_MARKER}old-{uuid.uuid4().hex[:8]}-{path.name}")
        if path.exists():
            os.replace(path, backup)
        os.replace(temp, path)
        _remove(backup)
    else:
        os.replace(temp, path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of a directory's files (names and bytes, in sorted order)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def size_of(path: Path) -> int:
    path = Path(path)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
