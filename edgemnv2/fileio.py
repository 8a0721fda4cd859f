"""Atomic artifact writes: build under a temporary name in the same folder, then rename.

A crash, Ctrl-C or full disk leaves the destination either absent or the previous whole file,
never half-written. Existing outputs are kept unless the caller passes force=True.
"""

import hashlib
import os
import shutil
import struct
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import UserError

TEMP_MARKER = ".partial-"


def refuse_overwrite(path: Path, force: bool) -> None:
    if Path(path).exists() and not force:
        raise UserError(f"{path} already exists; pass --force to overwrite it")


def refuse_overwrites(outputs: list[Path], inputs: list[Path], force: bool) -> None:
    """Before any work: an existing output needs --force; an input (an image predicted on) is never written over."""
    originals = {Path(path).resolve() for path in inputs}
    for dest in outputs:
        if Path(dest).resolve() in originals:
            raise UserError(f"{dest} is one of the input images: predict never writes over its input; choose another --out folder")
        refuse_overwrite(dest, force)


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


# The encoding sha256_of gives a folder. Manifests and bundles record it, and readers refuse
# another: a hash made under another encoding is not comparable, so it must not be compared.
HASH_ENCODING = "edgemnv2-sha256/2"


def sha256_of(path: Path) -> str:
    """sha256 of a file's bytes; of a folder, sha256 over its files in sorted order, each framed as
    (name length, name, size, sha256 of its bytes) (HASH_ENCODING). Unframed, names and bytes ran
    together: `Data/model.mlmode` holding "l" + W hashed like `Data/model.mlmodel` holding W.
    The device runner (device/run_bundle.py) has its own copy, which must give the same result."""
    path = Path(path)
    if not path.is_dir():
        return _file_digest(path)[0].hexdigest()
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        name = file.relative_to(path).as_posix().encode()
        content, size = _file_digest(file)
        digest.update(struct.pack(">Q", len(name)) + name + struct.pack(">Q", size) + content.digest())
    return digest.hexdigest()


def _file_digest(path: Path):
    """-> (sha256 of the bytes, how many bytes were read)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest, size


def size_of(path: Path) -> int:
    path = Path(path)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
