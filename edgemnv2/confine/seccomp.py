"""A seccomp filter, through ctypes: the system calls a runner never needs, refused for good.

Landlock confines files (and TCP from ABI 4, signals from ABI 6), but not everything a process can
do outside them. A runner talks to its host over two inherited pipes and runs one artifact; it needs
no socket, no new process, no change to a file's owner, mode, times or extended attributes, no
kernel keyring, and no signal to anyone but itself. So, for every address family, socket(2) and
socketpair(2) fail (a socketpair end can still sendto() a named datagram socket such as /dev/log),
and io_uring_setup(2) (io_uring opens sockets and files without the calls filtered here);
fork, vfork, clone without CLONE_THREAD and clone3 (ENOSYS: glibc then makes its threads with
clone) fail, as do execve, setsid and setpgid (a grandchild in its own session would outlive the
runner's kill); the chmod, chown, utime and xattr families and path truncate(2) fail (Landlock
ABI < 3 does not cover truncate, no ABI covers the others); kill, tgkill and sigqueue work only on
the runner's own pid, and tkill and pidfd_send_signal not at all; memfd_create and System V shared
memory, messages and semaphores fail (memory no rlimit counts, segments that outlive the runner,
and IPC with any process of the same uid), as do inotify and fanotify (quotas shared with every process
of the uid); clone into new namespaces or as the factory's child (CLONE_PARENT) fails; fallocate and
the ioctls that reserve or zero disk ranges answer EOPNOTSUPP (FALLOC_FL_KEEP_SIZE and FS_IOC_RESVSP
reserve disk past RLIMIT_FSIZE; libc falls back to bounded writes). Like Landlock, the filter can
never be removed and passes to children. x86_64's x32 calls (bit 30 set) and other ABIs' calls
(ia32 on x86_64) are refused outright.
"""

import ctypes
import errno
import os
import platform

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
RET_ALLOW, RET_ERRNO = 0x7FFF0000, 0x00050000
LD_W_ABS, JEQ_K, JGE_K, JSET_K, RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
OFFSET_NR, OFFSET_ARCH, OFFSET_ARG0 = 0, 4, 16  # struct seccomp_data: int nr; __u32 arch; __u64 ip; __u64 args[6] (low word first)
X32_BIT = 0x40000000
CLONE_THREAD = 0x00010000

DENIED = ("socket", "socketpair", "io_uring_setup", "fork", "vfork", "execve", "execveat", "setsid", "setpgid",
          "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat", "utime", "utimes", "futimesat", "utimensat",
          "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr", "setxattrat", "removexattrat", "truncate",
          "keyctl", "add_key", "request_key", "tkill", "pidfd_send_signal",
          # other processes and the kernel's bigger surfaces: Landlock refuses ptrace outside its domain,
          # but a kernel below ABI 3 runs without Landlock, and none of these has a use in a runner
          "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_open", "pidfd_getfd", "kcmp", "unshare", "setns",
          "mount", "umount2", "fsopen", "fsmount", "move_mount", "open_tree", "userfaultfd", "bpf", "perf_event_open",
          # memory no rlimit counts (a memfd's pages, System V segments, which outlive the process) and System V IPC
          # with other processes of the same uid
          "memfd_create", "memfd_secret", "shmget", "shmat", "shmdt", "shmctl", "msgget", "msgsnd", "msgrcv", "msgctl",
          "semget", "semop", "semctl", "semtimedop",
          # per-user quotas shared with every other process of root (inotify instances)
          "inotify_init", "inotify_init1", "fanotify_init")
