"""Drop every Linux capability, through ctypes: a runner started by root keeps none of root's powers.

A process running as uid 0 holds every capability (raw I/O, rebooting, changing any file's owner,
real-time scheduling...). A runner needs none: it drops them from its bounding set (so no later
exec could regain them), its ambient set, and its effective, permitted and inheritable sets.
For an ordinary user this changes nothing: it has none to drop.
"""

import ctypes
import os

PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522
SYS_CAPSET = {"x86_64": 126, "aarch64": 91}
LAST_CAP_FILE = "/proc/sys/kernel/cap_last_cap"


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _last_cap() -> int:
    try:
        with open(LAST_CAP_FILE) as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return 63


def drop_all() -> None:
    """Raises OSError if the sets cannot be cleared (an unknown machine, a kernel refusing capset)."""
    machine = os.uname().machine
    if machine not in SYS_CAPSET:
        raise OSError(f"no capset for {machine}")
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in range(_last_cap() + 1):  # needs CAP_SETPCAP: only a process that has capabilities can (or need) drop them
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header, data = _Header(LINUX_CAPABILITY_VERSION_3, 0), (_Data * 2)()
    if libc.syscall(SYS_CAPSET[machine], ctypes.byref(header), data) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"capset: {os.strerror(code)}")
