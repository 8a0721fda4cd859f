"""The runner factory: a fresh interpreter that imports every runtime once, then forks one runner per
artifact on request (as a browser's zygote does for its renderers).

Started by edgemnv2.confine.runner as `python -I -m edgemnv2.confine.zygote SOCKET_FD` with a scrubbed
environment; it never opens an artifact itself. Each runner it forks is single-threaded at birth (a
fork keeps only the calling thread), so the Landlock domain the runner then takes covers every
thread it will ever run, and it starts in milliseconds instead of re-importing torch for seconds.
The host's requests come over a SOCK_SEQPACKET socket: {"op": "spawn", "family", "work_dir"} with the runner's
two pipe ends attached (SCM_RIGHTS) -> {"pid"}; {"op": "status", "pid"} -> {"code"} once it ended;
{"op": "preload", "families", "modules"} -> {"ok"} at once, then the imports (the host works meanwhile).
"""

import importlib
import json
import os
import signal
import socket
import sys

from ..device.runtime_adapters import IMPORTS
from . import tasks
from .child import serve

MAX_MESSAGE = 1 << 16
PR_SET_PDEATHSIG = 1


def _preload(family: str, simulate: str | None) -> None:
    """Import a family's runtime here, once, before the first fork that needs it (a `predict` on a
    .tflite never pays for torch); for a simulation or a call, the module of its function ("module:name")."""

    for module in IMPORTS.get(family, ()) + ((simulate.partition(":")[0],) if simulate else ()):
        if module in sys.modules:
            continue
        try:
            importlib.import_module(module)
        except Exception:  # absent here: the runner's adapter will say so in its own words
            pass


def _runner(request_fd: int, reply_fd: int, work_dir: str, factory: int) -> int:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the factory's handler, and its list of runners, are not the runner's
    LIVE.clear()
    UNRELEASED.clear()
    os.setsid()  # its own process group: the host can kill it and whatever it starts
    _die_with_parent()
    if os.getppid() != factory:  # the factory died before the line above took effect: nobody would ever kill this runner
        return 1
    # torch._dynamo makes its cache folder when it is imported (the CoreML simulation imports it): under
    # Landlock the runner cannot make folders, so the cache is the work folder itself, which exists
    os.environ.update(HOME=work_dir, TMPDIR=work_dir, TORCHINDUCTOR_CACHE_DIR=work_dir)
    import tempfile

    tempfile.tempdir = work_dir  # the only folder it may write: Python caches the temp folder it chose first
    log = os.open(os.path.join(work_dir, "runner.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    return serve(request_fd, reply_fd, factory)


def _reap(pid: int, wait: bool) -> int | None:
    """Its exit code once it has ended (None while it runs, with wait=False). Before reaping, its
    process group is killed: whatever it started (the one runner allowed to start processes) dies
    with it, and while it is unreaped its pid, and so its group id, cannot be reused."""
    try:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | (0 if wait else os.WNOHANG)) is None:
            return None
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        LIVE.discard(pid)
        if not tasks.release(pid):
            UNRELEASED.add(pid)
        return code
    except ChildProcessError:
        return None


def _die_with_parent(sig: int = signal.SIGKILL) -> None:
    """A signal when the parent goes (the host for the factory, the factory for a runner): no runner
    outlives the command that started it."""
    import ctypes

    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


LIVE: set[int] = set()  # runners forked and not yet reaped
UNRELEASED: set[int] = set()  # runners reaped whose cgroup was still busy then


def _release_pending() -> None:
    for pid in list(UNRELEASED):
        if tasks.release(pid):
            UNRELEASED.discard(pid)


def _end() -> int:
    """The host is gone: kill and reap every runner still here, and remove their cgroups.

    SIGTERM is blocked first. The host's death arrives twice, as the socket's end and as SIGTERM
    (PDEATHSIG), so without the block the handler could run a second _end inside this one. That
    second call would find the runner already reaped and not yet marked unreleased, and it would
    exit with the runner's cgroup still there."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    for pid in list(LIVE):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        _reap(pid, wait=True)
    for _ in range(20):  # what the runners started may take a moment to be torn down
        _release_pending()
        if not UNRELEASED:
            break
    return 0


def _host_died(signum, frame) -> None:
    os._exit(_end())


def main() -> int:
    # SIGTERM, not SIGKILL, when the host dies (killed, crashed): the factory first kills every runner's
    # group (what a runner started would otherwise outlive it) and removes their cgroups
    signal.signal(signal.SIGTERM, _host_died)
    _die_with_parent(signal.SIGTERM)
    tasks.sweep()
    host = socket.socket(fileno=int(sys.argv[1]))
    import numpy  # noqa: F401  (every adapter's)
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(host, MAX_MESSAGE, 2)
        except OSError:
            return _end()
        if not message:  # the host is gone: so is every reason to be here
            return _end()
        _release_pending()
        request = json.loads(message)
        if request.get("op") == "spawn" and len(fds) == 2:
            _preload(str(request.get("family")), request.get("simulate"))
            factory = os.getpid()
            pid = os.fork()
            if pid == 0:
                host.close()
                code = 1
                try:
                    code = _runner(fds[0], fds[1], str(request["work_dir"]), factory)
                except BaseException:  # into its log (its stderr by now): the host reads the cause there
                    import traceback

                    traceback.print_exc()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
            LIVE.add(pid)
            for fd in fds:
                os.close(fd)
            host.send(json.dumps({"pid": pid}).encode())
        elif request.get("op") == "preload":  # answered first: the host goes on while the imports run here
            for fd in fds:
                os.close(fd)
            host.send(json.dumps({"ok": True}).encode())
            for family in request.get("families", []):
                _preload(str(family), None)
            for module in request.get("modules", []):
                _preload("", str(module))
        elif request.get("op") == "ping":  # answered after everything asked before it: the preloads included
            host.send(json.dumps({"ok": True}).encode())
        elif request.get("op") == "status":  # wait=False: never blocks on a runner still there (the host kills it first)
            code = _reap(int(request["pid"]), bool(request.get("wait")))
            host.send(json.dumps({"code": code}).encode())
        else:
            for fd in fds:
                os.close(fd)
            host.send(json.dumps({"error": "unknown request"}).encode())


if __name__ == "__main__":
    sys.exit(main())
