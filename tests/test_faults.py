"""Faults during conversion: interrupts, a full disk, a read-only destination, concurrent writers.

Each runs the real `edgemnv2 convert` in a subprocess and then checks the invariant the product
promises: every manifest describes a whole artifact (sha256 matches), nothing half-written is
trusted, earlier artifacts are intact, and rerunning the same command succeeds.
"""

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgemnv2.artifacts import find_artifacts
from edgemnv2 import failpoints
from edgemnv2.fileio import TEMP_MARKER, sha256_of

pytestmark = pytest.mark.slow


def convert_command(checkpoint, data, out, *extra):
    return [sys.executable, "-m", "edgemnv2.cli.main", "convert", "--checkpoint", str(checkpoint), "--out", str(out),
            "--calib-data", str(data), "--calib-size", "8", *extra]


def _env():
    return dict(os.environ, EDGEMNV2_NO_PROGRESS="1")


def assert_consistent(out: Path) -> list[str]:
    """Every committed artifact matches its manifest; returns the committed artifact names."""
    names = []
    for artifact, manifest in find_artifacts(out):
        assert sha256_of(artifact) == manifest["artifact_sha256"], artifact.name
        names.append(artifact.name)
    return names


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a shell's background job ignores SIGINT; the user's Ctrl-C does not


# (signal, point where it arrives, exit code, what stderr says). Points are fail points the real
# process reaches (edgemnv2/failpoints.py), not guessed sleeps.
INTERRUPTIONS = [
    (signal.SIGKILL, failpoints.ARTIFACT_WRITTEN, -signal.SIGKILL, None),
    (signal.SIGKILL, failpoints.ARTIFACT_COMMITTED, -signal.SIGKILL, None),
    (signal.SIGINT, failpoints.ARTIFACT_WRITTEN, 130, "edgemnv2: interrupted; nothing partial was left behind"),
    (signal.SIGTERM, failpoints.ARTIFACT_WRITTEN, 143, "edgemnv2: terminated; nothing partial was left behind"),
]


@pytest.mark.parametrize("sig, point, code, message", INTERRUPTIONS, ids=lambda v: getattr(v, "name", str(v)))
def test_interrupted_conversion_leaves_nothing_partial_and_reruns(trained_classifier, shapes_root, tmp_path, sig, point, code, message):
    checkpoint, _ = trained_classifier
    data = shapes_root / "classification"
    out = tmp_path / "out"
    marker = tmp_path / "reached"
    # the two TorchScript targets convert in seconds: the interruption, not the converters, is under test
    command = convert_command(checkpoint, data, out, "--target", "torchscript,torchscript_mobile", "--precision", "fp32,int8")
    env = dict(_env(), EDGEMNV2_FAILPOINT=point, EDGEMNV2_FAILPOINT_MARKER=str(marker))
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None, "convert ended before reaching " + point
        assert time.monotonic() < deadline  # not a timing assertion: a timeout on the wait, not a measured latency
        time.sleep(0.02)
    written = list(out.glob(f"{TEMP_MARKER}*"))
    if point == failpoints.ARTIFACT_WRITTEN:
        assert written  # the signal lands while a temporary artifact is on disk
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    assert process.returncode == code, err[-1500:]
    committed = assert_consistent(out)  # whatever finished before the signal is whole
    if message is not None:
        assert message in err and "Traceback" not in err
        assert not list(out.glob(f"{TEMP_MARKER}*"))  # Ctrl-C and SIGTERM clean up after themselves
    assert len(committed) == (1 if point == failpoints.ARTIFACT_COMMITTED else 0)
    rerun = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-1500:]
    assert len(assert_consistent(out)) == 4
    assert not list(out.glob(f"{TEMP_MARKER}*"))  # the killed writer's temp files were swept