ENOSYS_CALLS = ("clone3",)  # "not here": glibc falls back to clone(2) for threads, which the filter can inspect
# fallocate(FALLOC_FL_KEEP_SIZE) reserves disk space past RLIMIT_FSIZE; refused, posix_fallocate falls back to writes, which it bounds
EOPNOTSUPP_CALLS = ("fallocate",)
OWN_PID_CALLS = ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")  # first argument: a pid (tgid)
CLONE = "clone"  # first argument: flags (x86_64 and aarch64 alike): threads only, never into new namespaces
# CLONE_NEWTIME, NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET; and CLONE_PARENT (a child of the factory,
# which never reaps it: a zombie outliving the runner and its cgroup)
CLONE_REFUSED = 0x7E020080 | 0x8000
IOCTL = "ioctl"  # second argument: the request. Disk reservations and zeroed ranges allocate past RLIMIT_FSIZE, as fallocate does
RESERVING_IOCTLS = (0x40305828, 0x4030582A, 0x40305829, 0x4030582B, 0x40305839)  # FS_IOC_RESVSP(64), FS_IOC_UNRESVSP(64), FS_IOC_ZERO_RANGE
OFFSET_ARG1 = OFFSET_ARG0 + 8

# machine -> (AUDIT_ARCH_*, {name: number}); aarch64 has no chmod/chown/utime/fork family (only the *at calls)
ARCHES = {
    "x86_64": (0xC000003E, {
        "socket": 41, "socketpair": 53, "clone": 56, "fork": 57, "vfork": 58, "execve": 59, "kill": 62, "truncate": 76, "chmod": 90, "fchmod": 91,
        "chown": 92, "fchown": 93, "lchown": 94, "setpgid": 109, "setsid": 112, "rt_sigqueueinfo": 129, "utime": 132, "setxattr": 188,
        "lsetxattr": 189, "fsetxattr": 190, "removexattr": 197, "lremovexattr": 198, "fremovexattr": 199, "tkill": 200, "tgkill": 234,
        "utimes": 235, "add_key": 248, "request_key": 249, "keyctl": 250, "fchownat": 260, "futimesat": 261, "fchmodat": 268, "utimensat": 280,
        "rt_tgsigqueueinfo": 297, "execveat": 322, "pidfd_send_signal": 424, "io_uring_setup": 425, "clone3": 435, "fchmodat2": 452,
        "setxattrat": 463, "removexattrat": 466, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "pidfd_open": 434,
        "pidfd_getfd": 438, "kcmp": 312, "unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "fsopen": 430, "fsmount": 432,
        "move_mount": 429, "open_tree": 428, "userfaultfd": 323, "bpf": 321, "perf_event_open": 298,
        "memfd_create": 319, "memfd_secret": 447, "shmget": 29, "shmat": 30, "shmctl": 31, "shmdt": 67, "semget": 64, "semop": 65,
        "semctl": 66, "semtimedop": 220, "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71, "fallocate": 285,
        "inotify_init": 253, "inotify_init1": 294, "fanotify_init": 300, "ioctl": 16}),
    "aarch64": (0xC00000B7, {
        "setxattr": 5, "lsetxattr": 6, "fsetxattr": 7, "removexattr": 14, "lremovexattr": 15, "fremovexattr": 16, "truncate": 45, "fchmod": 52,
        "fchmodat": 53, "fchownat": 54, "fchown": 55, "utimensat": 88, "kill": 129, "tkill": 130, "tgkill": 131, "rt_sigqueueinfo": 138,
        "setpgid": 154, "setsid": 157, "socket": 198, "socketpair": 199, "add_key": 217, "request_key": 218, "keyctl": 219, "clone": 220,
        "execve": 221, "rt_tgsigqueueinfo": 240, "execveat": 281, "pidfd_send_signal": 424, "io_uring_setup": 425, "clone3": 435,
        "fchmodat2": 452, "setxattrat": 463, "removexattrat": 466, "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
        "pidfd_open": 434, "pidfd_getfd": 438, "kcmp": 272, "unshare": 97, "setns": 268, "mount": 40, "umount2": 39, "fsopen": 430,
        "fsmount": 432, "move_mount": 429, "open_tree": 428, "userfaultfd": 282, "bpf": 280, "perf_event_open": 241,
        "memfd_create": 279, "memfd_secret": 447, "shmget": 194, "shmctl": 195, "shmat": 196, "shmdt": 197, "semget": 190, "semctl": 191,
        "semtimedop": 192, "semop": 193, "msgget": 186, "msgctl": 187, "msgrcv": 188, "msgsnd": 189, "fallocate": 47,
        "inotify_init1": 26, "fanotify_init": 262, "ioctl": 29}),
}


