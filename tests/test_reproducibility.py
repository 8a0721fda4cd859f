"""Converting the same checkpoint twice with the same recipe (two separate `edgemnv2 convert` runs,
as a user or CI would): byte-identical artifacts, or the target declares, and every manifest
records, that it is not, and why."""

import os
import subprocess
import sys

import pytest

from conversion import TARGETS
from edgemnv2.artifacts import find_artifacts
from edgemnv2.fileio import sha256_of

pytestmark = pytest.mark.slow


def _convert_twice(checkpoint, data, outs):
    """Two independent `convert` processes (run side by side: the machine has two cores). int8 only:
    each target's determinism is declared per target, and int8 runs its whole path, calibration and
    quantizer included, where fp32 is its export alone."""
    processes = [subprocess.Popen([sys.executable, "-m", "edgemnv2.cli.main", "convert", "--checkpoint", str(checkpoint), "--out", str(out),
                                   "--calib-data", str(data), "--calib-size", "8", "--precision", "int8", "--threads", "1"],
                                  env=dict(os.environ, EDGEMNV2_NO_PROGRESS="1"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for out in outs]
    found = []
    for process, out in zip(processes, outs):
        _, err = process.communicate(timeout=900)
        assert process.returncode == 0, err[-2000:]
        found.append({manifest["artifact"]: (artifact, manifest) for artifact, manifest in find_artifacts(out)})
    return found


def test_same_input_same_bytes_or_declared(trained_classifier, shapes_root, tmp_path):
    checkpoint, _ = trained_classifier
    first, second = _convert_twice(checkpoint, shapes_root / "classification", [tmp_path / "a", tmp_path / "b"])
    observed = {}
    for name, (artifact, manifest) in first.items():
        spec = TARGETS[manifest["target"]].spec
        identical = sha256_of(artifact) == sha256_of(second[name][0])
        observed[f"{manifest['target']}/{manifest['precision']}"] = identical
        assert manifest["byte_reproducible"] == spec.deterministic
        assert spec.deterministic or manifest["nondeterminism"]
    print("\nbyte-identical on reconversion:", observed)
    mismatched = {k: v for k, v in observed.items() if v != TARGETS[k.split("/")[0]].spec.deterministic}
    assert not mismatched, f"declared determinism is wrong for {mismatched}"
