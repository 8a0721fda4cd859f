from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import console, load_split, set_threads


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
) -> None:
    """Self-contained device bundles: artifact + samples + fp32 references + tolerances + runner."""
    from conversion import target_names

    from ..bundle import make_bundles
    from ..checkpoint import load_checkpoint
    from ..errors import UserError
    from ..validation.gates import load_gates

    set_threads(threads)
    if samples < 1:
        raise UserError("--samples must be at least 1")
    if verify_key is not None and not verify_key.is_file():
        raise UserError(f"verification key not found: {verify_key}")
    model, meta = load_checkpoint(checkpoint, arch)
    dataset = load_split(meta.task, data, split, meta.preprocessing, limit=samples, class_names=meta.class_names)
    written = make_bundles(checkpoint, model, meta, artifacts, dataset, out_dir, load_gates(gates, target_names()), force, verify_key)
    for path in written:
        console.print(f"bundle: {path}")
    console.print(f"{len(written)} bundles; on a device run: python <bundle>/run_bundle.py <bundle>")
