#!/usr/bin/env python3
"""Run one edgemnv2 bundle on a device: drift against the bundled fp32 references, and latency.

Needs only numpy (1.x or 2.x) and the ONE runtime the artifact needs:
  .tflite        ai_edge_litert, else tflite_runtime
  .pte           executorch (its Python runtime)
  .pt / .ptl     torch
  .mlpackage     coremltools, on macOS
  .onnx          onnxruntime
  .xml (+ .bin)  openvino (its CPU plugin, with the inference precision the IR declares pinned: f32 unless bf16)
It never imports edgemnv2: the runtime adapters come from runtime_adapters.py beside it. Usage, from the
bundle folder or anywhere:

    python run_bundle.py [BUNDLE_DIR] [--threads N] [--runs N] [--out result.json] [--verify-key PUB]

Before anything runs, every file listed in bundle.json is checked against its sha256 (the framed
encoding bundle.json names; a bundle of another is refused). With --verify-key, the bundle must be
signed whole (`edgemnv2 bundle --sign-key`, bundle.sig) with that key, and is verified strictly
before bundle.json is read: no file unsigned, changed, missing or extra; only bundle.sig and
result.json (this runner's default --out) are not covered. Without --verify-key, a signature is
verified with `model_signing` against the key the bundle carries, when this Python can import it;
when it cannot, result.json says so plainly. bundle.json must name plain files and non-empty
tolerances; any NaN or infinity in the artifact's outputs fails (finite_outputs).

Exit codes: 0 tolerances met; 1 a tolerance broken; 2 the runtime (or, with --verify-key,
model_signing) is not available here, nothing was run; 3 the bundle is broken, tampered with or
wrongly signed; 4 the runner itself failed unexpectedly. result.json is written in every case.
"""

import argparse
import hashlib
import json
import os
import platform
import statistics
import struct
import sys
import time

import numpy as np

try:  # beside this file: in a bundle, and in edgemnv2/device
    from runtime_adapters import RUNTIMES, ArtifactMismatch, NoRuntime
except ImportError:  # imported as edgemnv2.device.run_bundle
    from edgemnv2.device.runtime_adapters import RUNTIMES, ArtifactMismatch, NoRuntime

SCHEMA = "edgemnv2-bundle-result/1"
EXIT_OK, EXIT_TOLERANCE, EXIT_NO_RUNTIME, EXIT_BAD_BUNDLE, EXIT_RUNNER_ERROR = 0, 1, 2, 3, 4


class BadBundle(Exception):
    pass


# Must equal edgemnv2.fileio.HASH_ENCODING; bundle.json records the one its hashes were made with.
HASH_ENCODING = "edgemnv2-sha256/2"


def sha256_of(path):
    """Same as edgemnv2.fileio.sha256_of: a file's bytes; a folder's files in sorted order, each
    framed as (name length, name, size, sha256 of its bytes)."""
    if not os.path.isdir(path):
        return _file_digest(path)[0].hexdigest()
    digest = hashlib.sha256()
    files = sorted((os.path.join(d, f) for d, _, names in os.walk(path) for f in names),
                   key=lambda p: os.path.relpath(p, path).split(os.sep))  # by path parts, as pathlib sorts
    for file in files:
        name = os.path.relpath(file, path).replace(os.sep, "/").encode()
        content, size = _file_digest(file)
        digest.update(struct.pack(">Q", len(name)) + name + struct.pack(">Q", size) + content.digest())
    return digest.hexdigest()


def _file_digest(path):
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest, size


# ---- runtimes: one adapter per family, in runtime_adapters.py beside this file (the same module the
# host's runner processes use; `edgemnv2 bundle` ships it with this runner) ----

def load_runtime(artifact, manifest, threads, family):
    if family not in RUNTIMES:
        raise BadBundle("this runner has no runtime %r (it knows: %s); use the run_bundle.py of the edgemnv2 that made the bundle" % (family, ", ".join(sorted(RUNTIMES))))
    return RUNTIMES[family](artifact, threads, manifest)


