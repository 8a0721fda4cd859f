"""Device-side suite: runs every bundle under --bundles (or $EDGEMNV2_BUNDLES, default demo/bundles)
with the runtimes present on this machine; bundles whose runtime is absent are skipped by name.

A --bundles folder that does not exist or holds no bundle is an error, not a pass: a mistyped path
must not turn the device suite green."""

import os
from pathlib import Path

import pytest


def pytest_addoption(parser):
    parser.addoption("--bundles", default=os.environ.get("EDGEMNV2_BUNDLES", "demo/bundles"), help="folder of bundles made by `edgemnv2 bundle`")


def find_bundles(root: Path) -> list[Path]:
    if not root.is_dir():
        raise pytest.UsageError(f"--bundles {root}: no such folder (make bundles with `edgemnv2 bundle --out DIR`)")
    bundles = sorted(p for p in root.iterdir() if (p / "bundle.json").is_file())
    if not bundles:
        raise pytest.UsageError(f"--bundles {root}: no bundle in it (a bundle is a folder with bundle.json)")
    return bundles


def pytest_configure(config):
    # Checked before collection: pytest reports a UsageError here as one line and exit code 4.
    config.edgemnv2_bundles = find_bundles(Path(config.getoption("--bundles")))


def pytest_generate_tests(metafunc):
    if "bundle" in metafunc.fixturenames:
        bundles = metafunc.config.edgemnv2_bundles
        metafunc.parametrize("bundle", bundles, ids=[p.name for p in bundles])
