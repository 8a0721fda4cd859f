from pathlib import Path
from typing import Annotated, Optional

import typer

from ..services import bundle_artifacts
from .common import console, set_threads


def bundle(
    checkpoint: Annotated[Path, typer.Option(help="The checkpoint the artifacts came from (computes the fp32 references).")],
    artifacts: Annotated[Path, typer.Option(help="Folder of artifacts with manifests.")],
    data: Annotated[Path, typer.Option(help="Dataset root; sample inputs come from its validation split.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder that receives one bundle folder per artifact.")],
    samples: Annotated[int, typer.Option(help="Sample inputs per bundle (evenly spaced over the split); agreement on few samples is noisy.")] = 200,
    split: Annotated[str, typer.Option(help="Split to take samples from.")] = "val",
    gates: Annotated[Optional[str], typer.Option(help="Gates TOML whose tolerances the bundles carry, or 'default' (the shipped gates, also when omitted).")] = None,
    arch: Annotated[Optional[str], typer.Option(help="Model name, only for bare state dicts.")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads.")] = 2,
    force: Annotated[bool, typer.Option(help="Overwrite existing bundles.")] = False,
    verify_key: Annotated[Optional[Path], typer.Option(envvar="EDGEMNV2_VERIFY_KEY", help="(or EDGEMNV2_VERIFY_KEY) Public key (PEM): bundle only artifacts signed with its private key; the bundle carries the signature and this key for the device runner.")] = None,
    sign_key: Annotated[Optional[Path], typer.Option(help="Private key (PEM, elliptic curve): sign each bundle whole, bundle.json, samples and runner included (bundle.sig); `run_bundle.py --verify-key` accepts only such bundles.")] = None,
) -> None:
    """Self-contained device bundles: artifact + samples + fp32 references + tolerances + runner."""

    threads = set_threads(threads)
    written = bundle_artifacts(checkpoint, artifacts, data, out_dir, samples=samples, split=split, gates=gates, arch=arch, force=force, verify_key=verify_key,
                               sign_key=sign_key)
    for path in written:
        console.print(f"bundle: {path}")
    console.print(f"{len(written)} bundles; on a device run: python <bundle>/run_bundle.py <bundle>")
