"""Runner processes (edgemnv2.confine): an artifact is loaded and run in a fresh, confined child, and
whatever it does, the host survives with a one-line cause. Real runtimes, real files."""

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from edgemnv2.artifacts import RuntimeUnavailable
from edgemnv2.confine import landlock, tasks
from edgemnv2.confine.runner import ConfinedRunner, RunnerFailed, RunnerLimits

from .test_trust import artifact_of

pytestmark = pytest.mark.skipif(landlock.abi_version() < 4, reason="needs Linux Landlock ABI 4+ (files and TCP)")

# TorchScript is a program: this one maps a file of the host and writes through the mapping. Its
# result is used, so dead-code elimination cannot drop the write.
WRITER = '''
import sys
import torch

class Writer(torch.nn.Module):
    def __init__(self, target: str):
        super().__init__()
        self.target = target

    def forward(self, x):
        mapped = torch.from_file(self.target, shared=True, size=4, dtype=torch.uint8)
        mapped.fill_(65)
        return x * 0 + mapped.sum().float()

torch.jit.script(Writer(sys.argv[1])).save(sys.argv[2])
'''


def _writer_artifact(tmp_path: Path, victim: Path) -> Path:
    script = tmp_path / "make_writer.py"
    script.write_text(WRITER)
    artifact = tmp_path / "artifact" / "writer.pt"
    artifact.parent.mkdir()
    subprocess.run([sys.executable, str(script), str(victim), str(artifact)], check=True, capture_output=True, timeout=300)
    return artifact


