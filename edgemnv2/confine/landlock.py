"""Linux Landlock through ctypes: an unprivileged process takes away its own rights to the file
system and to TCP, for good (they pass to its children and can never be regained).

About a hundred lines instead of a dependency: three system calls and their structs, as the
kernel's uapi/linux/landlock.h defines them. ABI 1 restricts files, 2 adds REFER, 3 TRUNCATE, 4
TCP bind/connect, 5 device ioctls, 6 abstract unix sockets and signals. What is not handled by the
running kernel's ABI stays allowed; `restrict` reports what was enforced.
"""

import ctypes
import os
import platform
from dataclasses import dataclass
from pathlib import Path

# x86_64 and aarch64 share these numbers (the generic syscall table since Linux 5.13)
SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446
CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH, RULE_NET_PORT = 1, 2
PR_SET_NO_NEW_PRIVS = 38

FS = {name: 1 << bit for bit, name in enumerate((
    "EXECUTE", "WRITE_FILE", "READ_FILE", "READ_DIR", "REMOVE_DIR", "REMOVE_FILE", "MAKE_CHAR", "MAKE_DIR",
    "MAKE_REG", "MAKE_SOCK", "MAKE_FIFO", "MAKE_BLOCK", "MAKE_SYM", "REFER", "TRUNCATE", "IOCTL_DEV"))}
FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
NET_BIND_TCP, NET_CONNECT_TCP = 1, 2
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1, 2
MIN_ABI = 3  # TRUNCATE: below it, a file a runner may read it may also truncate

READ = FS["EXECUTE"] | FS["READ_FILE"] | FS["READ_DIR"]
WRITE = READ | FS["WRITE_FILE"] | FS["REMOVE_DIR"] | FS["REMOVE_FILE"] | FS["MAKE_DIR"] | FS["MAKE_REG"] | FS["TRUNCATE"]
FILE_ONLY = FS["EXECUTE"] | FS["READ_FILE"] | FS["WRITE_FILE"] | FS["TRUNCATE"] | FS["IOCTL_DEV"]  # what a rule on a file may hold


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def abi_version() -> int:
    """The running kernel's Landlock ABI; 0 when it has none (older kernel, disabled, not Linux)."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "aarch64"):
        return 0
    version = _libc.syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(CREATE_RULESET_VERSION))
    return max(0, int(version))


@dataclass(frozen=True)
class Enforced:
    abi: int
    files: bool
    tcp: bool
    scoped: bool

    def describe(self) -> str:
        parts = ["files" if self.files else None, "TCP bind/connect" if self.tcp else None, "signals, abstract sockets" if self.scoped else None]
        return f"Landlock ABI {self.abi}: " + ", ".join(p for p in parts if p)


def _error(what: str) -> OSError:
    errno = ctypes.get_errno()
    return OSError(errno, f"landlock {what}: {os.strerror(errno)}")


def restrict(read: list[Path], write: list[Path]) -> Enforced:
    """From now on this process (and its children) may read only `read` and `write` (and what is
    beneath them), write only beneath `write`, and open no TCP connection nor listen. Raises
    OSError when the kernel has no Landlock."""
    abi = abi_version()
    if abi < 1:
        raise OSError("the kernel has no Landlock (Linux 5.13+ with landlock in the LSM list)")
    if abi < MIN_ABI:  # ABI 1-2 let a runner truncate any file it can see: not worth calling confined
        raise OSError(f"the kernel's Landlock is ABI {abi}, which does not stop truncating files; confinement needs ABI {MIN_ABI}+ (Linux 6.2+)")
    handled_fs = FS_BY_ABI.get(abi, FS_BY_ABI[5])
    attr = _RulesetAttr(handled_fs, (NET_BIND_TCP | NET_CONNECT_TCP) if abi >= 4 else 0,
                        (SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if abi >= 6 else 0)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = _libc.syscall(SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise _error("create_ruleset")
    try:
        for paths, access in ((read, READ), (write, WRITE)):
            for path in paths:
                _allow(ruleset, Path(path), access & handled_fs)
        if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise _error("no_new_privs")
        if _libc.syscall(SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise _error("restrict_self")
    finally:
        os.close(ruleset)
    return Enforced(abi, True, abi >= 4, abi >= 6)


def _allow(ruleset: int, path: Path, access: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # nothing there to allow (an optional library folder)
    try:
        if not path.is_dir():
            access &= FILE_ONLY
        rule = _PathBeneathAttr(access, fd)
        if _libc.syscall(SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(RULE_PATH_BENEATH), ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
            raise _error(f"add_rule {path}")
    finally:
        os.close(fd)
