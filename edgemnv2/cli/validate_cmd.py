from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import api
from ..errors import CheckFailed
from ..fileio import refuse_overwrite
from ..validation.junit import write_junit
from ..validation.report import failure_lines, notes, terminal_table
from .common import LOG_HELP, VERBOSE_HELP, console, emit_json, out, set_threads, third_party_noise
from .sensitivity_cmd import print_sensitivity


def validate(
    checkpoint: Annotated[Path, typer.Option(help="The checkpoint the artifacts were converted from (the fp32 reference).")],
    artifacts: Annotated[Path, typer.Option(help="Folder of artifacts with their manifests.")],
    data: Annotated[Path, typer.Option(help="Dataset root (as for `train`); its validation split is used.")],
    gates: Annotated[Optional[str], typer.Option(help="Gates TOML file, or 'default' for the shipped gates. Exit 1 when a gate fails, no gate applies to an artifact, or a gate checked nothing. With or without --gates, exit 1 when an artifact in the folder could not be checked (no manifest, tampered, foreign, unsigned under --verify-key, runtime missing or crashing) or gave NaN or infinite outputs.")] = None,
    split: Annotated[str, typer.Option(help="Split to validate on.")] = "val",
    limit: Annotated[Optional[int], typer.Option(help="Use only N images (evenly spaced), for a quick check.")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads for every runtime (recorded in the report).")] = 2,
    runs: Annotated[int, typer.Option(help="Timed runs per artifact, after warm-up.")] = 20,
    batch_size: Annotated[int, typer.Option(help="Images per call for runtimes that take batches (eager, TorchScript); batch-1 artifacts get them one by one. The report says which.")] = 16,
    workers: Annotated[Optional[int], typer.Option(help="Threads decoding images ahead of the runtimes (default: cores - 1, at least 1).")] = None,
    report_dir: Annotated[Optional[Path], typer.Option("--out", help="Where to write report.json/.md/.png (default: the artifacts folder).")] = None,
    require_confinement: Annotated[bool, typer.Option("--require-confinement", help="For CI: an artifact whose runner process cannot be confined with Landlock (older kernel, macOS) is an error row and fails the run, instead of running out of process with resource limits only.")] = False,
    profile: Annotated[bool, typer.Option("--profile", help="Also profile every artifact per op in its runtime (time by op kind in the notes; every op in report.json).")] = False,
    per_layer: Annotated[bool, typer.Option("--per-layer", help="Also print per-layer int8 sensitivity (SQNR per layer, worst first).")] = False,
    arch: Annotated[Optional[str], typer.Option(help="Model name, only for bare state dicts.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing report.")] = False,
    verify_key: Annotated[Optional[Path], typer.Option(envvar="EDGEMNV2_VERIFY_KEY", help="(or EDGEMNV2_VERIFY_KEY) Public key (PEM): refuse any artifact not signed with its private key (convert --sign-key).")] = None,
    junit: Annotated[Optional[Path], typer.Option(help="Also write the gates as JUnit XML (one test case per gate of each artifact) for CI test reports.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print report.json to stdout; the table goes to stderr.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help=VERBOSE_HELP)] = False,
    log: Annotated[Optional[Path], typer.Option(help=LOG_HELP)] = None,
) -> None:
    """Run every artifact through its real runtime; compare with fp32 eager on the same images.

    The images stream from disk (memory does not grow with the split). On several processes or
    machines: torchrun --nproc-per-node N -m edgemnv2 validate ... (rank 0 writes the report).

    Exit codes: 0 all gates passed; 1 a gate failed or an artifact could not be checked; 2 bad input
    or usage; 3 internal error; 130 interrupted; 143 terminated."""

    threads = set_threads(threads)
    if junit is not None:
        refuse_overwrite(junit, force)  # before the work, not after it
    with third_party_noise(verbose, log, "validate"):
        outcome = api.validate(checkpoint, artifacts, data, gates=gates, split=split, limit=limit, threads=threads, runs=runs,
                               out=report_dir, arch=arch, verify_key=verify_key, force=force, batch_size=batch_size, workers=workers, profile=profile,
                               require_confinement=require_confinement)
    if outcome is None:  # a torchrun rank other than 0: rank 0 reports
        return
    show_validation(outcome, table_to=console if json_output else out)
    if junit is not None:
        console.print(f"JUnit XML: {write_junit(outcome.report, junit)}")
    if json_output:
        emit_json(outcome.report)
    if per_layer:
        print_sensitivity(checkpoint, data, arch=arch)
    if not outcome.passed:  # the report's verdict, the JUnit file's and the exit code are one
        reasons = outcome.report["gates"]["reasons"]
        source = outcome.gates.source if outcome.gates is not None else "no gates file: every artifact must be checked and give finite outputs"
        raise CheckFailed(f"gates not passed ({source}): {reasons[0]}" + (f" and {len(reasons) - 1} more; see above" if len(reasons) > 1 else ""))


def show_validation(outcome, table_to=out) -> None:
    """The table, its notes and the failure lines (also used by `demo`)."""

    report = outcome.report
    table_to.print(terminal_table(report))
    for line in notes(report):
        console.print(line)
    if report["ignored_artifacts"]:
        console.print(f"ignored {len(report['ignored_artifacts'])} artifacts converted from other checkpoints")
    console.print("reports: " + ", ".join(str(p) for p in outcome.paths.values()))
    for line in failure_lines(report):
        console.print(line, style="red")
