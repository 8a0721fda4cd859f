"""What `predict` gives for a classifier: the top five classes of each image, printed, and with --out
written to predictions.json."""

import json
from pathlib import Path

from ...fileio import atomic_output, refuse_overwrite


def prediction_fields(found: list[tuple[str, float]], class_names: list[str]) -> dict:
    """edgemnv2.predict's Prediction fields for one image: its top five (class name, probability)."""
    return {"top5": found}


def write_predictions(predict, model_name: str, class_names: list[str], files: list[Path], out_dir: Path | None, threshold: float, force: bool,
                      lines) -> tuple[dict, str | None]:
    """predict(path) -> (image, top five). Prints a line per image; returns the --json payload's fields
    and a closing line (None: nothing more to say)."""
    results = []
    for path in files:
        _, top5 = predict(path)
        lines.print(f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in top5))
        results.append({"file": str(path), "top5": [{"label": n, "score": p} for n, p in top5]})
    if out_dir is not None:
        dest = out_dir / "predictions.json"
        refuse_overwrite(dest, force)
        with atomic_output(dest, force=True) as temp:
            temp.write_text(json.dumps(results, indent=2))
    return {"predictions": results}, None
