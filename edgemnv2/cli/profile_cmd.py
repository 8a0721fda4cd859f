import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..diagnosis.profile import profile_artifact, profile_pair
from ..diagnosis.speed import table_text as comparison_text
from ..errors import UserError
from ..fileio import atomic_output, refuse_overwrite
from ..layerwise.render import table_text, write_png
from .common import LOG_HELP, VERBOSE_HELP, console, emit_json, out, set_threads, third_party_noise


def print_profile(report: dict, top: int | None) -> None:
    peak = ", ".join(f"{dtype} {value['gmacs']:.0f} GMAC/s" for dtype, value in report["peak_gmacs"].items()) or "not measured (--no-peak)"
    out.print(f"{report['artifact']}: {report['runtime']}, {report['machine']}, {report['threads']} threads, median of {report['runs']} runs")
    out.print(table_text(report["rows"], top=top))
    out.print(f"ops add up to {report['ops_sum_ms']:.3f} ms; end to end (measured apart, no profiler) {report['end_to_end_ms']:.3f} ms "
              f"({report['ops_over_end_to_end']:.0%}). This CPU's peak, one large GEMM in the same runtime: {peak}.")
    kinds = ", ".join(f"{kind} {ms:.3f} ms" for kind, ms in sorted(report["by_kind_ms"].items(), key=lambda kv: -kv[1]))
    out.print(f"by kind: {kinds}")
    if not report["layers_mapped"]:
        console.print("the runtime's compute ops could not be matched one to one with the source model's layers: layer names and MACs are left out")


def profile(
    artifact: Annotated[Path, typer.Argument(help="An artifact with its manifest beside it, of a target that has a per-op profile (another says which do).")],
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Write profile.json, profile.md and profile.png here.")] = None,
    runs: Annotated[int, typer.Option(help="Timed runs per op (medians are reported).")] = 30,
    threads: Annotated[int, typer.Option(help="CPU threads, as the app would use.")] = 2,
    top: Annotated[Optional[int], typer.Option(help="Show only the N slowest ops (all are written to --out).")] = 25,
    peak: Annotated[bool, typer.Option("--peak/--no-peak", help="Measure (once per CPU, cached) the runtime's peak GMAC/s with one large GEMM.")] = True,
    against: Annotated[Optional[Path], typer.Option("--against", help="The same model's fp32 artifact for the same target: profile both and show, layer by layer, what int8 buys here and why not more.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite existing files in --out.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the profile as JSON on stdout.")] = False,
    verify_key: Annotated[Optional[Path], typer.Option(envvar="EDGEMNV2_VERIFY_KEY", help="(or EDGEMNV2_VERIFY_KEY) Public key (PEM): refuse an artifact not signed with its private key.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help=VERBOSE_HELP)] = False,
    log: Annotated[Optional[Path], typer.Option(help=LOG_HELP)] = None,
) -> None:
    """Per-op latency inside the artifact's runtime: op, source layer, share of time, MACs, GMAC/s and fraction of this CPU's peak."""

    threads = set_threads(threads)
    if runs < 3:
        raise UserError("--runs must be at least 3")
    for path in (artifact, against):
        if path is not None and not Path(path).exists():
            raise UserError(f"artifact not found: {path}")
    if out_dir is not None:
        write_profile_files(None, out_dir, force, check_only=True, paired=against is not None)
    with third_party_noise(verbose, log, "profile"):
        report = profile_artifact(artifact, threads, runs, peak, verify_key) if against is None else \
            profile_pair(artifact, against, threads, runs, peak, verify_key)
    if json_output:
        emit_json(report)
    else:
        print_profile(report, top)
        if "against_fp32" in report:
            print_comparison(report["against_fp32"])
    if out_dir is not None:
        write_profile_files(report, out_dir, force)
        console.print(f"wrote profile.json, profile.md, profile.png{' and ' + COMPARISON_FILE if against is not None else ''} to {out_dir}")


def print_comparison(comparison: dict) -> None:
    out.print(f"\nagainst its fp32 ({comparison['fp32_artifact']}):")
    out.print(comparison_text(comparison))
    out.print(comparison["verdict"])


PROFILE_FILES = ("profile.json", "profile.md", "profile.png")
COMPARISON_FILE = "against_fp32.md"


def write_profile_files(report: dict | None, out_dir: Path, force: bool, check_only: bool = False, paired: bool = False) -> None:
    for name in PROFILE_FILES + ((COMPARISON_FILE,) if paired else ()):
        refuse_overwrite(Path(out_dir) / name, force)
    if check_only:
        return
    title = f"{report['artifact']} ({report['runtime']}), {report['threads']} threads, {report['end_to_end_ms']:.3f} ms end to end"
    with atomic_output(Path(out_dir) / "profile.json", force) as temp:
        temp.write_text(json.dumps(report, indent=2))
    with atomic_output(Path(out_dir) / "profile.md", force) as temp:
        temp.write_text(f"# {title}\n\n{report['machine']}\n\n{table_text(report['rows'])}\n")
    with atomic_output(Path(out_dir) / "profile.png", force) as temp:
        write_png(report["rows"], title, temp)
    if "against_fp32" in report:
        comparison = report["against_fp32"]
        with atomic_output(Path(out_dir) / COMPARISON_FILE, force) as temp:
            temp.write_text(f"# {report['artifact']} against {comparison['fp32_artifact']}\n\n{report['machine']}, {report['threads']} threads\n\n"
                            f"{comparison_text(comparison)}\n\n{comparison['verdict']}\n")