# ---- integrity and authenticity ----

BUNDLE_SIGNATURE = "bundle.sig"  # `edgemnv2 bundle --sign-key`: one signature over every file of the bundle
RESULT_NAME = "result.json"  # this runner's default output, the one file a whole signature does not name


def _plain(name):
    return isinstance(name, str) and os.path.basename(name) == name and name not in ("", ".", "..")


def _finite_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def check_info(info):
    """What bundle.json must say before any of it is used (with --verify-key, it was verified first)."""
    if not isinstance(info, dict):
        raise BadBundle("bundle.json is not an edgemnv2 bundle description (a JSON object)")
    if info.get("hash_encoding") != HASH_ENCODING:  # hashes of another encoding are not comparable: refused, not mis-verified
        raise BadBundle("bundle.json was made by an older edgemnv2 (hash encoding %s; this runner checks %s): re-make the bundle with `edgemnv2 bundle`"
                        % (info.get("hash_encoding") or "not recorded", HASH_ENCODING))
    if "manifest" not in info:
        raise BadBundle("bundle.json names no manifest: re-make the bundle with `edgemnv2 bundle`")
    files = info.get("files") if isinstance(info.get("files"), dict) else {}
    for name in [info["manifest"], *files, *(info[k] for k in ("signature", "public_key") if info.get(k) is not None)]:
        if not _plain(name):
            raise BadBundle("bundle.json names %r, which is not a plain file name in the bundle: refusing it" % (name,))
    tolerances = info.get("tolerances")
    if not isinstance(tolerances, list) or not tolerances:  # nothing to break is not a pass
        raise BadBundle("bundle.json lists no tolerances: a bundle that checks nothing cannot pass; re-make it with `edgemnv2 bundle`")
    for tolerance in tolerances:
        if not (isinstance(tolerance, dict) and isinstance(tolerance.get("gate"), str) and isinstance(tolerance.get("measure"), str)
                and tolerance.get("bound") in ("min", "max") and _finite_number(tolerance.get("limit"))):
            raise BadBundle("bundle.json has a malformed tolerance %r: re-make the bundle with `edgemnv2 bundle`" % (tolerance,))


def check_files(bundle, info):
    """Every file the bundle was made with, byte for byte: inputs, references, labels, the runner,
    the artifact, its manifest, sidecars and signature. (Without --verify-key, result.json and other
    new files are not the bundle's and are ignored; with it, the whole signature admits none.)"""
    files = info.get("files")
    if not isinstance(files, dict) or not files:
        raise BadBundle("bundle.json lists no file hashes (made by an older edgemnv2?): re-make the bundle with `edgemnv2 bundle`")
    for name, digest in sorted(files.items()):
        path = os.path.join(bundle, name)
        if not _plain(name) or not os.path.exists(path):
            raise BadBundle("%s is missing from the bundle" % name)
        if sha256_of(path) != digest:
            raise BadBundle("%s does not match its sha256 in bundle.json: the bundle was modified or corrupted" % name)


def _model_signing():
    try:
        from model_signing import hashing, verifying
    except ImportError:
        return None
    return hashing, verifying


def _verify(bundle, key, signature, strict):
    """model_signing's check of `signature` with `key`. `strict`: every file in the folder (bundle.json,
    the runner, the samples, all of it) must be one the signature names, unchanged, none missing,
    none extra; only the signature itself and RESULT_NAME are not covered (so a --out inside the
    bundle under another name makes the next strict run refuse the bundle). Not strict: the files
    the signature names must be there unchanged; files added since are ignored."""
    import pathlib

    hashing, verifying = _model_signing()
    ignored = [signature, RESULT_NAME] if strict else [signature]
    try:
        verifying.Config().use_elliptic_key_verifier(public_key=pathlib.Path(key)).set_hashing_config(
            hashing.Config().set_ignored_paths(paths=ignored, ignore_git_paths=not strict)
        ).set_ignore_unsigned_files(not strict).verify(pathlib.Path(bundle), pathlib.Path(bundle) / signature)
    except Exception as exc:
        raise BadBundle("signature check failed: %s" % str(exc).split(": Expected")[0][:300])


