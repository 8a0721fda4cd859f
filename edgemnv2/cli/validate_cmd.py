from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import console, load_split, out, set_threads


def validate(
    checkpoint: Annotated[Path, typer.Option(help="The checkpoint the artifacts were converted from (the fp32 reference).")],
    artifacts: Annotated[Path, typer.Option(help="Folder of artifacts with their manifests.")],
    data: Annotated[Path, typer.Option(help="Dataset root (as for `train`); its validation split is used.")],
    gates: Annotated[Optional[str], typer.Option(help="Gates TOML file, or 'default' for the shipped gates. With --gates, a failed gate exits 1.")] = None,
    split: Annotated[str, typer.Option(help="Split to validate on.")] = "val",
    limit: Annotated[Optional[int], typer.Option(help="Use only N images (evenly spaced), for a quick check.")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads for every runtime (recorded in the report).")] = 2,
    runs: Annotated[int, typer.Option(help="Timed runs per artifact, after warm-up.")] = 20,
    report_dir: Annotated[Optional[Path], typer.Option("--out", help="Where to write report.json/.md/.png (default: the artifacts folder).")] = None,
    per_layer: Annotated[bool, typer.Option("--per-layer", help="Also print per-layer int8 sensitivity (SQNR per layer, worst first).")] = False,
    arch: Annotated[Optional[str], typer.Option(help="Model name, only for bare state dicts.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing report.")] = False,
) -> None:
    """Run every artifact through its real runtime; compare with fp32 eager on the same images."""
    from conversion import target_names

    from ..errors import UserError
    from ..fileio import refuse_overwrite
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
    report = run_validation(checkpoint, artifacts, data, split, ValidationSettings(threads=threads, runs=runs), loaded_gates, arch, limit, load_split)
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
        console.print(f"[red]{line}[/]")
    if enforce and not report["gates"]["passed"]:
        raise UserError(f"{sum(1 for a in report['artifacts'] if a['status'] == 'gate failed')} artifact(s) failed their gates ({loaded_gates.source}); see above")