def test_a_torchscript_file_that_writes_through_from_file_changes_nothing(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    artifact = _writer_artifact(tmp_path, victim)
    torch.jit.load(str(artifact))(torch.zeros(1, 3, 4, 4))  # in the host's own process the attack is real
    assert victim.read_text() == "AAAAious"
    victim.write_text("precious")
    with pytest.raises(RunnerFailed) as failed:
        runner = ConfinedRunner("torch", artifact, {}, threads=1)
        runner(np.zeros((1, 3, 4, 4), np.float32))
    assert victim.read_text() == "precious"
    assert "\n" not in str(failed.value) and "victim.txt" in str(failed.value)


def test_a_runner_that_segfaults_or_outgrows_its_memory_is_named_and_the_host_survives(classifier_artifacts, monkeypatch):
    _, folder, _, _ = classifier_artifacts
    artifact, manifest = artifact_of(folder, "tflite", "int8")
    host_peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    monkeypatch.setenv("EDGEMNV2_RUNNER_FAILPOINT", "segfault")
    with pytest.raises(RunnerFailed, match="SIGSEGV"):
        ConfinedRunner("tflite", artifact, manifest, threads=1)
    monkeypatch.setenv("EDGEMNV2_RUNNER_FAILPOINT", "allocate")
    with pytest.raises(RunnerFailed, match="memory limit"):
        # above what the runner factory's imports already hold (torch's, if a runner needed them: ~1 GB of data)
        ConfinedRunner("tflite", artifact, manifest, threads=1, limits=RunnerLimits(memory_mb=2048))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - host_peak_kb < (256 << 10)  # kB: the host never held the hog


@pytest.mark.skipif(tasks.parent_dir() is None and os.getuid() == 0, reason="root without a writable pids cgroup: threads cannot be capped here")
def test_a_runner_that_starts_threads_without_end_meets_its_cap_and_leaves_no_cgroup(classifier_artifacts, monkeypatch):
    _, folder, _, _ = classifier_artifacts
    artifact, manifest = artifact_of(folder, "tflite", "int8")
    monkeypatch.setenv("EDGEMNV2_RUNNER_FAILPOINT", "threads")
    with pytest.raises(RunnerFailed, match=rf"thread limit \({tasks.allowance(1)}\)"):
        ConfinedRunner("tflite", artifact, manifest, threads=1)
    monkeypatch.delenv("EDGEMNV2_RUNNER_FAILPOINT")
    runner = ConfinedRunner("tflite", artifact, manifest, threads=1)
    assert f"at most {tasks.allowance(1)}" in runner.confinement
    pid = runner.pid
    runner.close()
    if tasks.parent_dir() is not None:  # the factory removed the runner's cgroup once it reaped it
        assert not list(tasks.parent_dir().glob(f"{tasks.PREFIX}*-{pid}"))


def test_what_a_runner_started_dies_with_a_host_killed_outright(tmp_path):
    """The host killed by SIGKILL (a crash, the OOM killer) runs no cleanup of its own: the factory
    kills every runner's group, what they started included, and removes their cgroups."""
    host = tmp_path / "host.py"
    host.write_text("import os, signal, sys\nfrom edgemnv2.confine.runner import ConfinedRunner, RunnerLimits\n"
                    "runner = ConfinedRunner('tflite', sys.argv[1], {}, 1, RunnerLimits(processes=True), adapter=False)\n"
                    "print(runner.pid, flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    (tmp_path / "artifact").write_bytes(b"x")
    done = subprocess.run([sys.executable, str(host), str(tmp_path / "artifact")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "EDGEMNV2_RUNNER_FAILPOINT": "orphan"}, cwd=Path(__file__).resolve().parents[1])
    runner = int(done.stdout.split()[0])
    def cgroups() -> list:
        return list(tasks.parent_dir().glob(f"{tasks.PREFIX}*-{runner}")) if tasks.parent_dir() is not None else []

    deadline = time.monotonic() + 10  # the factory kills, reaps, then removes the cgroup: all three, not only the first
    while time.monotonic() < deadline and (_group_members(runner) or cgroups()):
        time.sleep(0.1)
    assert not _group_members(runner), done.stderr[-2000:]
    assert not cgroups()


def _group_members(group: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":  # pgrp (zombies awaiting their reaper are gone already)
            members.append(int(stat.parent.name))
    return members


def test_a_confined_runner_gives_the_in_process_outputs_and_times_itself(classifier_artifacts):
    from conversion import TARGETS

    _, folder, _, _ = classifier_artifacts
    batch = np.random.default_rng(0).standard_normal((3, 3, 48, 48)).astype(np.float32)
    for target in ("tflite", "executorch", "onnx", "torchscript"):
        artifact, manifest = artifact_of(folder, target, "int8")
        expected = TARGETS[target].load(artifact, manifest, 1)(batch)
        runner = ConfinedRunner(TARGETS[target].spec.device_runtime, artifact, manifest, threads=1)
        try:
            assert runner.confinement.startswith("confined: Landlock")
            outputs = runner(batch)
            assert len(outputs) == len(expected) and all(np.array_equal(a, b) for a, b in zip(outputs, expected)), target
            times = runner.time(batch[:1], warmup=1, runs=3)
            assert len(times) == 3 and all(t > 0 for t in times)
        finally:
            runner.close()


def test_no_network_no_foreign_files_inside_the_runner(tmp_path):
    """The confinement itself, in a child that applies it the way a runner does."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import ctypes, json, os, socket, sys\nfrom pathlib import Path\nfrom edgemnv2.confine.child import confine\n"
        "work = Path(sys.argv[1])\nlog = os.open(work / 'runner.log', os.O_WRONLY | os.O_CREAT, 0o600)\n"
        "print(confine(work / 'artifact', work / 'scratch', {}, 1))\nresults = {}\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "def checked(code):\n    if code == -1:\n        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))\n"
        "for name, attempt in [('read_home', lambda: Path(sys.argv[2]).read_text()), ('write_scratch', lambda: (work / 'scratch' / 'x').write_text('x')),\n"
        "                      ('write_artifact', lambda: (work / 'artifact' / 'x').write_text('x')), ('connect', lambda: socket.create_connection(('127.0.0.1', 9), 1)),\n"
        "                      ('listen', lambda: socket.socket().bind(('127.0.0.1', 0))),\n"
        "                      ('udp', lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', 9))),\n"
        "                      ('unix', lambda: socket.socket(socket.AF_UNIX).connect('/run/dbus/system_bus_socket')),\n"
        "                      ('socketpair', lambda: socket.socketpair()), ('fork', lambda: os.fork()), ('setsid', lambda: os.setsid()),\n"
        "                      ('chmod_scratch', lambda: os.chmod(work / 'scratch' / 'x', 0o777)), ('kill_parent', lambda: os.kill(os.getppid(), 0)),\n"
        "                      ('kill_self', lambda: os.kill(os.getpid(), 0)), ('memfd', lambda: os.memfd_create('x')),\n"
        "                      ('shm', lambda: checked(libc.shmget(0, 1 << 20, 0o1600))),\n"
        "                      ('fallocate_keep_size', lambda: checked(libc.fallocate(log, 1, ctypes.c_long(0), ctypes.c_long(1 << 30)))),\n"
        "                      ('reserve_ioctl', lambda: checked(libc.ioctl(log, ctypes.c_ulong(0x4030582A), (ctypes.c_int64 * 6)(0, 0, 0, 1 << 30, 0, 0)))),\n"
        "                      ('inotify', lambda: checked(libc.inotify_init1(0)))]:\n"
        "    try:\n        attempt(); results[name] = 'allowed'\n    except OSError as exc:\n        results[name] = type(exc).__name__\n"
        "print(json.dumps(results))\n")
    (tmp_path / "artifact").mkdir()
    (tmp_path / "scratch").mkdir()
    secret = Path(tmp_path.parent / "secret.txt")
    secret.write_text("secret")
    done = subprocess.run([sys.executable, "-I", str(probe), str(tmp_path), str(secret)], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    results = json.loads(done.stdout.strip().splitlines()[-1])
    if tasks.parent_dir() is not None:  # the probe joined a pids cgroup as a runner does; no factory is here to remove it
        for folder in tasks.parent_dir().glob(f"{tasks.PREFIX}{os.getpid()}-*"):
            folder.rmdir()
    # only the runner allowed to start processes (the ExecuTorch profile's flatc) may write its folder
    assert results == {"read_home": "PermissionError", "write_scratch": "PermissionError", "write_artifact": "PermissionError",
                       "connect": "PermissionError", "listen": "PermissionError", "udp": "PermissionError", "unix": "PermissionError",
                       "socketpair": "PermissionError", "fork": "PermissionError", "setsid": "PermissionError", "chmod_scratch": "PermissionError",
                       "kill_parent": "PermissionError", "kill_self": "allowed", "memfd": "PermissionError", "shm": "PermissionError",
                       "fallocate_keep_size": "OSError", "reserve_ioctl": "OSError", "inotify": "PermissionError"}, done.stderr[-2000:]


def test_a_missing_runtime_is_runtime_unavailable_not_a_crash(classifier_artifacts):
    _, folder, _, _ = classifier_artifacts
    artifact, manifest = artifact_of(folder, "coreml", "fp32")
    with pytest.raises(RuntimeUnavailable, match="macOS"):
        ConfinedRunner("coreml", artifact, manifest, threads=1)


def test_the_protocol_refuses_what_no_runner_sends():
    import os

    from edgemnv2.confine.protocol import ProtocolError, receive

    read, write = os.pipe()
    header = json.dumps({"arrays": [{"dtype": "object", "shape": [1]}]}).encode()
    os.write(write, len(header).to_bytes(4, "big") + header)
    with pytest.raises(ProtocolError, match="type or shape"):
        receive(read)
    os.write(write, (1 << 30).to_bytes(4, "big"))
    with pytest.raises(ProtocolError, match="header"):
        receive(read)
    os.close(read)
    os.close(write)


# ---- predict runs every artifact in a runner process ----

def _image(path: Path) -> Path:
    from PIL import Image

    Image.fromarray(np.full((48, 48, 3), 128, np.uint8)).save(path)
    return path


def test_predict_on_a_writing_torchscript_file_with_a_self_description_changes_nothing(classifier_artifacts, tmp_path, capsys):
    """The attack of issue 28: a bare `.pt` that describes itself like an edgemnv2 artifact, and the
    same file under a manifest whose sha256 matches (an unsigned folder anyone could write)."""
    import zipfile

    from conversion.job import SELF_DESCRIPTION
    from edgemnv2.fileio import sha256_of

    from .test_trust import cli

    _, folder, _, _ = classifier_artifacts
    genuine, manifest = artifact_of(folder, "torchscript", "fp32")
    with zipfile.ZipFile(genuine) as archive:
        description = next(archive.read(m) for m in archive.namelist() if m.endswith("/extra/" + SELF_DESCRIPTION))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    writer = _writer_artifact(tmp_path, victim)
    bare = tmp_path / "downloaded" / "model.pt"
    bare.parent.mkdir()
    loaded = torch.jit.load(str(writer))
    torch.jit.save(loaded, str(bare), _extra_files={SELF_DESCRIPTION: description})
    image = _image(tmp_path / "photo.png")
    code, _, err = cli(capsys, "predict", "--model", bare, image)
    assert victim.read_text() == "precious" and code == 2 and len(err.strip().splitlines()) == 1, err
    forged = tmp_path / "forged"
    forged.mkdir()
    shutil.copyfile(bare, forged / genuine.name)
    manifest = dict(manifest, artifact_sha256=sha256_of(forged / genuine.name))
    (forged / (genuine.name + ".manifest.json")).write_text(json.dumps(manifest))
    code, _, err = cli(capsys, "predict", "--model", forged / genuine.name, image)
    assert victim.read_text() == "precious" and code == 2 and len(err.strip().splitlines()) == 1 and "Permission denied" in err, err


def test_a_labels_bomb_tflite_is_one_line_and_the_host_stays_small(classifier_artifacts, tmp_path, capsys):
    import io
    import zipfile

    _, folder, _, _ = classifier_artifacts
    app, _ = artifact_of(folder, "tflite", "fp32")
    stream = io.BytesIO(app.read_bytes())
    with zipfile.ZipFile(stream, "a", compression=zipfile.ZIP_DEFLATED) as archive, archive.open("labels.txt", "w", force_zip64=True) as labels:
        for _ in range(1 << 6):  # 1 GiB of newlines in about a megabyte, written 16 MB at a time
            labels.write(b"\n" * (1 << 24))
    bomb = tmp_path / "bomb.tflite"
    bomb.write_bytes(stream.getvalue())
    assert bomb.stat().st_size < app.stat().st_size + (2 << 20)
    # VmHWM, not ru_maxrss: exec keeps the forking parent's ru_maxrss (this test's, holding the bomb)
    probe = ("import sys\nfrom edgemnv2.cli.main import run\ncode = run(['predict', '--model', sys.argv[1], sys.argv[2]])\n"
             "peak = [line for line in open('/proc/self/status') if line.startswith('VmHWM:')][0]\nprint(code, int(peak.split()[1]) // 1024)\n")
    done = subprocess.run([sys.executable, "-c", probe, str(bomb), str(_image(tmp_path / "photo.png"))], capture_output=True, text=True, timeout=600)
    code, peak_mb = map(int, done.stdout.split()[-2:])
    assert code == 2 and "labels.txt inflates past" in done.stderr and peak_mb < 1024, (code, peak_mb, done.stderr[-500:])


# ---- validate: TorchScript under a manifest whose sha256 matches, a CoreML simulation program ----

SIMULATION_WRITER = '''
import sys
import torch
from conversion.program_file import load_program, save_program

@torch.library.register_fake("aten::from_file")  # so that torch.export can trace the call
def _fake(filename, shared=None, size=0, *, dtype=None, layout=None, device=None, pin_memory=None):
    return torch.empty(size, dtype=dtype)

class Writer(torch.nn.Module):
    def forward(self, x):
        mapped = torch.ops.aten.from_file.default(sys.argv[1], True, 4, dtype=torch.uint8)
        mapped.fill_(65)
        return x.mean(dim=(2, 3)).repeat(1, 4)[:, :10] * 0 + mapped.sum().float()

save_program(torch.export.export(Writer(), (torch.zeros(1, 3, 48, 48),)), sys.argv[2])
if len(sys.argv) > 3:  # run it here, in a process of its own: the attack is real
    from pathlib import Path
    load_program(Path(sys.argv[2]).read_bytes(), "probe")(torch.zeros(1, 3, 48, 48))
'''


def test_validate_runs_neither_a_writing_torchscript_file_nor_a_writing_simulation_program(classifier_artifacts, shapes_root, tmp_path, capsys):
    from edgemnv2.fileio import sha256_of

    from .attacks import rewrite_manifest
    from .test_trust import one_artifact_folder, validate

    checkpoint = classifier_artifacts[0]
    victim = tmp_path / "victim.txt"
    script = tmp_path / "make_simulation.py"
    script.write_text(SIMULATION_WRITER)
    victim.write_text("precious")
    subprocess.run([sys.executable, str(script), str(victim), str(tmp_path / "probe.safetensors"), "run"], check=True, capture_output=True,
                   timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert victim.read_text() == "AAAAious"  # loaded and run in a process, the program writes
    victim.write_text("precious")
    folder = one_artifact_folder(classifier_artifacts, tmp_path / "art", ("torchscript", "fp32"), ("coreml", "int8_weights"), ("tflite", "int8"))
    scripted, _ = artifact_of(folder, "torchscript", "fp32")
    shutil.copyfile(_writer_artifact(tmp_path, victim), scripted)
    rewrite_manifest(scripted)  # the sha256 matches: an unsigned folder anyone could write
    coreml, manifest = artifact_of(folder, "coreml", "int8_weights")
    simulation = coreml.with_name(manifest["sidecars"][".simulation.safetensors"]["file"])
    subprocess.run([sys.executable, str(script), str(victim), str(simulation)], check=True, capture_output=True, timeout=300,
                   cwd=Path(__file__).resolve().parents[1])
    rewrite_manifest(coreml)
    assert sha256_of(simulation) == json.loads((folder / (coreml.name + ".manifest.json")).read_text())["sidecars"][".simulation.safetensors"]["sha256"]
    gates = "version = 1\n[classification.fp32]\nmin_sqnr_db = 30.0\n[classification.int8]\nmin_sqnr_db = 10.0\n[classification.int8_weights]\nmin_sqnr_db = 10.0\n"
    code, err, report = validate(capsys, checkpoint, folder, shapes_root / "classification", gates, tmp_path)
    assert victim.read_text() == "precious"
    rows = {row["artifact"]: row for row in report["artifacts"]}
    assert code == 1, err
    assert rows[scripted.name]["status"] == "error" and "Permission denied" in rows[scripted.name]["note"]
    assert rows[coreml.name]["status"] == "error" and "Permission denied" in rows[coreml.name]["note"]
    tflite, _ = artifact_of(folder, "tflite", "int8")
    assert rows[tflite.name]["status"] == "passed" and rows[tflite.name]["confinement"].startswith("confined: Landlock")


def test_validate_names_a_runner_killed_by_a_signal_and_validates_the_others(classifier_artifacts, shapes_root, tmp_path, capsys, monkeypatch):
    from .test_trust import one_artifact_folder, validate

    checkpoint = classifier_artifacts[0]
    folder = one_artifact_folder(classifier_artifacts, tmp_path / "art", ("onnx", "int8"), ("tflite", "int8"))
    onnx, _ = artifact_of(folder, "onnx", "int8")
    tflite, _ = artifact_of(folder, "tflite", "int8")
    monkeypatch.setenv("EDGEMNV2_RUNNER_MEMORY_MB", "2048")
    for point, cause in (("segfault", "SIGSEGV"), ("allocate", "memory limit")):
        monkeypatch.setenv("EDGEMNV2_RUNNER_FAILPOINT", f"{point}:{onnx.name}")
        code, err, report = validate(capsys, checkpoint, folder, shapes_root / "classification", "version = 1\n[classification.int8]\nmin_sqnr_db = 10.0\n", tmp_path)
        rows = {row["artifact"]: row for row in report["artifacts"]}
        assert code == 1 and rows[onnx.name]["status"] == "error" and cause in rows[onnx.name]["note"], err
        assert rows[tflite.name]["status"] == "passed"


# ---- profile, debug, predict's self-description, convert --max-drop: every path runs artifacts in runners ----


def _forged_writer(classifier_artifacts, tmp_path: Path, victim: Path) -> Path:
    """The writing TorchScript file in place of the suite's fp32 `.pt`, under a manifest whose sha256 matches."""
    from .attacks import rewrite_manifest
    from .test_trust import one_artifact_folder

    folder = one_artifact_folder(classifier_artifacts, tmp_path / "forged", ("torchscript", "fp32"))
    scripted, _ = artifact_of(folder, "torchscript", "fp32")
    shutil.copyfile(_writer_artifact(tmp_path, victim), scripted)
    rewrite_manifest(scripted)
    return scripted


def test_profile_and_debug_run_a_writing_torchscript_file_only_in_a_runner(classifier_artifacts, shapes_root, tmp_path, capsys):
    """Before: `profile` timed the file with target.load and profiled it with torch.profiler in the
    host, and `debug` captured its layers there: the victim was overwritten."""
    from .test_trust import cli, error_lines

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    scripted = _forged_writer(classifier_artifacts, tmp_path, victim)
    for command in (["profile", scripted, "--runs", "3", "--no-peak"],
                    ["debug", scripted, "--checkpoint", classifier_artifacts[0], "--data", shapes_root / "classification", "--images", "2"]):
        code, _, err = cli(capsys, *command)
        assert victim.read_text() == "precious", command[0]
        assert code in (1, 2) and len(error_lines(err)) == 1 and "Permission denied" in err, (command[0], code, err)
    # bundle copies the file for a device without running it here: nothing to confine, nothing written
    code, _, err = cli(capsys, "bundle", "--checkpoint", classifier_artifacts[0], "--artifacts", scripted.parent, "--data", shapes_root / "classification",
                       "--out", tmp_path / "bundles", "--samples", "4")
    assert victim.read_text() == "precious" and code == 0, err


def test_profile_and_debug_give_the_runtime_figures_from_a_runner(classifier_artifacts, shapes_root):
    """The genuine artifacts profile and capture through runner processes (the functions are the
    targets' own; only where they run changed)."""
    from conversion import get_target
    from edgemnv2.diagnosis.debug import debug_verified
    from edgemnv2.diagnosis.profile import profile_artifact

    checkpoint, folder, _, _ = classifier_artifacts
    for target in ("tflite", "torchscript"):
        artifact, manifest = artifact_of(folder, target, "int8")
        report = profile_artifact(artifact, threads=1, runs=3, peak=False)
        assert report["rows"] and report["layers_mapped"] and report["end_to_end_ms"] > 0, target
        debugged = debug_verified(artifact, manifest, checkpoint, shapes_root / "classification", images=2, threads=2)
        assert len(debugged["layers"]) == 53 and all(row["sqnr_db"] > 0 for row in debugged["layers"]), target
        assert debugged["threads"] == 2  # debug --threads reaches the runtime, and the report says what it used
    assert get_target("tflite").confined_description(artifact_of(folder, "tflite", "int8")[0])["class_names"] == manifest["class_names"]


def test_a_bare_file_is_refused_where_runners_cannot_be_confined_unless_trusted(classifier_artifacts, tmp_path, capsys, monkeypatch):
    from edgemnv2.prediction import sources

    from .test_trust import cli, error_lines

    _, folder, _, _ = classifier_artifacts
    genuine, _ = artifact_of(folder, "tflite", "int8")
    bare = tmp_path / genuine.name
    shutil.copyfile(genuine, bare)
    image = _image(tmp_path / "photo.png")
    monkeypatch.setattr(sources, "confinement_available", lambda: False)  # as on macOS or a kernel without Landlock
    code, _, err = cli(capsys, "predict", "--model", bare, image)
    assert code == 2 and len(error_lines(err)) == 1 and "--trust-artifact" in err, err
    code, out, err = cli(capsys, "predict", "--model", bare, image, "--trust-artifact")
    assert code == 0 and out.strip(), err


def test_a_runner_crash_during_the_max_drop_search_is_that_artifacts_failure_named(trained_classifier, shapes_root, tmp_path, capsys, monkeypatch):
    """The search's candidates run in runners too: a runtime that crashes on one is that artifact's
    failure, named (the file is kept as converted and said to be unchecked), not the tool's end."""
    from .test_trust import cli

    monkeypatch.setenv("EDGEMNV2_RUNNER_FAILPOINT", "segfault")
    out = tmp_path / "artifacts"
    code, _, err = cli(capsys, "convert", "--checkpoint", trained_classifier[0], "--target", "onnx", "--precision", "int8", "--calib-data",
                       shapes_root / "classification", "--max-drop", "0.5", "--recourse", "calibration", "--out", out)
    assert code == 1 and "SIGSEGV" in err and "unchecked" in err and "Traceback" not in err, err


def test_a_runner_answer_can_hold_only_the_records_the_call_returns():
    from edgemnv2.confine import codec
    from edgemnv2.layerwise.records import RuntimeOp

    arrays: list = []
    tree = codec.encode([RuntimeOp("CONV_2D", 0.5, "conv", "int8"), {"x": np.arange(3.0)}], arrays)
    decoded = codec.decode(tree, arrays, (RuntimeOp,))
    assert decoded[0] == RuntimeOp("CONV_2D", 0.5, "conv", "int8") and np.array_equal(decoded[1]["x"], np.arange(3.0))
    for hostile in ({"record": "Popen", "fields": {"args": {"value": "sh"}}}, {"record": "RuntimeOp", "fields": {"__class__": {"value": 1}}},
                    codec.encode(RuntimeOp(1, 0.5, "conv"), []), codec.encode(RuntimeOp("x", "slow", "conv"), []),
                    codec.encode(RuntimeOp("x", float("nan"), "conv"), []),
                    {"array": 5}, {"value": {"nested": 1}}, {"list": [{"list": []}] * 2, "extra": 1}):
        with pytest.raises(codec.DecodeError):
            codec.decode(hostile, arrays, (RuntimeOp,))
    deep = {"value": 0}
    for _ in range(100):
        deep = {"list": [deep]}
    with pytest.raises(codec.DecodeError):
        codec.decode(deep, [], ())


# ---- what a taken-over runner can still try: hang the host, flood it, escape its group, change files ----


@pytest.mark.parametrize("point, cause", [("stall", "timed out"), ("flood", "not an answer")])
def test_a_runner_that_stalls_mid_answer_or_floods_the_host_is_killed_and_named(classifier_artifacts, monkeypatch, point, cause):
    """Before: a runner that wrote two bytes of an answer and slept held the host forever (the
    timeout covered only the first byte); one that announced 500 arrays of 2 GB was read."""
    import time

    _, folder, _, _ = classifier_artifacts
    artifact, manifest = artifact_of(folder, "tflite", "int8")
    monkeypatch.setenv("EDGEMNV2_RUNNER_FAILPOINT", point)
    started = time.monotonic()
    with pytest.raises(RunnerFailed, match=cause):
        ConfinedRunner("tflite", artifact, manifest, threads=1, limits=RunnerLimits(call_seconds=5.0))
    assert time.monotonic() - started < 60  # not a timing assertion: a hang would never end; 60 s is far from it


def test_the_runner_factory_starts_onnx_runtime_without_its_telemetry(classifier_artifacts):
    """ONNX Runtime >= 1.29 starts a telemetry uploader (threads, a SQLite cache) at import unless
    ORT_DISABLE_TELEMETRY is set: a runner forked while one of its threads held a lock spun at 100%
    CPU. The factory, and every runner it forks, has none of it."""
    from edgemnv2.confine.runner import _zygote

    _, folder, _, _ = classifier_artifacts
    artifact, manifest = artifact_of(folder, "onnx", "int8")
    from conversion import get_target

    runner = get_target("onnx").load(artifact, manifest, 1)
    try:
        factory = _zygote().process.pid
        for pid in (factory, runner.pid):
            assert b"ORT_DISABLE_TELEMETRY=1" in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            opened = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
            assert not [path for path in opened if "onnxruntime.db" in path], opened
    finally:
        runner.close()


NNCF_AND_OVC_TELEMETRY = """
import edgemnv2, nncf, torch, openvino
from nncf.telemetry import wrapper
from openvino.tools.ovc import telemetry_utils
openvino.convert_model(torch.nn.Conv2d(3, 4, 1), example_input=torch.zeros(1, 3, 8, 8))
print(isinstance(wrapper.telemetry, wrapper.NNCFTelemetryStub), telemetry_utils.tm.__name__)
"""


def test_nncf_and_openvinos_converter_send_no_telemetry_and_write_nothing_home(tmp_path):
    """NNCF sends usage telemetry without asking and writes a client id under ~/intel; OpenVINO's
    converter sends it too. Both fall back to a stub when openvino_telemetry cannot be imported, which
    `import edgemnv2` arranges. (Run outside pytest: NNCF silences itself inside a pytest process.)"""
    home = tmp_path / "home"
    home.mkdir()
    done = subprocess.run([sys.executable, "-c", NNCF_AND_OVC_TELEMETRY], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, HOME=str(home)), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "openvino.tools.ovc.telemetry_stub"], done.stdout  # NNCF's stub, OpenVINO's stub
    assert not list(home.iterdir())  # no ~/intel/openvino_telemetry, no client id
    # a program that imported openvino and nncf before edgemnv2 has the real telemetry bound: the target swaps in the stubs
    done = subprocess.run([sys.executable, "-c", "import openvino, nncf\n" + NNCF_AND_OVC_TELEMETRY.replace(
        "openvino.convert_model", "from conversion.openvino import _silence_telemetry\n_silence_telemetry()\nopenvino.convert_model")],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, HOME=str(home)), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "openvino.tools.ovc.telemetry_stub"], done.stdout


def test_a_fresh_runner_factory_simulates_coreml(classifier_artifacts, shapes_root, tmp_path):
    """The simulation imports torch._dynamo, which makes its cache folder on import: in a runner that
    cannot make folders this failed ("Permission denied: .../torchinductor_uid_0") whenever no earlier
    runner of the same factory had imported it first. A new process is a new factory."""
    from .test_trust import one_artifact_folder

    folder = one_artifact_folder(classifier_artifacts, tmp_path / "art", ("coreml", "int8"))
    done = subprocess.run([sys.executable, "-m", "edgemnv2", "validate", "--checkpoint", str(classifier_artifacts[0]), "--artifacts", str(folder),
                           "--data", str(shapes_root / "classification"), "--limit", "4", "--runs", "1", "--json", "--out", str(tmp_path / "report")],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    (row,) = json.loads(done.stdout)["artifacts"]
    assert row["status"] == "passed" and row["measured_on"] == "simulated", (row.get("note"), done.stderr[-1500:])