def verify_whole(bundle, verify_key):
    """--verify-key: the bundle must be signed whole (`edgemnv2 bundle --sign-key`) by that key's
    owner. Runs before bundle.json is read: its manifest name, runtime and tolerances are trusted
    only once this passed. An artifact signature alone (`bundle --verify-key`) is not enough: it
    leaves bundle.json, and so what runs and what it is judged by, to whoever edits the folder."""
    if _model_signing() is None:
        raise NoRuntime("--verify-key needs model_signing (pip install model-signing), which is not installed here")
    if not os.path.isfile(os.path.join(bundle, BUNDLE_SIGNATURE)):
        raise BadBundle("signature check failed: the bundle is not signed whole (no %s), and --verify-key was given; "
                        "make it with `edgemnv2 bundle --sign-key`" % BUNDLE_SIGNATURE)
    _verify(bundle, verify_key, BUNDLE_SIGNATURE, strict=True)
    return {"status": "verified", "file": BUNDLE_SIGNATURE, "covers": "every file of the bundle", "key": "given (--verify-key)"}


def check_signature(bundle, info):
    """Without --verify-key: a plain statement for result.json. A signature is checked against the
    key the bundle carries, if any, which tells corruption, not who made the bundle; files added
    since (a result, a log) are ignored here."""
    whole = os.path.isfile(os.path.join(bundle, BUNDLE_SIGNATURE))
    signature = BUNDLE_SIGNATURE if whole else info.get("signature")
    if not signature:
        return {"status": "unsigned"}
    if _model_signing() is None:
        return {"status": "not verified: model_signing is not installed here (pip install model-signing to verify)", "file": signature}
    if not info.get("public_key"):
        return {"status": "not verified: no public key (pass --verify-key)", "file": signature}
    _verify(bundle, os.path.join(bundle, info["public_key"]), signature, strict=False)
    return {"status": "verified", "file": signature,
            "covers": "every file the bundle was made with" if whole else "the artifact, its manifest and sidecars only (not bundle.json, the samples or the tolerances)",
            "key": "the key bundled by `edgemnv2 bundle --verify-key` (pass --verify-key to pin your own)"}


# ---- drift ----

PERFECT_SQNR_DB = 200.0  # as edgemnv2.validation.drift: bit-identical outputs; -PERFECT_SQNR_DB is its floor


def sqnr_db(reference, output):
    """As edgemnv2.validation.drift.sqnr_db. A NaN or infinity is the floor: `min(200, nan)` was 200."""
    reference, output = reference.astype(np.float64), output.astype(np.float64)
    if not (np.isfinite(reference).all() and np.isfinite(output).all()):
        return -PERFECT_SQNR_DB
    noise = float(np.sum((reference - output) ** 2))
    if noise == 0.0:
        return PERFECT_SQNR_DB
    signal = float(np.sum(reference ** 2))
    if signal == 0.0:
        return -PERFECT_SQNR_DB
    return float(min(PERFECT_SQNR_DB, 10.0 * np.log10(signal / noise)))


def max_abs_error(reference, output):
    """inf when either holds a NaN or infinity (np.max would give nan, which other figures then skipped)."""
    if not (np.isfinite(reference).all() and np.isfinite(output).all()):
        return float("inf")
    return float(np.max(np.abs(reference.astype(np.float64) - output.astype(np.float64))))


def top1_classes(logits):
    """argmax per row; a row with a NaN or infinity names no class (-1, never a label or a reference
    class): argmax picks a NaN, so a NaN put at the reference's top-1 agreed with it."""
    return np.where(np.isfinite(logits.reshape(len(logits), -1)).all(1), logits.argmax(1), -1)


def nonfinite_values(array):
    """How many NaN or infinite values: each fails the bundle on its own (finite_outputs)."""
    return int(array.size - np.count_nonzero(np.isfinite(array)))


