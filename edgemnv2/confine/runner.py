"""The host's side of a runner process: start it confined, hand it arrays, survive whatever it does.

Modelled on a browser's utility process: the bytes of an artifact are parsed and run only in a child
started from a fresh interpreter (edgemnv2.confine.child) that can read only the Python installation
and the artifact's verified private copy, can write only its own empty folder, cannot open TCP
connections, and has a memory, CPU-time and per-call wall-clock limit. Arrays travel as raw buffers
(protocol.py), never pickled. A child that dies (a signal, a limit, a timeout) raises RunnerFailed
naming the cause, and the host goes on with the other artifacts.
"""

import atexit
import json
import math
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..artifacts import ArtifactRefused, RuntimeUnavailable
from ..errors import UserError
from . import codec, tasks
from .child import status_kb
from .protocol import ProtocolError, TimedOut, receive, send

# OpenMP's wait policy is the user's: a machine that runs several processes side by side sets
# OMP_WAIT_POLICY=PASSIVE so idle threads stop spinning on cores another process needs.
ENV_KEEP = ("PATH", "LANG", "LC_ALL", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
# ONNX Runtime (1.29 and later) starts a telemetry uploader at import, with threads and a SQLite
# cache under HOME. A runner forked from the factory while one of those threads held a lock spun at
# 100% CPU until killed (seen with two factories side by side). The factory imports it with
# telemetry off: no uploader, no threads, no cache (ONNX Runtime's own opt-out, latched at import).
NO_TELEMETRY = {"ORT_DISABLE_TELEMETRY": "1"}


def _memory_mb() -> int:
    """EDGEMNV2_RUNNER_MEMORY_MB, else 6 GB: what one runner's heap and private mappings may reach."""
    value = os.environ.get("EDGEMNV2_RUNNER_MEMORY_MB", "")
    return int(value) if value.isdigit() and int(value) > 0 else 6144


@dataclass(frozen=True)
class RunnerLimits:
    memory_mb: int = field(default_factory=_memory_mb)  # RLIMIT_DATA (the runtimes imported before the fork count too)
    cpu_seconds: int = 3600
    call_seconds: float = 600.0  # wall clock per request (loading included)
    file_mb: int = 64  # the largest file it may write (its folder is scratch only)
    require_confinement: bool = False  # refuse to run where Landlock is missing
    processes: bool = False  # may start processes (in its own group, confined alike): the product's own tools, such as flatc
    tasks: int | None = None  # threads and processes at once; None: edgemnv2.confine.tasks.allowance(threads)


class RunnerFailed(Exception):
    """The runner process died or broke a limit, or its runtime refused the artifact: the artifact's
    row says which, on one line (a runtime's message can span a whole TorchScript traceback)."""

    expected = True  # the artifact's fault, never a bug of edgemnv2's (edgemnv2.errors.is_internal_error)

    def __str__(self) -> str:
        return " ".join(super().__str__().split())


def _remove_tree(root: Path) -> None:
    """Remove a runner's folder without recursion (3.11's rmtree recurses, and the runner allowed to
    write may nest folders thousands deep) and relative to open folder descriptors (paths longer
    than PATH_MAX are no obstacle); never follows a symbolic link, and enters each folder once."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        top = os.open(root, flags)
    except OSError:
        return
    stack, entered = [(top, None, None)], {_identity(top)}  # (folder fd, its name, its parent's fd)
    try:
        while stack:
            fd, name, parent = stack[-1]
            try:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in os.scandir(fd)]
            except OSError:
                entries = []
            subfolder = None
            for entry, is_folder in entries:
                if not is_folder:
                    _quietly(os.unlink, entry, dir_fd=fd)
                    continue
                if subfolder is not None:
                    continue
                try:
                    opened = os.open(entry, flags, dir_fd=fd)
                except OSError:
                    continue
                if _identity(opened) in entered:  # entered before and could not be emptied: leave it
                    os.close(opened)
                    continue
                entered.add(_identity(opened))
                subfolder = (opened, entry, fd)
            if subfolder is not None:
                stack.append(subfolder)
                continue
            stack.pop()
            os.close(fd)
            if parent is not None:
                _quietly(os.rmdir, name, dir_fd=parent)
    finally:
        for fd, _, _ in stack:
            os.close(fd)
    _quietly(os.rmdir, root)


def _identity(fd: int) -> tuple[int, int]:
    status = os.fstat(fd)
    return status.st_dev, status.st_ino


def _quietly(function, *args, **kwargs) -> bool:
    try:
        function(*args, **kwargs)
        return True
    except OSError:
        return False


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


class ConfinedRunner:
    """Runner(batch NCHW float32) -> outputs, served by a confined child; `.time(sample, warmup, runs)`
    measures latency inside the child; `.call(function, ...)` runs one of the product's functions on
    the artifact there (a per-op profile); `.close()` ends it. With `adapter=False` the child loads
    nothing itself and only answers calls."""

    def __init__(self, family: str, artifact: Path, manifest: dict | None, threads: int, limits: RunnerLimits | None = None, simulate: str | None = None,
                 adapter: bool = True, preload: str | None = None):
        self.limits = limits = limits or RunnerLimits()  # read now: the environment may have changed since import
        self._closed, self._code, self.pid, self.threads = False, None, None, threads
        self.work = Path(tempfile.mkdtemp(prefix="edgemnv2-runner-"))
        request_read, self._request = os.pipe()
        self._reply, reply_write = os.pipe()
        os.set_blocking(self._request, False)  # writes to it are bounded by the call's deadline too
        try:
            # the factory imports the simulation's or the call's module once, before it forks (preload: "module:name")
            self.pid = _zygote().spawn(family, simulate or preload, self.work, request_read, reply_write)
        except BaseException:
            self.close()
            raise
        finally:
            os.close(request_read)
            os.close(reply_write)
        limits_sent = {"memory_bytes": limits.memory_mb << 20, "cpu_seconds": limits.cpu_seconds, "file_bytes": limits.file_mb << 20,
                       "require_confinement": limits.require_confinement, "processes": limits.processes,
                       "tasks": limits.tasks or tasks.allowance(threads)}
        reply = self._ask({"artifact": str(Path(artifact).resolve()), "work_dir": str(self.work), "family": family, "threads": threads,
                           "manifest": manifest if simulate else plain_manifest(manifest), "limits": limits_sent,
                           "failpoint": _failpoint_for(Path(artifact).name), "simulate": simulate, "adapter": adapter})[0]
        if reply.get("kind") == "no_runtime":
            self.close()
            raise RuntimeUnavailable(reply["error"])
        if reply.get("kind") == "refused":
            self.close()
            raise ArtifactRefused(reply["error"])
        if "error" in reply:
            self.close()
            raise RunnerFailed(f"the runtime could not load it: {reply['error']}")
        self.confinement, self.runtime, self.version = (_text(reply.get(key)) for key in ("confinement", "runtime", "version"))
        self.load_ms = _number(reply.get("load_ms"))  # the runtime loading the artifact, inside the runner
        self.baseline_mb = _number(reply.get("baseline_kb")) / 1024  # the runner before its runtime was imported
        self.batch_size = None if reply.get("batched") is True else 1

    def _ask(self, header: dict, arrays=()) -> tuple[dict, list[np.ndarray]]:
        """Send a request; its whole answer must arrive within the per-call limit (a runner that stops
        halfway through a message is killed like one that never answers)."""
        if self._code is not None:
            raise RunnerFailed(self._death())
        deadline = time.monotonic() + self.limits.call_seconds
        try:
            send(self._request, header, arrays, deadline)  # a runner that stops reading times out as one that stops answering
            return receive(self._reply, deadline)
        except TimedOut:
            self._kill()
            raise RunnerFailed(f"timed out: no whole answer within {self.limits.call_seconds:g} s (the runner was killed)") from None
        except (ProtocolError, OSError) as exc:  # a broken pipe (it died), or bytes that are not a message
            # a runner that died closed its pipe a moment before the kernel made it reapable: give its exit a second
            cause = self._death() if self._ended(grace=1.0) else f"it sent what is not an answer ({exc}); the runner was killed"
            self._kill()
            raise RunnerFailed(cause) from None

    def _ended(self, grace: float = 0.0) -> bool:
        """Whether it has exited (reaped, with its code), polled for at most `grace` seconds: never a
        blocking wait on a runner that may still be there."""
        deadline = time.monotonic() + grace
        while self._code is None and self.pid is not None:
            code = _zygote().status(self.pid, wait=False)
            if code is not None:
                self._code = code
            elif time.monotonic() < deadline:
                time.sleep(0.01)
                continue
            break
        return self._code is not None

    def _exit_code(self) -> int:
        """Its exit code (negative: the signal): a runner still there is killed first, so this never waits on it."""
        if self._code is None and not self._ended():
            self._kill()
        return self._code if self._code is not None else -signal.SIGKILL

    def _death(self) -> str:
        code = self._exit_code()
        if code < 0:
            name = _signal_name(code)
            limit = {"SIGXCPU": f"its CPU-time limit ({self.limits.cpu_seconds} s)", "SIGKILL": "a kill (a limit or the system's memory guard)",
                     "SIGABRT": f"an abort (a failed allocation under its {self.limits.memory_mb} MB memory limit ends this way too)"}.get(name)
            return f"the runner died by {name}" + (f": {limit}" if limit else "")
        tail = self._log_tail()
        if "MemoryError" in tail:
            return f"the runner exceeded its memory limit ({self.limits.memory_mb} MB)"
        if "can't start new thread" in tail:
            return f"the runner exceeded its thread limit ({self.limits.tasks or tasks.allowance(self.threads)})"
        return f"the runner exited with code {code}" + (f": {tail.splitlines()[-1][:300]}" if tail.strip() else "")

    def _log_tail(self) -> str:
        try:
            return (self.work / "runner.log").read_bytes()[-4000:].decode(errors="replace")
        except OSError:
            return ""

    def _answer(self, header: dict, arrays=()) -> tuple[dict, list[np.ndarray]]:
        reply, outputs = self._ask(header, arrays)
        if "error" in reply:
            error = str(reply["error"])
            raise {"user": UserError, "refused": ArtifactRefused, "no_runtime": RuntimeUnavailable}.get(reply.get("kind"), RunnerFailed)(
                error if reply.get("kind") in ("user", "refused", "no_runtime") else f"the runtime failed on it: {error}")
        return reply, outputs

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        outputs = self._answer({"op": "run"}, [np.ascontiguousarray(batch, dtype=np.float32)])[1]
        if not outputs or any(output.dtype != np.float32 or not output.ndim or len(output) != len(batch) for output in outputs):
            raise RunnerFailed("the runner's outputs are not float32 arrays, one row per input")
        return outputs

    def call(self, function: str, args: tuple = (), arrays: tuple = (), kwargs: dict | None = None, records: tuple[type, ...] = ()):
        """function(artifact, *args, *arrays, **kwargs), run in the runner: a function of edgemnv2's
        own packages, named "module:name"; args and kwargs JSON, arrays numpy.
        Its result comes back as data (codec.py), with records rebuilt only as the `records` given."""
        reply, arrays_back = self._answer({"op": "call", "function": function, "args": list(args), "kwargs": kwargs or {}},
                                          [np.ascontiguousarray(a) for a in arrays])
        try:
            return codec.decode(reply.get("result"), arrays_back, records)
        except (codec.DecodeError, RecursionError) as exc:
            raise RunnerFailed(f"the runner's answer to {function} is not what it returns: {exc}") from None

    def time(self, sample: np.ndarray, warmup: int, runs: int) -> list[float]:
        reply, _ = self._answer({"op": "time", "warmup": warmup, "runs": runs}, [np.ascontiguousarray(sample, dtype=np.float32)])
        times = reply.get("times_ms")
        if not isinstance(times, list) or len(times) != max(runs, 1) or not all(_is_duration(t) for t in times):
            raise RunnerFailed("the runner sent no timings, or timings that are not durations")
        return [float(t) for t in times]

    def peak_rss_mb(self) -> float | None:
        """The runner's resident-memory peak so far (VmHWM), where /proc tells it."""
        peak = status_kb("VmHWM", self.pid)
        return None if peak is None else peak / 1024

    def _kill(self) -> None:
        """Kill its whole process group (what it started stays in it: it cannot leave), then have the
        factory reap it; the factory kills the group again before reaping, so nothing outlives it."""
        if self.pid is None or self._code is not None:
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        code = _zygote().status(self.pid, wait=True)  # after SIGKILL, a wait that ends
        self._code = code if code is not None else -signal.SIGKILL

    def close(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        if self._code is None and self.pid is not None:
            try:
                send(self._request, {"op": "close"}, deadline=time.monotonic() + 2)
                _until_end_of_file(self._reply, time.monotonic() + 10)  # it has exited (or closed its end: killed below)
            except (OSError, ProtocolError):
                pass
            self._exit_code()  # killed if it is still there: never waited on
        for fd in (self._request, self._reply):
            try:
                os.close(fd)
            except OSError:
                pass
        _remove_tree(self.work)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _until_end_of_file(fd: int, deadline: float) -> None:
    """Drain the pipe until the other end is closed, or the deadline passes."""
    while (left := deadline - time.monotonic()) > 0 and select.select([fd], [], [], left)[0]:
        if not os.read(fd, 1 << 16):
            return


def _text(value) -> str:
    return value[:500] if isinstance(value, str) else "?"


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0 else 0.0


def _is_duration(value) -> bool:
    """A latency in ms a runner may report: finite, not negative, under a day."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value < 86_400_000


# tests: "segfault" or "allocate" (after loading), "hide=pkg,pkg" (a runtime missing), optionally ":ARTIFACT_NAME" for one artifact only
FAILPOINT = "EDGEMNV2_RUNNER_FAILPOINT"


def _failpoint_for(name: str) -> str | None:
    point, _, only = os.environ.get(FAILPOINT, "").partition(":")
    return point if point and (not only or only == name) else None


def plain_manifest(manifest: dict | None) -> dict:
    """What an adapter reads of a manifest (JSON-safe): outputs, preprocessing, engine."""
    manifest = manifest or {}
    return {key: manifest[key] for key in ("outputs", "preprocessing", "quantized_engine", "target", "precision") if key in manifest}


class _Zygote:
    """The host's one runner factory (edgemnv2.confine.zygote), started on first use and ended with
    the host: a fresh interpreter with every runtime imported, forking a runner per artifact."""

    def __init__(self):
        self._lock = threading.Lock()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {key: os.environ[key] for key in ENV_KEEP if key in os.environ}
        # OpenMP's wait policy is not forced: PASSIVE (threads sleep at once) made TorchScript 1.7-2x slower
        # than in process (measured: 4.4 against 2.6 ms), so it stays the user's (ENV_KEEP); BLAS threads
        # are not needed before a runtime's.
        # bytecode: the factory (not confined) caches what it compiles, as any Python does; `make setup` installs
        # with --no-compile, and a factory that compiled torch afresh at every start would pay seconds each time
        env.update(OPENBLAS_NUM_THREADS="1", HOME=tempfile.gettempdir(), **NO_TELEMETRY)
        self.process = subprocess.Popen([sys.executable, "-I", "-m", "edgemnv2.confine.zygote", str(theirs.fileno())], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, pass_fds=(theirs.fileno(),),
                                        cwd=tempfile.gettempdir(), start_new_session=True)
        theirs.close()
        self.socket = ours
        atexit.register(self.close)

    def _request(self, header: dict, fds: tuple = ()) -> dict:
        with self._lock:
            socket.send_fds(self.socket, [json.dumps(header).encode()], list(fds))
            reply = self.socket.recv(1 << 16)
        if not reply:
            raise RunnerFailed("the runner factory (edgemnv2.confine.zygote) has died")
        return json.loads(reply)

    def spawn(self, family: str, simulate: str | None, work: Path, request_fd: int, reply_fd: int) -> int:
        header = {"op": "spawn", "family": family, "simulate": simulate, "work_dir": str(work)}
        return int(self._request(header, (request_fd, reply_fd))["pid"])

    def preload(self, families: list[str], modules: list[str]) -> None:
        self._request({"op": "preload", "families": families, "modules": modules})

    def status(self, pid: int, wait: bool) -> int | None:
        """Its exit code once it has ended (the factory reaps it); None while it runs (wait=False)."""
        code = self._request({"op": "status", "pid": pid, "wait": wait}).get("code")
        return code if isinstance(code, int) else None

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        try:
            self.socket.close()
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()


_FACTORY: list[_Zygote] = []


def warm(families: list[str], modules: list[str] = ()) -> None:
    """Start the runner factory now and have it import these runtime families (and modules) while
    the caller does other work (validate loads its data and checkpoint meanwhile): the runners it
    forks later start with their runtime imported, as a process that imported it would."""
    _zygote().preload(sorted(set(families)), sorted(set(modules)))


def settle() -> None:
    """Wait until the runner factory has finished what it was asked to import (warm): a caller about
    to time something does not want those imports competing for the CPU."""
    if _FACTORY and _FACTORY[0].alive():
        _FACTORY[0]._request({"op": "ping"})


def _zygote() -> _Zygote:
    if not _FACTORY or not _FACTORY[0].alive():
        _FACTORY[:] = [_Zygote()]
    return _FACTORY[0]

