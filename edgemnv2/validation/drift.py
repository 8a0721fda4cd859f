"""How far an artifact's outputs are from the fp32 reference on the same images.

SQNR (signal-to-quantization-noise ratio, dB) is the standard quantization-error figure:
10*log10(sum(ref^2) / sum((ref - out)^2)); 20 dB is ~10% relative error, 40 dB ~1%.
"""

import numpy as np

PERFECT_SQNR_DB = 200.0  # reported when the outputs are bit-identical (infinite SQNR)


def sqnr_db(reference: np.ndarray, output: np.ndarray) -> float:
    reference = np.asarray(reference, np.float64)
    noise = float(np.sum((reference - np.asarray(output, np.float64)) ** 2))
    return sqnr_from_sums(float(np.sum(reference**2)), noise)


def sqnr_from_sums(signal: float, noise: float) -> float:
    """A non-finite noise (NaN or infinity in the outputs) is the worst figure, never min(200, nan) = 200."""
    if not np.isfinite(noise):
        return -PERFECT_SQNR_DB
    if noise == 0.0:
        return PERFECT_SQNR_DB
    if signal == 0.0:
        return -PERFECT_SQNR_DB
    return min(PERFECT_SQNR_DB, 10.0 * np.log10(signal / noise))


def _abs_error(reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    """|ref - out|, infinite where the output is not finite (np.max would drop or propagate a NaN)."""
    error = np.abs(np.asarray(reference, np.float64) - np.asarray(output, np.float64))
    return np.where(np.isfinite(error), error, np.inf)


def max_abs_error(reference: np.ndarray, output: np.ndarray) -> float:
    return float(np.max(_abs_error(reference, output)))


def drift_records(reference: list[np.ndarray], outputs: list[np.ndarray]) -> dict:
    """Per image and output: sum(ref^2), sum((ref - out)^2), max |ref - out|, and how many output
    values are not finite (reduced by reduce_drift; a non-finite value makes the noise infinite)."""
    records = {}
    for k, (ref, out) in enumerate(zip(reference, outputs)):
        ref = np.asarray(ref, np.float64).reshape(len(ref), -1)
        out = np.asarray(out, np.float64).reshape(len(ref), -1)
        error = _abs_error(ref, out)
        records[f"signal_{k}"] = np.sum(ref**2, axis=1)
        records[f"noise_{k}"] = np.sum(error**2, axis=1)
        records[f"max_abs_{k}"] = np.max(error, axis=1)
        records[f"nonfinite_{k}"] = np.sum(~np.isfinite(out), axis=1)
    return records


def reduce_drift(records: dict, names: list[str]) -> dict:
    """SQNR and max abs error per output from per-image records, plus the worst (lowest) SQNR as the headline figure."""
    per_output = {
        name: {"sqnr_db": sqnr_from_sums(float(np.sum(records[f"signal_{k}"])), float(np.sum(records[f"noise_{k}"]))),
               "max_abs_error": float(np.max(records[f"max_abs_{k}"])),
               "nonfinite_values": int(np.sum(records.get(f"nonfinite_{k}", 0)))}
        for k, name in enumerate(names)
    }
    return {
        "sqnr_db": min(v["sqnr_db"] for v in per_output.values()),
        "max_abs_error": max(v["max_abs_error"] for v in per_output.values()),
        "nonfinite_values": sum(v["nonfinite_values"] for v in per_output.values()),
        "per_output": per_output,
    }