def drift(references, outputs, names, labels, argmax_output):
    per_output = {}
    for name, ref, out in zip(names, references, outputs):
        per_output[name] = {"sqnr_db": sqnr_db(ref, out), "max_abs_error": max_abs_error(ref, out), "nonfinite_values": nonfinite_values(out)}
    result = {"sqnr_db": min(v["sqnr_db"] for v in per_output.values()),
              "max_abs_error": max(v["max_abs_error"] for v in per_output.values()), "per_output": per_output}
    if argmax_output is not None:  # a classifier: compare the top-1 class (bundle.json says which output)
        ref_top1, top1 = references[argmax_output].argmax(1), top1_classes(outputs[argmax_output])
        result["top1_agreement"] = float(np.mean(ref_top1 == top1) * 100.0)
        if labels is not None:
            result["reference_top1"] = float(np.mean(ref_top1 == labels) * 100.0)
            result["top1"] = float(np.mean(top1 == labels) * 100.0)
            result["top1_drop"] = result["reference_top1"] - result["top1"]
    return result


def check(measured, tolerances):
    """tolerances: [{"gate", "measure", "bound": "min"|"max", "limit"}] -> failure lines."""
    failures = []
    for tolerance in tolerances:
        value = measured.get(tolerance["measure"])
        if value is None:
            continue
        ok = value <= tolerance["limit"] if tolerance["bound"] == "max" else value >= tolerance["limit"]
        if not ok:
            failures.append("%s: measured %.4g, limit %s %g" % (tolerance["gate"], value, "<=" if tolerance["bound"] == "max" else ">=", tolerance["limit"]))
    return failures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", nargs="?", default=os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default=None, help="result JSON (default: BUNDLE/result.json)")
    parser.add_argument("--verify-key", default=None, help="public key (PEM) the artifact must be signed with; needs model_signing")
    args = parser.parse_args(argv)
    result = {"schema": SCHEMA, "bundle": os.path.abspath(args.bundle), "machine": platform.platform(),
              "python": platform.python_version(), "numpy": np.__version__, "threads": args.threads}
    try:
        code = _run(args, result)
    except NoRuntime as exc:
        result.update(status="runtime unavailable", reason=str(exc))
        code = EXIT_NO_RUNTIME
    except (BadBundle, ArtifactMismatch) as exc:
        result.update(status="bad bundle", reason=str(exc))
        code = EXIT_BAD_BUNDLE
    except Exception as exc:  # a bug or a runtime crash: its own code, never "tolerance broken"
        result.update(status="runner error", reason="%s: %s" % (type(exc).__name__, str(exc)[:500]))
        code = EXIT_RUNNER_ERROR
    text = json.dumps(result, indent=2, sort_keys=True, default=str)
    print(text)
    out = args.out or os.path.join(args.bundle, RESULT_NAME)
    try:
        with open(out + ".tmp", "w") as handle:
            handle.write(text + "\n")
        os.replace(out + ".tmp", out)
    except OSError as exc:
        print("run_bundle: could not write %s: %s" % (out, exc), file=sys.stderr)
    return code


