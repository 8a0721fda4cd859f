"""A runner process: loads one artifact with its runtime adapter and runs it for the host, confined.

Forked by the runner factory (edgemnv2.confine.zygote: a fresh interpreter, never a fork of the
host, so nothing of the host's memory is here), with a scrubbed environment and no file descriptors
but its two pipes. Before the artifact is opened it takes away its
own rights, for good: resource limits (memory, CPU time, file size, no core dumps) and, where the
kernel has Landlock, read access only to the Python installation, the system libraries and the
artifact's private copy, write access only to its own empty folder, and no TCP. Then it answers
requests (protocol.py) until told to stop. Imports numpy, the adapters and, lazily, one runtime.
"""

import importlib
import os
import resource
import sys
import sysconfig
import time
import traceback
from pathlib import Path

from ..device.runtime_adapters import IMPORTS, RUNTIMES, ArtifactMismatch, NoRuntime
from ..errors import CheckFailed, UserError
from . import capabilities, codec, landlock, seccomp, tasks
from .protocol import receive, send

# Where a runtime reads from besides the Python installation: shared libraries and their cache,
# and the few kernel files thread pools and CPU detection read (this process's own /proc entry only).
SYSTEM_READ = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
               "/proc/self", "/proc/thread-self", "/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/sys/devices/system/cpu",
               "/sys/fs/cgroup", "/dev/null", "/dev/urandom", "/usr/share/zoneinfo")


def python_roots() -> list[Path]:
    """The interpreter, its standard library, its site-packages and edgemnv2's own package: not the
    other entries of sys.path (an editable install puts the whole source tree there, and an
    artifacts folder may sit inside it)."""
    product = Path(__file__).resolve().parents[2]  # edgemnv2, and the conversion and quantization packages a simulation imports
    roots = {Path(sys.prefix), Path(sys.base_prefix), *(product / p for p in ("edgemnv2", "conversion", "quantization"))}
    roots |= {Path(p) for p in sysconfig.get_paths().values()}
    return sorted(root.resolve() for root in roots if root.exists())


OPEN_FILES, PENDING_SIGNALS = 256, 64


def _limit(kind: int, value: int | None) -> None:
    if value is None:
        return
    soft, hard = resource.getrlimit(kind)
    cap = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(kind, (cap, cap))


def confine(artifact_dir: Path, work_dir: Path, limits: dict, threads: int, factory: int | None = None) -> str:
    """Apply the limits, cap its threads, drop capabilities, then Landlock and the seccomp filter, each
    on its own (a kernel without Landlock still gets the filter); -> what was enforced, for the
    report's rows. With `require_confinement`, anything missing raises instead (an uncapped thread
    count is said, not refused: it threatens the machine's liveness, not its files)."""
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_DATA, limits.get("memory_bytes"))
    if limits.get("memory_bytes"):  # shared mappings escape RLIMIT_DATA: all new address space is held to the same budget
        _limit(resource.RLIMIT_AS, (status_kb("VmSize") or 0) * 1024 + limits["memory_bytes"])
    _limit(resource.RLIMIT_CPU, limits.get("cpu_seconds"))
    _limit(resource.RLIMIT_FSIZE, limits.get("file_bytes"))
    # descriptors (each pipe can hold a megabyte of kernel memory) and queued signals (POSIX timers): quotas every process of the uid shares
    _limit(resource.RLIMIT_NOFILE, OPEN_FILES)
    _limit(resource.RLIMIT_SIGPENDING, PENDING_SIGNALS)
    threads_capped, threads_uncapped = tasks.cap(int(limits.get("tasks") or tasks.allowance(threads)), factory or os.getppid())  # first: joining a cgroup needs the rights dropped next
    enforced, missing = [], []
    for name, take in (("capabilities", capabilities.drop_all),
                       ("Landlock", lambda: landlock.restrict(read=[*python_roots(), *(Path(p) for p in SYSTEM_READ), artifact_dir, work_dir],
                                                           write=[work_dir] if limits.get("processes") else [])),
                       ("seccomp", lambda: seccomp.restrict(bool(limits.get("processes"))))):
        try:
            result = take()
        except OSError as exc:
            missing.append(f"{name}: {exc}")
            continue
        described = seccomp.DESCRIPTION.replace("no new processes", "processes in its own group only") if limits.get("processes") else seccomp.DESCRIPTION
        enforced.append({"capabilities": "no capabilities", "seccomp": described}.get(name) or result.describe())
    if missing and limits.get("require_confinement"):
        raise OSError("cannot confine the runner: " + "; ".join(missing))
    limited = ["resource limits", threads_capped or threads_uncapped]
    if missing:
        return f"not confined ({'; '.join(missing)}); " + "; ".join(enforced + limited)
    return "confined: " + "; ".join([enforced[1], enforced[2], enforced[0], *limited])


