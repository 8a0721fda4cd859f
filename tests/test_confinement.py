"""Runner processes (edgemnv2.confine): an artifact is loaded and run in a fresh, confined child, and
whatever it does, the host survives with a one-line cause. Real runtimes, real files."""

import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgemnv2.artifacts import RuntimeUnavailable
from edgemnv2.confine import landlock
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
    monkeypatch.setenv("EDGEMNV2_RUNNER_FAILPOINT", "segfault")
    with pytest.raises(RunnerFailed, match="SIGSEGV"):
        ConfinedRunner("tflite", artifact, manifest, threads=1)
    monkeypatch.setenv("EDGEMNV2_RUNNER_FAILPOINT", "allocate")
    with pytest.raises(RunnerFailed, match="memory limit"):
        ConfinedRunner("tflite", artifact, manifest, threads=1, limits=RunnerLimits(memory_mb=512))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < (4 << 20)  # kB: the host never held the hog


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
        "import json, socket, sys\nfrom pathlib import Path\nfrom edgemnv2.confine.child import confine\n"
        "work = Path(sys.argv[1])\nprint(confine(work / 'artifact', work / 'scratch', {}))\nresults = {}\n"
        "for name, attempt in [('read_home', lambda: Path(sys.argv[2]).read_text()), ('write_scratch', lambda: (work / 'scratch' / 'x').write_text('x')),\n"
        "                      ('write_artifact', lambda: (work / 'artifact' / 'x').write_text('x')), ('connect', lambda: socket.create_connection(('127.0.0.1', 9), 1)),\n"
        "                      ('listen', lambda: socket.socket().bind(('127.0.0.1', 0)))]:\n"
        "    try:\n        attempt(); results[name] = 'allowed'\n    except OSError as exc:\n        results[name] = type(exc).__name__\n"
        "print(json.dumps(results))\n")
    (tmp_path / "artifact").mkdir()
    (tmp_path / "scratch").mkdir()
    secret = Path(tmp_path.parent / "secret.txt")
    secret.write_text("secret")
    done = subprocess.run([sys.executable, "-I", str(probe), str(tmp_path), str(secret)], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results == {"read_home": "PermissionError", "write_scratch": "allowed", "write_artifact": "PermissionError",
                       "connect": "PermissionError", "listen": "PermissionError"}, done.stderr[-2000:]


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
