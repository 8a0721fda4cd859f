"""The host's side of a runner process: start it confined, hand it arrays, survive whatever it does.

Modelled on a browser's utility process: the bytes of an artifact are parsed and run only in a child
started from a fresh interpreter (edgemnv2.confine.child) that can read only the Python installation
and the artifact's verified private copy, can write only its own empty folder, cannot open TCP
connections, and has a memory, CPU-time and per-call wall-clock limit. Arrays travel as raw buffers
(protocol.py), never pickled. A child that dies (a signal, a limit, a timeout) raises RunnerFailed
naming the cause, and the host goes on with the other artifacts.
"""

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifacts import RuntimeUnavailable
from .protocol import ProtocolError, receive, send

ENV_KEEP = ("PATH", "LANG", "LC_ALL", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "EDGEMNV2_RUNNER_FAILPOINT")


@dataclass(frozen=True)
class RunnerLimits:
    memory_mb: int = 6144  # RLIMIT_DATA: the heap and private mappings a runtime may take
    cpu_seconds: int = 3600
    call_seconds: float = 600.0  # wall clock per request (loading included)
    file_mb: int = 64  # the largest file it may write (its folder is scratch only)
    require_confinement: bool = False  # refuse to run where Landlock is missing


class RunnerFailed(Exception):
    """The runner process died or broke a limit, or its runtime refused the artifact: the artifact's
    row says which, on one line (a runtime's message can span a whole TorchScript traceback)."""

    def __str__(self) -> str:
        return " ".join(super().__str__().split())


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


class ConfinedRunner:
    """Runner(batch NCHW float32) -> outputs, served by a confined child; `.time(sample, warmup, runs)`
    measures latency inside the child; `.close()` ends it."""

    def __init__(self, family: str, artifact: Path, manifest: dict, threads: int, limits: RunnerLimits = RunnerLimits()):
        self.limits = limits
        self._closed = False
        self.work = Path(tempfile.mkdtemp(prefix="edgemnv2-runner-"))
        request_read, self._request = os.pipe()
        self._reply, reply_write = os.pipe()
        env = {key: os.environ[key] for key in ENV_KEEP if key in os.environ}
        env.update(HOME=str(self.work), TMPDIR=str(self.work), OMP_NUM_THREADS=str(threads), PYTHONDONTWRITEBYTECODE="1")
        self._log = open(self.work / "runner.log", "wb")
        try:
            self.process = subprocess.Popen([sys.executable, "-I", "-m", "edgemnv2.confine.child", str(request_read), str(reply_write)],
                                            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, env=env,
                                            pass_fds=(request_read, reply_write), cwd=self.work, start_new_session=True)
        finally:
            os.close(request_read)
            os.close(reply_write)
        limits_sent = {"memory_bytes": limits.memory_mb << 20, "cpu_seconds": limits.cpu_seconds, "file_bytes": limits.file_mb << 20,
                       "require_confinement": limits.require_confinement}
        reply = self._ask({"artifact": str(Path(artifact).resolve()), "work_dir": str(self.work), "family": family, "threads": threads,
                           "manifest": _plain_manifest(manifest), "limits": limits_sent})[0]
        if reply.get("kind") == "no_runtime":
            self.close()
            raise RuntimeUnavailable(reply["error"])
        if "error" in reply:
            self.close()
            raise RunnerFailed(f"the runtime could not load it: {reply['error']}")
        self.confinement, self.runtime, self.version = reply["confinement"], reply["runtime"], reply["version"]
        self.batch_size = None if reply.get("batched") else 1

    def _ask(self, header: dict, arrays=()) -> tuple[dict, list[np.ndarray]]:
        if self.process.poll() is not None:
            raise RunnerFailed(self._death())
        try:
            send(self._request, header, arrays)
            ready, _, _ = select.select([self._reply], [], [], self.limits.call_seconds)
            if not ready:
                self._kill()
                raise RunnerFailed(f"timed out: no answer within {self.limits.call_seconds:g} s (the runner was killed)")
            return receive(self._reply)
        except (ProtocolError, BrokenPipeError, OSError) as exc:
            if isinstance(exc, RunnerFailed):
                raise
            self.process.wait(timeout=30)
            raise RunnerFailed(self._death()) from None

    def _death(self) -> str:
        code = self.process.wait(timeout=30)
        if code < 0:
            name = _signal_name(code)
            limit = {"SIGXCPU": f"its CPU-time limit ({self.limits.cpu_seconds} s)", "SIGKILL": "a kill (a limit or the system's memory guard)",
                     "SIGABRT": f"an abort (a failed allocation under its {self.limits.memory_mb} MB memory limit ends this way too)"}.get(name)
            return f"the runner died by {name}" + (f": {limit}" if limit else "")
        tail = self._log_tail()
        if "MemoryError" in tail:
            return f"the runner exceeded its memory limit ({self.limits.memory_mb} MB)"
        return f"the runner exited with code {code}" + (f": {tail.splitlines()[-1][:300]}" if tail.strip() else "")

    def _log_tail(self) -> str:
        try:
            return (self.work / "runner.log").read_bytes()[-4000:].decode(errors="replace")
        except OSError:
            return ""

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        reply, outputs = self._ask({"op": "run"}, [np.ascontiguousarray(batch, dtype=np.float32)])
        if "error" in reply:
            raise RunnerFailed(f"the runtime failed on it: {reply['error']}")
        return outputs

    def time(self, sample: np.ndarray, warmup: int, runs: int) -> list[float]:
        reply, _ = self._ask({"op": "time", "warmup": warmup, "runs": runs}, [np.ascontiguousarray(sample, dtype=np.float32)])
        if "error" in reply:
            raise RunnerFailed(f"the runtime failed on it: {reply['error']}")
        times = reply.get("times_ms")
        if not isinstance(times, list) or not times or not all(isinstance(t, (int, float)) for t in times):
            raise RunnerFailed("the runner sent no timings")
        return [float(t) for t in times]

    def _kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)

    def close(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        if self.process.poll() is None:
            try:
                send(self._request, {"op": "close"})
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._kill()
        for fd in (self._request, self._reply):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
        shutil.rmtree(self.work, ignore_errors=True)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _plain_manifest(manifest: dict | None) -> dict:
    """What an adapter reads of a manifest (JSON-safe): outputs, preprocessing, engine."""
    manifest = manifest or {}
    return {key: manifest[key] for key in ("outputs", "preprocessing", "quantized_engine", "target", "precision") if key in manifest}
