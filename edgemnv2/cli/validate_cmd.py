from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import console, load_split, out, set_threads


def validate(
    checkpoint: Annotated[Path, typer.Option(help="The checkpoint the artifacts were converted from (the fp32 reference).")],
    artifacts: Annotated[Path, typer.Option(help="Folder of artifacts with their manifests.")],
    data: Annotated[Path, typer.Option(help="Dataset root (as for `train`); its validation split is used.")],
    gates: Annotated[Optional[str], typer.Option(help="Gates TOML file, or 'default' for the shipped gates. With --gates, exit 1 when a gate fails, an artifact could not be checked (tampered, unsigned under --verify-key, runtime missing or crashing) or a gate checked nothing.")] = None,
    split: Annotated[str, typer.Option(help="Split to validate on.")] = "val",
    limit: Annotated[Optional[int], typer.Option(help="Use only N images (evenly spaced), for a quick check.")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads for every runtime (recorded in the report).")] = 2,
    runs: Annotated[int, typer.Option(help="Timed runs per artifact, after warm-up.")] = 20,
    report_dir: Annotated[Optional[Path], typer.Option("--out", help="Where to write report.json/.md/.png (default: the artifacts folder).")] = None,
    per_layer: Annotated[bool, typer.Option("--per-layer", help="Also print per-layer int8 sensitivity (SQNR per layer, worst first).")] = False,
    arch: Annotated[Optional[str], typer.Option(help="Model name, only for bare state dicts.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing report.")] = False,
    verify_key: Annotated[Optional[Path], typer.Option(envvar="EDGEMNV2_VERIFY_KEY", help="(or EDGEMNV2_VERIFY_KEY) Public key (PEM): refuse any artifact not signed with its private key (convert --sign-key).")] = None,
) -> None:
    """Run every artifact through its real runtime; compare with fp32 eager on the same images.

    Exit codes: 0 all gates passed; 1 a gate failed or an artifact could not be checked; 2 bad input
    or usage; 3 internal error; 130 interrupted; 143 terminated."""
    from conversion import target_names

    from ..errors import CheckFailed, UserError
    from ..fileio import refuse_overwrite
    from ..signing import tool as signing_tool
    from ..validation.gates import load_gates
    from ..validation.report import failure_lines, notes, terminal_table, write_reports
    from ..validation.validate import ValidationSettings
    from ..validation.validate import validate as run_validation

    set_threads(threads)
    if runs < 1:
        raise UserError("--runs must be at least 1")
    if limit is not None and limit < 1:
        raise UserError("--limit must be at least 1")
    report_dir = report_dir or artifacts
    refuse_overwrite(report_dir / "report.json", force)
    enforce = gates is not None
    loaded_gates = load_gates(gates, target_names())
    if verify_key is not None:
        if not verify_key.is_file():
            raise UserError(f"verification key not found: {verify_key}")
        signing_tool()  # no verifier installed is a setup mistake for the whole run, not per artifact
    report = run_validation(checkpoint, artifacts, data, split, ValidationSettings(threads=threads, runs=runs), loaded_gates, arch, limit, load_split, verify_key)
    comparisons = []
    if report["checkpoint"]["task"] == "detection":
        from ..predict.compare import worst_disagreements

        comparisons = worst_disagreements(report, checkpoint, artifacts, report_dir, threads)
    paths = write_reports(report, report_dir, comparisons)
    out.print(terminal_table(report))
    for line in notes(report):
        console.print(line)
    if report["ignored_artifacts"]:
        console.print(f"ignored {len(report['ignored_artifacts'])} artifacts converted from other checkpoints")
    console.print("reports: " + ", ".join(str(p) for p in paths.values()))
    if per_layer:
        from .sensitivity_cmd import print_sensitivity

        print_sensitivity(checkpoint, data, arch=arch)
    failures = failure_lines(report)
    for line in failures:
        console.print(line, style="red")
    if enforce and not report["gates"]["passed"]:
        reasons = report["gates"]["reasons"]
        raise CheckFailed(f"gates not passed ({loaded_gates.source}): {reasons[0]}" + (f" and {len(reasons) - 1} more; see above" if len(reasons) > 1 else ""))