def _limit_file_size(limit):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_full_disk_gives_one_line_and_keeps_earlier_artifacts(trained_classifier, shapes_root, tmp_path):
    checkpoint, _ = trained_classifier
    data = shapes_root / "classification"
    first = subprocess.run(convert_command(checkpoint, data, tmp_path, "--target", "torchscript", "--precision", "fp32"), env=_env(), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    before = {p.name: sha256_of(p) for p in tmp_path.iterdir() if not p.name.startswith(".")}
    # 64 KB per file: smaller than any artifact, like a disk that fills up mid-write
    full = subprocess.run(convert_command(checkpoint, data, tmp_path, "--target", "torchscript,onnx", "--precision", "fp32,int8", "--force"),
                          env=_env(), capture_output=True, text=True, timeout=600, preexec_fn=_limit_file_size(64 * 1024))
    assert full.returncode == 1
    error_lines = [line for line in full.stderr.splitlines() if line.startswith("edgemnv2: error:")]
    assert len(error_lines) == 1 and "conversions failed" in error_lines[0]
    assert "Traceback" not in full.stderr
    after = {p.name: sha256_of(p) for p in tmp_path.iterdir() if p.name in before}
    assert after == before  # the earlier artifact and manifest are untouched
    assert assert_consistent(tmp_path) == ["tiny_classifier.torchscript.fp32.pt"]


def test_read_only_destination_gives_one_line(trained_classifier, shapes_root, tmp_path):
    checkpoint, _ = trained_classifier
    if os.geteuid() == 0:  # root ignores permission bits: use a read-only filesystem instead
        out = Path("/proc/edgemnv2-artifacts")
    else:
        out = tmp_path / "ro"
        out.mkdir()
        out.chmod(0o555)
    done = subprocess.run(convert_command(checkpoint, shapes_root / "classification", out, "--target", "torchscript", "--precision", "fp32"),
                          env=_env(), capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.startswith("edgemnv2: error:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr
    if os.geteuid() == 0:  # the folder cannot even be created: the user's destination is bad input
        assert done.returncode == 2 and lines[0].startswith(f"edgemnv2: error: cannot create output folder {out}")
    else:  # it exists, read-only: the conversion fails to write
        assert done.returncode == 1 and lines[0].startswith("edgemnv2: error: 1 of 1 conversions failed") and "could not write" in lines[0]


def test_two_concurrent_converts_into_one_folder_corrupt_nothing(trained_classifier, shapes_root, tmp_path):
    checkpoint, _ = trained_classifier
    command = convert_command(checkpoint, shapes_root / "classification", tmp_path, "--target", "torchscript,tflite", "--precision", "fp32", "--force")
    processes = [subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for process in processes:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-1500:]
    assert len(assert_consistent(tmp_path)) == 2
    assert not list(tmp_path.glob(f"{TEMP_MARKER}*"))


def test_missing_runtime_is_reported_per_target_and_fails_the_gate_unless_allowed(classifier_artifacts, shapes_root, tmp_path):
    """Hide the TFLite interpreters: the TFLite rows say why they could not run; the rest still run.
    Under --gates that is a failure (exit 1), unless the gates file allows that target not to run."""
    from .test_trust import one_artifact_folder

    checkpoint = classifier_artifacts[0]
    # the rows the test reads, and a second TFLite file: not the whole folder (its validation is another test's)
    artifacts = one_artifact_folder(classifier_artifacts, tmp_path / "artifacts", ("tflite", "int8"), ("tflite", "fp32"), ("executorch", "int8"),
                                    ("torchscript", "fp32"))
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nclass _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('ai_edge_litert', 'tflite_runtime'):\n"
        "            raise ImportError('hidden by the test: ' + name)\n"
        "sys.meta_path.insert(0, _Block())\n")
    env = dict(_env(), PYTHONPATH=f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               EDGEMNV2_RUNNER_FAILPOINT="hide=ai_edge_litert,tflite_runtime")  # the runner processes do not read PYTHONPATH
    # a limit for every precision in the folder, and none other: an artifact no limit applies to fails (no_gate_applies),
    # and so does a section that checks nothing
    lenient = "version = 1\n" + "".join(f"[classification.{p}]\nmin_sqnr_db = 10.0\n" for p in ("fp32", "int8"))

    def validate(gates_text):
        gates = tmp_path / "gates.toml"
        gates.write_text(gates_text)
        done = subprocess.run([sys.executable, "-m", "edgemnv2.cli.main", "validate", "--checkpoint", str(checkpoint), "--artifacts", str(artifacts),
                               "--data", str(shapes_root / "classification"), "--runs", "1", "--limit", "16", "--out", str(tmp_path / "report"),
                               "--force", "--gates", str(gates)], env=env, capture_output=True, text=True, timeout=600)
        return done, {(a["target"], a["precision"]): a for a in json.loads((tmp_path / "report" / "report.json").read_text())["artifacts"]}

    done, rows = validate(lenient)
    assert done.returncode == 1, done.stderr[-2000:]
    assert rows[("tflite", "int8")]["status"] == "could not run" and "no TFLite interpreter" in rows[("tflite", "int8")]["note"]
    assert rows[("executorch", "int8")]["status"] == "passed" and rows[("torchscript", "fp32")]["status"] == "passed"
    assert "tiny_classifier.tflite.int8.tflite: could not run: no TFLite interpreter" in done.stderr
    done, rows = validate('allow_not_run = ["tflite"]\n' + lenient)
    assert done.returncode == 0, done.stderr[-2000:]
    assert rows[("tflite", "int8")]["status"] == "could not run"
