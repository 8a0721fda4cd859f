"""How many threads (and processes) a runner may have at once: a cap the kernel enforces.

A runner may start threads (seccomp lets `clone` through only with CLONE_THREAD), and a hostile
artifact could start them by the hundred thousand: each costs kernel memory that no rlimit of the
runner's counts, until the whole machine refuses to start anything. Two kernel mechanisms cap them:

- a **pids cgroup** of its own (cgroup v1's `pids` hierarchy, or cgroup v2 where the parent
  delegates the `pids` controller), with `pids.max`: works for root too. The runner joins it
  before it confines itself, and Landlock then keeps it from writing there (so it cannot raise its
  cap or leave);
- **RLIMIT_NPROC**, counted per user: the kernel ignores it for root (uid 0 is exempt even
  without capabilities), so it is the fallback for the other users only, set to what that user
  runs now plus the runner's allowance.

Where neither is possible (root in a container with a read-only cgroup tree), the runner says so
in its confinement line. Cgroups are named `edgemnv2-FACTORY-RUNNER`; the factory removes a runner's
once it has reaped it, and at its start the ones left by factories that are gone.
"""

import functools
import os
import re
import resource
import time
from pathlib import Path

PREFIX = "edgemnv2-"
_NAME = re.compile(rf"{PREFIX}(\d+)-(\d+)$")


def allowance(threads: int) -> int:
    """Tasks a runner may have by default: its runtime's pool needs at most about 2x `threads` + 1
    (measured at 8 threads: TorchScript 15, ExecuTorch 9, TFLite and ONNX Runtime 8); the rest is
    margin (a per-op profile asks for more: edgemnv2's own runs keep one interpreter per graph cut).
    Even a few hundred idle threads cost the kernel only megabytes: the cap is against the
    hundred thousand that would exhaust the machine's process ids."""
    return 64 + 8 * max(1, threads)


def _mounts() -> list[tuple[str, str, str, str]]:
    """(mount point, root, fs type, super options) of every cgroup mount, from /proc/self/mountinfo."""
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            found.append((fields[4].replace("\\040", " "), fields[3], tail[0], tail[2]))
    return found


def _own_cgroup(hierarchy: str) -> str | None:
    """This process's cgroup in one hierarchy ("pids" for v1, "" for v2), from /proc/self/cgroup."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if (hierarchy in controllers.split(",")) if hierarchy else controllers == "":
                return path
    except (OSError, ValueError):
        pass
    return None


@functools.lru_cache(maxsize=1)  # read once per process: the factory asks at every reap (a runner forked from it inherits the answer)
def parent_dir() -> Path | None:
    """The cgroup folder under which runners' pids cgroups go (this process's own), or None."""
    for mount, root, kind, options in _mounts():
        own = _own_cgroup("pids" if kind == "cgroup" else "")
        if own is None or (kind == "cgroup" and "pids" not in options.split(",")):
            continue
        relative = own[len(root):] if root != "/" and own.startswith(root) else own
        folder = Path(mount) / relative.lstrip("/")
        if kind == "cgroup2":
            try:
                if "pids" not in (folder / "cgroup.subtree_control").read_text().split():
                    continue
            except OSError:
                continue
        if os.access(folder, os.W_OK):
            return folder
    return None


def folder_name(factory: int, runner: int) -> str:
    return f"{PREFIX}{factory}-{runner}"


def _join_cgroup(limit: int, factory: int) -> tuple[Path | None, str]:
    """Put this process in a new pids cgroup capped at `limit` tasks: -> (its folder, "") or (None, why not)."""
    parent = parent_dir()
    if parent is None:
        return None, "no writable pids cgroup"
    folder = parent / folder_name(factory, os.getpid())
    try:
        folder.mkdir()
    except FileExistsError:  # left by an earlier runner of the same pids, which cannot be running now: empty, so removable
        if not _remove(folder):
            return None, f"{folder} exists and is in use"
        try:
            folder.mkdir()
        except OSError as exc:
            return None, f"cannot make {folder}: {exc}"
    except OSError as exc:
        return None, f"cannot make {folder}: {exc}"
    try:
        (folder / "pids.max").write_text(str(limit))
        (folder / "cgroup.procs").write_text(str(os.getpid()))
    except OSError as exc:
        _remove(folder)
        return None, f"cannot join {folder}: {exc}"
    return folder, ""


def _user_tasks(uid: int) -> int:
    """Threads of every process whose real uid is `uid`: what RLIMIT_NPROC counts."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                total += int(fields["Threads"])
        except (OSError, KeyError, ValueError):
            continue
    return total


def cap(limit: int, factory: int) -> tuple[str | None, str | None]:
    """Cap this process's tasks at `limit` (called in the runner, before it drops its capabilities;
    `factory`: the pid of the factory that forked it, which names and removes its cgroup) ->
    (what is enforced, None) or (None, why nothing could be)."""
    folder, why = _join_cgroup(limit, factory)
    if folder is not None:
        return f"at most {limit} threads (pids cgroup)", None
    uid = os.getuid()
    if uid != 0:
        ceiling = _user_tasks(uid) + limit
        soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
        ceiling = ceiling if hard == resource.RLIM_INFINITY else min(ceiling, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NPROC, (ceiling, ceiling))
        except (OSError, ValueError) as exc:
            return None, f"threads: not capped ({exc})"
        return f"at most {limit} more threads for this user (RLIMIT_NPROC)", None
    return None, f"threads: not capped (root, and {why}; RLIMIT_NPROC does not apply to root)"


def _remove(folder: Path, patience: float = 0.0) -> bool:
    deadline = time.monotonic() + patience
    while True:
        try:
            folder.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:  # still busy: a process it started is still being torn down
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


def release(runner_pid: int) -> bool:
    """The factory, once it has reaped a runner: remove that runner's cgroup; False while it is still
    busy (a process the runner started, killed with it, is still being torn down: retry later)."""
    parent = parent_dir()
    return parent is None or _remove(parent / folder_name(os.getpid(), runner_pid), patience=0.2)


def sweep() -> None:
    """The factory, at its start: remove the cgroups of runners whose factory is gone (killed
    before it could remove them). A cgroup still in use cannot be removed, so this never breaks one."""
    parent = parent_dir()
    if parent is None:
        return
    for folder in parent.glob(f"{PREFIX}*-*"):
        match = _NAME.match(folder.name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            _remove(folder)
