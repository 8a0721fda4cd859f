"""Device-side suite: runs every bundle under --bundles (or $EDGEMNV2_BUNDLES, default demo/bundles)
with the runtimes present on this machine; bundles whose runtime is absent are skipped by name."""

import os
from pathlib import Path


def pytest_addoption(parser):
    parser.addoption("--bundles", default=os.environ.get("EDGEMNV2_BUNDLES", "demo/bundles"), help="folder of bundles made by `edgemnv2 bundle`")


def pytest_generate_tests(metafunc):
    if "bundle" in metafunc.fixturenames:
        root = Path(metafunc.config.getoption("--bundles"))
        bundles = sorted(p for p in root.iterdir() if (p / "bundle.json").is_file()) if root.is_dir() else []
        metafunc.parametrize("bundle", bundles or [None], ids=[p.name for p in bundles] or ["no-bundles"])
