"""Run each bundle's own run_bundle.py in a subprocess, exactly as on a device."""

import importlib.util
import json
import subprocess
import sys

import pytest

RUNTIME_MODULES = {  # target -> importable modules, any one of which runs it
    "tflite": ("ai_edge_litert", "tflite_runtime"),
    "executorch": ("executorch",),
    "torchscript": ("torch",),
    "torchscript_mobile": ("torch",),
    "coreml": ("coremltools",),
}


def _target(bundle) -> str:
    info = json.loads((bundle / "bundle.json").read_text())
    return json.loads((bundle / info["manifest"]).read_text())["target"]


def test_bundle_meets_its_tolerances(bundle):
    target = _target(bundle)
    if target == "coreml" and sys.platform != "darwin":
        pytest.skip("CoreML bundles run only on macOS")
    modules = RUNTIME_MODULES[target]
    if not any(importlib.util.find_spec(m) for m in modules):
        pytest.skip(f"runtime for {target} not installed here (needs one of: {', '.join(modules)})")
    done = subprocess.run([sys.executable, str(bundle / "run_bundle.py"), str(bundle), "--runs", "5", "--out", str(bundle / "result.json")],
                          capture_output=True, text=True, timeout=600)
    result = json.loads((bundle / "result.json").read_text())
    assert done.returncode == 0, f"{bundle.name}: {result.get('status')}: {result.get('failures') or result.get('reason')}"
