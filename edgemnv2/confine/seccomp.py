"""No sockets: a seccomp filter, through ctypes, that makes socket(2) and io_uring_setup(2) fail.

Landlock (ABI 4 and later) stops TCP bind and connect, but not UDP, raw or netlink sockets, nor a
connect to a named unix socket somewhere on the disk (a Docker or D-Bus socket). A runner needs no
socket at all: it talks to its host over two inherited pipes. So socket(2) fails with EACCES for
every address family (socketpair(2), which reaches nothing, stays allowed), and io_uring_setup(2)
too, since io_uring can open sockets without calling socket(2). Like Landlock, the filter can never
be removed and passes to children. A dozen BPF instructions, as linux/seccomp.h and linux/filter.h
define them; x86_64's x32 system calls (numbers with bit 30 set) are refused outright.
"""

import ctypes
import errno
import platform

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
RET_ALLOW, RET_ERRNO = 0x7FFF0000, 0x00050000
LD_W_ABS, JEQ_K, JGE_K, RET_K = 0x20, 0x15, 0x35, 0x06
OFFSET_NR, OFFSET_ARCH = 0, 4  # struct seccomp_data: int nr; __u32 arch; ...
X32_BIT = 0x40000000

# machine -> (AUDIT_ARCH_*, socket, io_uring_setup)
ARCHES = {"x86_64": (0xC000003E, 41, 425), "aarch64": (0xC00000B7, 198, 425)}


class _Instruction(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Instruction))]


def available() -> bool:
    return platform.system() == "Linux" and platform.machine() in ARCHES


def _program(arch: int, socket_nr: int, io_uring_nr: int) -> list[tuple[int, int, int, int]]:
    deny = RET_ERRNO | errno.EACCES
    return [
        (LD_W_ABS, 0, 0, OFFSET_ARCH),
        (JEQ_K, 1, 0, arch),  # another ABI's calls (ia32 on x86_64): refused, their numbers differ
        (RET_K, 0, 0, deny),
        (LD_W_ABS, 0, 0, OFFSET_NR),
        (JGE_K, 3, 0, X32_BIT),
        (JEQ_K, 2, 0, socket_nr),
        (JEQ_K, 1, 0, io_uring_nr),
        (RET_K, 0, 0, RET_ALLOW),
        (RET_K, 0, 0, deny),
    ]


def deny_sockets() -> None:
    """From now on socket(2) fails with EACCES in this thread and every thread and process it
    starts. Call it while single-threaded (a runner just forked). Raises OSError where it cannot."""
    if not available():
        raise OSError(f"no seccomp filter for {platform.system()} {platform.machine()}")
    instructions = _program(*ARCHES[platform.machine()])
    table = (_Instruction * len(instructions))(*(_Instruction(*row) for row in instructions))
    program = _Program(len(instructions), table)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"seccomp: {errno.errorcode.get(code, code)}")
