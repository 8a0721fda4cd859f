import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..diagnosis.debug import debug_artifact
from ..errors import UserError
from ..fileio import atomic_output, refuse_overwrite
from .common import LOG_HELP, VERBOSE_HELP, console, emit_json, out, set_threads, third_party_noise


def print_debug(report: dict, top: int) -> None:
    out.print(f"{report['artifact']}: each compute layer's output in {report['target']} against the fp32 model, {report['images']} images")
    out.print("| # | layer | op | SQNR dB | cosine | max abs error |\n|---|---|---|---|---|---|")
    worst = sorted(report["layers"], key=lambda row: row["sqnr_db"])[:top]
    for row in sorted(worst, key=lambda row: row["index"]):
        out.print(f"| {row['index']} | {row['layer']} | {row['op']} | {row['sqnr_db']:.1f} | {row['cosine']:.4f} | {row['max_abs_error']:.4g} |")
    if report.get("note"):
        console.print(f"note: {report['note']}")
    jump = report["first_jump"]
    if jump is None:
        out.print("no layer where the drift jumps: it grows gradually through the network (no single layer to blame)")
    else:
        out.print(f"drift jumps at {jump['layer']} ({jump['op']}): {jump['sqnr_db']:.1f} dB against a median of {jump['median_before_db']:.1f} dB before it")
        out.print(f"cause: {jump['cause']}")


def debug(
    artifact: Annotated[Path, typer.Argument(help="An artifact with its manifest beside it (.tflite or TorchScript .pt).")],
    checkpoint: Annotated[Path, typer.Option(help="The checkpoint it was converted from (the fp32 reference).")],
    data: Annotated[Path, typer.Option(help="Dataset root (its val/ split) or a folder of images.")],
    images: Annotated[int, typer.Option(help="Images to compare on.")] = 8,
    top: Annotated[int, typer.Option(help="Show the N layers with the lowest SQNR (all go to --out).")] = 15,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Write the full per-layer report (JSON) here.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite --out.")] = False,
    threads: Annotated[int, typer.Option(help="CPU threads.")] = 2,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
    verify_key: Annotated[Optional[Path], typer.Option(envvar="EDGEMNV2_VERIFY_KEY", help="(or EDGEMNV2_VERIFY_KEY) Public key (PEM): refuse an artifact not signed with its private key.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help=VERBOSE_HELP)] = False,
    log: Annotated[Optional[Path], typer.Option(help=LOG_HELP)] = None,
) -> None:
    """Per-layer numerics inside the runtime against the fp32 model: SQNR, cosine, max error; the first layer where drift jumps, and why."""

    threads = set_threads(threads)
    if not Path(artifact).exists():
        raise UserError(f"artifact not found: {artifact}")
    if not Path(data).exists():
        raise UserError(f"data not found: {data}")
    if out_file is not None:
        refuse_overwrite(out_file, force)
    with third_party_noise(verbose, log, "debug"):
        report = debug_artifact(artifact, checkpoint, data, images, verify_key, threads)
    if json_output:
        emit_json(report)
    else:
        print_debug(report, top)
    if out_file is not None:
        with atomic_output(out_file, force) as temp:
            temp.write_text(json.dumps(report, indent=2))
        console.print(f"wrote {out_file}")
