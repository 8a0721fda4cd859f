"""What kind of file an artifact is, from its own bytes (never from its manifest's word).

Each target declares `recognizes(path)` with these helpers; `conversion.kind_of` asks them all. They
read a few header bytes or a zip's member names: nothing is parsed further, unpickled or run.
"""

import os
import stat
import zipfile
from pathlib import Path
from typing import Callable

HEADER_BYTES = 16


def header(path: Path, size: int = HEADER_BYTES) -> bytes:
    """The first bytes of a regular file (b"" for anything else: a folder, a FIFO or a device,
    whose open or read could block, a dangling or unreadable name)."""
    try:
        if not stat.S_ISREG(os.stat(path, follow_symlinks=False).st_mode):
            return b""
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError:
        return b""


def text_start(path: Path, size: int) -> str:
    """The first `size` bytes of a regular file as text (a character cut at the end is replaced)."""
    return header(path, size).decode("utf-8", errors="replace")


def flatbuffer_identified(identifier: bytes) -> Callable[[Path], bool]:
    """A flatbuffer file with this 4-byte file identifier (bytes 4..8): TFLite's TFL3, ExecuTorch's ET12."""
    return lambda path: header(path)[4:8] == identifier


def zip_with_member(accept: Callable[[str], bool]) -> Callable[[Path], bool]:
    """A zip archive (TorchScript, the lite interpreter) holding a member whose name `accept`s."""

    def recognizes(path: Path) -> bool:
        if header(path)[:4] != b"PK\x03\x04":
            return False
        try:
            with zipfile.ZipFile(path) as archive:
                return any(accept(name) for name in archive.namelist())
        except (zipfile.BadZipFile, OSError, ValueError):
            return False

    return recognizes


def folder_with(member: str) -> Callable[[Path], bool]:
    """A package folder (Core ML's .mlpackage) holding this file."""
    return lambda path: Path(path).is_dir() and not Path(path).is_symlink() and (Path(path) / member).is_file()