SIMULATION = "simulation"  # a target's simulate() (CoreML on Linux): the converted program, run in PyTorch


def _simulation(artifact: Path, header: dict):
    """The target's own simulation of its artifact, here instead of in the host: the program file
    is as untrusted as any artifact (its operators are ATen's, from_file included). The host names
    the target's simulate function ("module:function"); this layer does not import the targets."""
    import torch

    module, _, function = str(header["simulate"]).partition(":")
    torch.set_num_threads(int(header["threads"]))
    runner = getattr(importlib.import_module(module), function)(artifact, header["manifest"])
    return runner, "PyTorch (simulation)", torch.__version__


def status_kb(field: str, pid: int | str = "self") -> int | None:
    """A field of /proc/PID/status in kB (VmRSS, VmHWM), where /proc tells it; the host reads its runners' too."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _hide(point: str | None) -> None:
    """Tests ("hide=pkg,pkg"): this runner behaves as on a machine without those packages."""
    if not point or not point.startswith("hide="):
        return
    hidden = tuple(point[len("hide="):].split(","))
    for name in [name for name in sys.modules if name.split(".")[0] in hidden]:
        del sys.modules[name]

    class Hidden:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in hidden:
                raise ImportError(f"hidden by a test: {name}")

    sys.meta_path.insert(0, Hidden())


def _failpoint(point: str | None, reply_fd: int) -> None:
    """Tests (the host's EDGEMNV2_RUNNER_FAILPOINT): a fault of the artifact's kind right after loading,
    or a runner taken over by it: one that stops halfway through its answer, or floods the host."""
    if point == "stall":
        import os

        os.write(reply_fd, b"\x00\x00")
        time.sleep(3600)
    elif point == "flood":
        import json
        import os
        import struct

        header = json.dumps({"ready": True, "arrays": [{"dtype": "float32", "shape": [1 << 29]}] * 500}).encode()
        os.write(reply_fd, struct.pack(">I", len(header)) + header)  # an answer announcing 1000 GB of arrays
        time.sleep(3600)
    elif point == "segfault":
        import ctypes

        ctypes.string_at(0)  # reads address 0: SIGSEGV, as a runtime crashing on hostile bytes would
    elif point == "orphan":  # a process the runner starts (only the one allowed to): it must not outlive the host
        import os

        if os.fork() == 0:
            time.sleep(3600)
            os._exit(0)
    elif point == "threads":
        import threading

        for _ in range(100_000):  # until the thread cap stops it: "can't start new thread"
            threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
    elif point == "allocate":
        hog = []
        while True:  # until the memory limit stops it
            hog.append(bytearray(1 << 26))


def _load(header: dict, artifact: Path):
    """-> (run_one or None, runtime, version, load ms): the artifact loaded by its family's adapter,
    the target's simulation, or nothing (a runner that only answers calls)."""

    for module in IMPORTS.get(header["family"], ()):
        try:
            importlib.import_module(module)
        except ImportError:  # the adapter says which runtime is missing, in its words
            pass
    started = time.perf_counter()
    if not header.get("adapter", True):
        return None, "-", "-", 0.0
    if header["family"] == SIMULATION:
        run_one, runtime, version = _simulation(artifact, header)
    else:
        run_one, runtime, version = RUNTIMES[header["family"]](str(artifact), int(header["threads"]), header.get("manifest") or {})
    return run_one, runtime, version, (time.perf_counter() - started) * 1000


def serve(request_fd: int, reply_fd: int, factory: int | None = None) -> int:
    header, _ = receive(request_fd)
    artifact, work_dir = Path(header["artifact"]), Path(header["work_dir"])
    try:
        confinement = confine(artifact.parent, work_dir, header.get("limits", {}), int(header["threads"]), factory)
        _hide(header.get("failpoint"))
        baseline_kb = status_kb("VmRSS")

        run_one, runtime, version, load_ms = _load(header, artifact)
    except NoRuntime as exc:
        send(reply_fd, {"error": str(exc), "kind": "no_runtime"})
        return 0
    except (CheckFailed, UserError, ArtifactMismatch) as exc:  # edgemnv2's own checks refused the file (a simulation program's shape)
        send(reply_fd, {"error": str(exc), "kind": "refused"})
        return 0
    except Exception as exc:  # the runtime refused the file: the host makes it the artifact's row
        send(reply_fd, {"error": f"{type(exc).__name__}: {exc}", "kind": "load", "traceback": traceback.format_exc()[-4000:]})
        return 0
    _failpoint(header.get("failpoint"), reply_fd)
    send(reply_fd, {"ready": True, "confinement": confinement, "runtime": runtime, "version": version, "load_ms": load_ms, "baseline_kb": baseline_kb,
                    "batched": bool(getattr(run_one, "batched", False))})
    while True:
        request, arrays = receive(request_fd)
        if request.get("op") == "close":
            return 0
        try:
            answer, answer_arrays = _answer(request, arrays, run_one, artifact)
        except (CheckFailed, UserError, ArtifactMismatch) as exc:  # the product's own check, in its own words (a capture of an fp32 file)
            send(reply_fd, {"error": str(exc), "kind": "user" if isinstance(exc, UserError) else "refused"})
            continue
        except NoRuntime as exc:  # a profile or capture whose runtime cannot run here (a bf16 IR on a CPU without bf16)
            send(reply_fd, {"error": str(exc), "kind": "no_runtime"})
            continue
        except Exception as exc:
            send(reply_fd, {"error": f"{type(exc).__name__}: {exc}", "kind": "run", "traceback": traceback.format_exc()[-4000:]})
            continue
        send(reply_fd, answer, answer_arrays)


# The product's own functions a host may ask a runner to call on its artifact (a target's profile,
# capture or describe): code from these packages, never from the artifact.
CALLABLE_PACKAGES = ("conversion.", "edgemnv2.")


def _answer(request: dict, arrays: list, run_one, artifact: Path) -> tuple[dict, list]:
    op = request.get("op")
    if op == "call":  # fn(artifact, *args, *arrays, **kwargs)
        module, _, name = str(request.get("function")).partition(":")
        if not module.startswith(CALLABLE_PACKAGES):
            raise ValueError(f"{module!r} is not one of edgemnv2's modules")
        function = getattr(importlib.import_module(module), name)
        result = function(artifact, *request.get("args", []), *arrays, **request.get("kwargs", {}))
        out: list = []
        return {"ok": True, "result": codec.encode(result, out)}, out
    if run_one is None:
        raise ValueError(f"this runner loaded no artifact to {op!r}")
    if op == "run":
        (batch,) = arrays
        if getattr(run_one, "batched", False):
            outputs = run_one(batch)
        else:
            results = [run_one(batch[i : i + 1]) for i in range(len(batch))]
            outputs = [__import__("numpy").concatenate([r[k] for r in results]) for k in range(len(results[0]))]
        return {"ok": True}, [o.astype("float32", copy=False) for o in outputs]
    if op == "time":  # latency measured here, on the artifact's own input, as the host did in process
        (sample,) = arrays
        if hasattr(run_one, "encode"):
            encoded = run_one.encode(sample)
            call = lambda: run_one.run_encoded(encoded)  # noqa: E731
        else:
            call = lambda: run_one(sample)  # noqa: E731
        for _ in range(int(request.get("warmup", 3))):
            call()
        times = []
        for _ in range(max(1, int(request.get("runs", 20)))):
            start = time.perf_counter()
            call()
            times.append((time.perf_counter() - start) * 1000)
        return {"ok": True, "times_ms": times}, []
    raise ValueError(f"unknown request {op!r}")
