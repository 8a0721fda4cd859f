"""Run each bundle's own run_bundle.py in a subprocess, exactly as on a device."""

import importlib.util
import json
import subprocess
import sys

import pytest

def test_bundle_meets_its_tolerances(bundle):
    # what runs it travels in the bundle (from the target's registry entry): no table to keep here
    info = json.loads((bundle / "bundle.json").read_text())
    target = json.loads((bundle / info["manifest"]).read_text())["target"]
    if info.get("runs_on") == "macOS only" and sys.platform != "darwin":
        pytest.skip(f"{target} bundles run only on macOS")
    modules = info["runtime_modules"]
    if not any(importlib.util.find_spec(m) for m in modules):
        pytest.skip(f"runtime for {target} not installed here (needs one of: {', '.join(modules)})")
    done = subprocess.run([sys.executable, str(bundle / "run_bundle.py"), str(bundle), "--runs", "5", "--out", str(bundle / "result.json")],
                          capture_output=True, text=True, timeout=600)
    result = json.loads((bundle / "result.json").read_text())
    assert done.returncode == 0, f"{bundle.name}: {result.get('status')}: {result.get('failures') or result.get('reason')}"
