"""fp32-vs-artifact comparison images: for `predict --compare` and for validate's detector report."""

from pathlib import Path

from ..artifacts import manifest_path
from ..fileio import atomic_output
from ..precision import get_precision
from ..tasks import get_task
from .sources import Source, open_source, predict_image


def comparison_path(out_dir: Path, image_path: Path, prefix: str = "compare") -> Path:
    """Where compare_images writes the picture of one image (callers check it before any work)."""
    return Path(out_dir) / f"{prefix}_{Path(image_path).stem}.png"


def compare_images(reference: Source, other: Source, images: list[Path], out_dir: Path, threshold: float, prefix: str = "compare") -> list[tuple[Path, int]]:
    """Write one side-by-side PNG per image; -> [(png path, disagreements)]."""
    side_by_side = get_task(reference.task).side_by_side
    written = []
    for image_path in images:
        image, left = predict_image(reference, image_path, threshold)
        _, right = predict_image(other, image_path, threshold)
        picture, disagreements = side_by_side(image, left, right, reference.class_names, reference.name, other.name)
        dest = comparison_path(out_dir, image_path, prefix)
        with atomic_output(dest, force=True) as temp:
            picture.save(temp, format="PNG")
        written.append((dest, disagreements))
    return written


def worst_disagreements(report: dict, checkpoint: Path, artifacts_dir: Path, out_dir: Path, threads: int, threshold: float = 0.3,
                        verify_key: Path | None = None) -> list[Path]:
    """Comparison pictures for the int8 artifact that agrees least with fp32 (runtime rows only).
    The artifact is reopened through its manifest, verified again (with the same key) and must be the
    very bytes the report scored: a file swapped in the folder since then is refused, never run."""
    checked = [a for a in report["artifacts"] if a["status"] in ("passed", "gate failed")]  # refused rows name no precision
    if get_task(report["checkpoint"]["task"]).side_by_side is None:
        return []
    candidates = [a for a in checked if get_precision(a["precision"]).quantized and a["measured_on"] == "runtime" and a["worst_images"]]
    if not candidates:
        return []
    agreement = get_task(report["checkpoint"]["task"]).agreement_measure
    worst = min(candidates, key=lambda a: a["measured"].get(agreement, 100.0))
    reference = open_source(checkpoint, threads)
    other = open_source(manifest_path(Path(artifacts_dir) / worst["artifact"]), threads, verify_key=verify_key, expected_sha256=worst["sha256"])
    stem = worst["artifact"].replace(".", "_")[:120]  # a file name has 255 bytes, and the picture's adds its own
    return [path for path, _ in compare_images(reference, other, [Path(p) for p in worst["worst_images"]], out_dir, threshold, f"compare_{stem}")]