def _run(args, result):
    bundle = args.bundle
    if args.verify_key:  # first: bundle.json is one of the signed files, and nothing in it is used before
        result["signature"] = verify_whole(bundle, args.verify_key)
    try:
        with open(os.path.join(bundle, "bundle.json")) as handle:
            info = json.load(handle)
    except (OSError, ValueError) as exc:
        raise BadBundle("cannot read bundle.json in %s: %s" % (bundle, exc))
    check_info(info)
    try:
        with open(os.path.join(bundle, info["manifest"])) as handle:
            manifest = json.load(handle)
    except (OSError, ValueError) as exc:
        raise BadBundle("cannot read the manifest %s in %s: %s" % (info["manifest"], bundle, exc))
    if not isinstance(manifest, dict):
        raise BadBundle("%s is not an edgemnv2 manifest (a JSON object)" % info["manifest"])
    name = manifest.get("artifact")
    if not _plain(name):
        raise BadBundle("the manifest names its artifact %r, which is not a plain file name in the bundle" % (name,))
    artifact = os.path.join(bundle, name)
    result.update(artifact=manifest.get("artifact"), target=manifest.get("target"), precision=manifest.get("precision"))
    check_files(bundle, info)
    if not os.path.exists(artifact) or sha256_of(artifact) != manifest.get("artifact_sha256"):
        raise BadBundle("%s is missing or does not match the sha256 in its manifest" % name)
    sidecars = manifest.get("sidecars") or {}
    for entry in (sidecars.values() if isinstance(sidecars, dict) else [None]):  # OpenVINO's weights, CoreML's simulation
        if not isinstance(entry, dict) or not _plain(entry.get("file")):
            raise BadBundle("the manifest lists a malformed sidecar")
        path = os.path.join(bundle, entry["file"])
        if not os.path.exists(path) or sha256_of(path) != entry.get("sha256"):
            raise BadBundle("%s is missing or does not match the sha256 in its manifest" % entry["file"])
    if not args.verify_key:
        result["signature"] = check_signature(bundle, info)
    try:
        inputs = np.load(os.path.join(bundle, "inputs.npy"), allow_pickle=False)
        references = [np.load(os.path.join(bundle, "reference_%d.npy" % i), allow_pickle=False) for i in range(len(manifest["outputs"]))]
        labels_path = os.path.join(bundle, "labels.npy")
        labels = np.load(labels_path, allow_pickle=False) if os.path.exists(labels_path) else None
    except (OSError, ValueError) as exc:
        raise BadBundle("cannot read the bundled samples: %s" % exc)
    started = time.perf_counter()
    run_one, runtime, version = load_runtime(artifact, manifest, args.threads, info.get("device_runtime"))
    result.update(runtime=runtime, runtime_version=version, load_ms=(time.perf_counter() - started) * 1000)
    outputs = [[] for _ in manifest["outputs"]]
    for sample in inputs:
        for k, value in enumerate(run_one(np.ascontiguousarray(sample[None], dtype=np.float32))):
            outputs[k].append(value)
    outputs = [np.concatenate(o).astype(np.float32) for o in outputs]
    names = list(manifest["outputs"])
    nonfinite = {output: nonfinite_values(values) for output, values in zip(names, outputs)}  # every output, compared or not
    compared = info.get("drift_outputs")
    if compared is not None:  # an in-graph decode: only its sorted scores compare one to one with the reference
        references, outputs, names = [references[k] for k in compared], [outputs[k] for k in compared], [names[k] for k in compared]
    measured = drift(references, outputs, names, labels, info.get("argmax_output"))
    measured["nonfinite_values"] = sum(nonfinite.values())
    sample = np.ascontiguousarray(inputs[:1], dtype=np.float32)
    if hasattr(run_one, "encode"):  # timed on the artifact's own input (uint8 pixels for an app .tflite)
        encoded = run_one.encode(sample)
        call = lambda: run_one.run_encoded(encoded)  # noqa: E731
    else:
        call = lambda: run_one(sample)  # noqa: E731
    for _ in range(args.warmup):
        call()
    times = []
    for _ in range(max(1, args.runs)):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    measured.update(latency_median_ms=statistics.median(times), latency_p90_ms=times[int(0.9 * (len(times) - 1))], latency_min_ms=times[0])
    # a NaN or infinity fails on its own, whatever the tolerances say
    failures = ["finite_outputs: %d non-finite values in %s" % (count, output) for output, count in nonfinite.items() if count]
    failures += check(measured, info["tolerances"])
    result.update(samples=int(len(inputs)), measured=measured, tolerances=info["tolerances"], failures=failures,
                  status="passed" if not failures else "tolerance broken")
    return EXIT_OK if not failures else EXIT_TOLERANCE


if __name__ == "__main__":
    sys.exit(main())