DESCRIPTION = "seccomp: no sockets, no new processes, no file mode/owner/time changes, no memfd or System V IPC, signals to itself only"


class _Instruction(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Instruction))]


def available() -> bool:
    return platform.system() == "Linux" and platform.machine() in ARCHES


PROCESS_CALLS = ("fork", "vfork", "execve", "execveat")  # allowed with `allow_processes` (and clone without CLONE_THREAD)


def _program(arch: int, numbers: dict[str, int], own_pid: int, allow_processes: bool = False) -> list[tuple[int, int, int, int]]:
    """The filter, as (code, jt, jf, k) rows. Jumps are relative: each rule's rows end by returning."""
    if allow_processes:
        numbers = {name: number for name, number in numbers.items() if name not in PROCESS_CALLS}
    deny, enosys = (RET_K, 0, 0, RET_ERRNO | errno.EACCES), (RET_K, 0, 0, RET_ERRNO | errno.ENOSYS)
    unsupported = (RET_K, 0, 0, RET_ERRNO | errno.EOPNOTSUPP)
    allow = (RET_K, 0, 0, RET_ALLOW)
    rows = [(LD_W_ABS, 0, 0, OFFSET_ARCH), (JEQ_K, 1, 0, arch), deny, (LD_W_ABS, 0, 0, OFFSET_NR), (JGE_K, 0, 1, X32_BIT), deny]
    for name in DENIED + ENOSYS_CALLS + EOPNOTSUPP_CALLS:
        if name in numbers:
            rows += [(JEQ_K, 0, 1, numbers[name]), enosys if name in ENOSYS_CALLS else unsupported if name in EOPNOTSUPP_CALLS else deny]
    for name in OWN_PID_CALLS:  # nr matches: load arg0, allow iff it is our pid, then reload nr for the next rule
        if name in numbers:
            rows += [(JEQ_K, 0, 4, numbers[name]), (LD_W_ABS, 0, 0, OFFSET_ARG0), (JEQ_K, 1, 0, own_pid), deny, allow]
    if CLONE in numbers:  # clone: never a new namespace nor the factory's child; and, unless processes are allowed, a thread only
        threads_only = [] if allow_processes else [(JSET_K, 1, 0, CLONE_THREAD), deny]
        block = [(LD_W_ABS, 0, 0, OFFSET_ARG0), (JSET_K, 0, 1, CLONE_REFUSED), deny, *threads_only, allow]
        rows += [(JEQ_K, 0, len(block), numbers[CLONE]), *block]
    if IOCTL in numbers:  # the reserving requests answer EOPNOTSUPP, as fallocate does; every other request goes on
        block = [(LD_W_ABS, 0, 0, OFFSET_ARG1)]
        for index, request in enumerate(RESERVING_IOCTLS):
            block.append((JEQ_K, len(RESERVING_IOCTLS) - index, 0, request))  # to the refusal after the last test
        block += [allow, unsupported]
        rows += [(JEQ_K, 0, len(block), numbers[IOCTL]), *block]
    return rows + [allow]


def restrict(allow_processes: bool = False) -> None:
    """From now on the calls above fail in this thread and every thread it starts. Call it while
    single-threaded (a runner just forked). Raises OSError where it cannot. `allow_processes`: it
    may start processes (a tool the product's own code runs, such as ExecuTorch's flatc); they stay
    in its process group (setsid and setpgid still fail), under the same filter and Landlock, and
    die with it."""
    if not available():
        raise OSError(f"no seccomp filter for {platform.system()} {platform.machine()}")
    arch, numbers = ARCHES[platform.machine()]
    instructions = _program(arch, numbers, os.getpid(), allow_processes)
    table = (_Instruction * len(instructions))(*(_Instruction(*row) for row in instructions))
    program = _Program(len(instructions), table)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"seccomp: {errno.errorcode.get(code, code)}")
