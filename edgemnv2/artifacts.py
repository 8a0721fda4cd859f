"""The artifacts layer: manifests, integrity and authenticity checks, and the Runner contract.

Everything that reads an artifact (validate, predict, bundle, benchmarks) goes through here, and
this module imports nothing from `conversion`: the targets depend on it, never the reverse.

Reading is check-then-use on bytes nobody else can change: `verified_copy` copies the manifest,
the artifact, its sidecars and its signature ONCE into a private folder (mode 0700), checks the
sha256 and the signature of that copy, and hands out paths inside it. A file swapped in the
artifacts folder after the check is never what gets loaded.
"""

import json
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .errors import CheckFailed, UserError
from .fileio import HASH_ENCODING, sha256_of
from .signing import SIGNATURE_SUFFIX, SignatureRefused, signature_path, verify_folder

Runner = Callable[[np.ndarray], list[np.ndarray]]  # NCHW float32 batch -> outputs, float32
MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_SCHEMA = "edgemnv2-artifact/1"
# What every reader relies on. A manifest without one of these is refused by name, not a KeyError.
REQUIRED_MANIFEST_KEYS = ("artifact", "target", "precision", "task", "arch", "class_names", "input_shape",
                          "preprocessing", "outputs", "artifact_sha256", "checkpoint_sha256")


class RuntimeUnavailable(Exception):
    """The artifact is fine but its runtime cannot run here (e.g. CoreML on Linux)."""

    expected = True  # not a bug (edgemnv2.errors.is_internal_error)


class ArtifactRefused(CheckFailed):
    """Bytes that do not match their manifest, or a manifest that cannot be trusted (exit 1)."""


def manifest_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


MAX_NAME_BYTES = 255  # no file system holds a longer file name: a manifest naming one is refused, not an OSError


def _is_plain_name(name) -> bool:
    return isinstance(name, str) and bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name \
        and "\0" not in name and len(name.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES


def parse_manifest(text: bytes | str, source: Path) -> dict:
    """Parse and check a manifest's shape. Errors name the file and the fix."""
    try:
        manifest = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{source} is not valid JSON ({exc}); re-run convert to rewrite it") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{source} is not an edgemnv2 manifest (a JSON object); re-run convert")
    if not _is_plain_name(manifest.get("artifact")):
        raise UserError(f"{source.name} names its artifact {manifest.get('artifact')!r}, which is not a plain file name beside it; refusing it")
    # X.manifest.json is about X and nothing else: a good artifact's manifest copied under another
    # name would otherwise vouch for that good artifact while the file it sits beside goes unread.
    if source.name.endswith(MANIFEST_SUFFIX) and manifest["artifact"] != source.name[: -len(MANIFEST_SUFFIX)]:
        raise UserError(f"{source.name} describes {manifest['artifact']!r}, not {source.name[: -len(MANIFEST_SUFFIX)]!r}: a manifest describes "
                        f"only the file whose name it carries; refusing it")
    missing = [key for key in REQUIRED_MANIFEST_KEYS if key not in manifest]
    if missing:
        raise UserError(f"{source} lacks {', '.join(missing)}: it was not written by this edgemnv2's convert; re-run convert")
    _check_types(manifest, source)
    sidecars = manifest.get("sidecars") or {}
    if not isinstance(sidecars, dict):
        raise UserError(f"{source.name}: sidecars must be a table of entries; re-run convert")
    for suffix, entry in sidecars.items():
        if not isinstance(entry, dict) or not _is_plain_name(entry.get("file")) or not isinstance(entry.get("sha256"), str):
            raise UserError(f"{source.name}: sidecar entry {suffix!r} is malformed; re-run convert")
        # a sidecar is named after its artifact (X + suffix): any other name could hide another artifact
        if not (suffix.startswith(".") and entry["file"] == manifest["artifact"] + suffix and MANIFEST_SUFFIX not in suffix):
            raise UserError(f"{source.name}: sidecar {entry['file']!r} is not named {manifest['artifact']!r} + {suffix!r}; refusing it")
    return manifest


def _check_types(manifest: dict, source: Path) -> None:
    """The fields every reader computes with, of the types it computes with (a hostile manifest
    must be one refused line, not a TypeError deep inside a run)."""
    outputs = manifest["outputs"]
    if not isinstance(outputs, list) or not outputs or not all(isinstance(name, str) for name in outputs):
        raise UserError(f"{source.name}: outputs must be a non-empty list of names; re-run convert")
    for key in ("target", "precision", "task", "arch", "artifact_sha256", "checkpoint_sha256"):
        if not isinstance(manifest[key], str):
            raise UserError(f"{source.name}: {key} must be a string; re-run convert")
    size = manifest.get("artifact_bytes", 0)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise UserError(f"{source.name}: artifact_bytes must be a byte count; re-run convert")
    if not isinstance(manifest["preprocessing"], dict) or not isinstance(manifest["class_names"], list):
        raise UserError(f"{source.name}: preprocessing must be a table and class_names a list; re-run convert")


def read_manifest(artifact_or_manifest: Path) -> tuple[Path, dict]:
    """-> (artifact path, manifest). Accepts either file."""
    path = Path(artifact_or_manifest)
    manifest_file = path if path.name.endswith(MANIFEST_SUFFIX) else manifest_path(path)
    if not manifest_file.is_file():
        raise UserError(f"no manifest for {path} (expected {manifest_file.name}); was the conversion interrupted?")
    manifest = parse_manifest(manifest_file.read_bytes(), manifest_file)
    artifact = manifest_file.with_name(manifest["artifact"])
    if not artifact.exists():
        raise UserError(f"{manifest_file.name} describes {artifact.name}, which is missing (an orphan manifest); re-run convert or delete it")
    return artifact, manifest


@dataclass
class FolderScan:
    found: list[tuple[Path, dict]]
    problems: list[tuple[Path, str]]  # (manifest file, one-line reason): orphans, broken manifests


def scan_artifacts(folder: Path) -> FolderScan:
    """Every artifact with a readable manifest, and a one-line problem for each manifest that is
    not: one broken manifest does not hide the others."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"artifact folder not found: {folder}")
    scan = FolderScan([], [])
    for manifest_file in sorted(folder.glob(f"*{MANIFEST_SUFFIX}")):
        try:
            scan.found.append(read_manifest(manifest_file))
        except UserError as exc:
            scan.problems.append((manifest_file, str(exc)))
        except OSError as exc:  # unreadable, or a name the file system refuses: this manifest's row, not the run's end
            scan.problems.append((manifest_file, f"cannot read {manifest_file.name}: {exc.strerror or exc}"))
    return scan


def find_artifacts(folder: Path) -> list[tuple[Path, dict]]:
    return scan_artifacts(folder).found


def artifact_files(artifact: Path, manifest: dict) -> dict[str, Path]:
    """The files one artifact consists of, by name: the artifact, its manifest, its sidecars."""
    files = {artifact.name: artifact, artifact.name + MANIFEST_SUFFIX: manifest_path(artifact)}
    for entry in (manifest.get("sidecars") or {}).values():
        files[entry["file"]] = artifact.with_name(entry["file"])
    return files


def verify_artifact(artifact: Path, manifest: dict) -> None:
    """Refuse an artifact (or a sidecar) whose bytes are not the ones its manifest recorded."""
    encoding = manifest.get("hash_encoding")
    if encoding != HASH_ENCODING:  # a hash of another encoding is not comparable: refused, never mis-verified
        raise ArtifactRefused(f"{artifact.name}'s manifest was made by an older edgemnv2 (hash encoding {encoding or 'not recorded'}, "
                              f"this one checks {HASH_ENCODING}): re-run convert")
    if sha256_of(artifact) != manifest.get("artifact_sha256"):
        raise ArtifactRefused(f"{artifact.name} does not match the sha256 in its manifest: it was modified or corrupted after conversion; re-run convert")
    for entry in (manifest.get("sidecars") or {}).values():
        path = artifact.with_name(entry["file"])
        if not path.exists() or sha256_of(path) != entry["sha256"]:
            raise ArtifactRefused(f"{entry['file']} is missing or does not match the sha256 in {artifact.name}'s manifest; re-run convert")


@dataclass
class VerifiedArtifact:
    path: Path  # inside the private copy
    manifest: dict
    signature: str  # "verified", "unsigned", or "signed, not verified (no --verify-key)"


def _copy(source: Path, dest: Path) -> None:
    if source.is_symlink():
        raise ArtifactRefused(f"{source.name} is a symbolic link; artifacts are plain files")
    if source.is_dir():
        shutil.copytree(source, dest, symlinks=True)
        if any(p.is_symlink() for p in dest.rglob("*")):
            raise ArtifactRefused(f"{source.name} contains symbolic links; artifacts are plain files")
    else:
        shutil.copyfile(source, dest)


@contextmanager
def verified_copy(artifact_or_manifest: Path, verify_key: Path | None = None,
                  kind_of: Callable[[Path], str | None] | None = None) -> Iterator[VerifiedArtifact]:
    """A private copy of one artifact whose sha256 (and signature, with verify_key) were checked.

    With `kind_of` (conversion.kind_of: the target a file's own bytes say it is), the copy must be
    the kind of file its manifest's target makes: a manifest's word never picks the runtime or the
    gate section for bytes of another kind (readers use conversion.verified_artifact, which passes it).

    Without verify_key, a signature beside the artifact is carried but not checked (said so in
    `.signature`); with it, an unsigned or wrongly signed artifact is refused.
    """
    path = Path(artifact_or_manifest)
    manifest_file = path if path.name.endswith(MANIFEST_SUFFIX) else manifest_path(path)
    private = Path(tempfile.mkdtemp(prefix="edgemnv2-verified-"))  # 0700: only this user can change it
    try:
        if not manifest_file.is_file():
            raise UserError(f"no manifest for {path} (expected {manifest_file.name}); was the conversion interrupted?")
        manifest_bytes = manifest_file.read_bytes()  # read once: the copy below is what is trusted
        manifest = parse_manifest(manifest_bytes, manifest_file)
        (private / manifest_file.name).write_bytes(manifest_bytes)
        folder = manifest_file.parent
        artifact = folder / manifest["artifact"]
        if not artifact.exists():
            raise UserError(f"{manifest_file.name} describes {artifact.name}, which is missing (an orphan manifest); re-run convert or delete it")
        for name in artifact_files(artifact, manifest):
            if name != manifest_file.name:
                if not (folder / name).exists():
                    raise ArtifactRefused(f"{name} is missing beside {artifact.name}; re-run convert")
                _copy(folder / name, private / name)
        copy = private / artifact.name
        verify_artifact(copy, manifest)
        if kind_of is not None:
            kind = kind_of(copy)
            if kind != manifest["target"]:
                what = f"a {kind} file" if kind else "no target's file"
                raise ArtifactRefused(f"{artifact.name} is {what}, but its manifest says target {manifest['target']!r}; "
                                      "the target comes from the file's bytes: refusing it")
        signature = signature_path(artifact)
        if verify_key is not None:
            if not signature.is_file():
                raise SignatureRefused(f"{artifact.name} is not signed (no {signature.name}) and --verify-key was given; convert with --sign-key")
            shutil.copyfile(signature, private / signature.name)
            try:
                verify_folder(private, private / signature.name, verify_key)
            except SignatureRefused as exc:
                raise SignatureRefused(f"{artifact.name}: {exc}") from None
            state = "verified"
        else:
            state = "signed, not verified (no --verify-key)" if signature.is_file() else "unsigned"
        yield VerifiedArtifact(copy, manifest, state)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def per_sample(run_one: Callable[[np.ndarray], list[np.ndarray]], encode: Callable | None = None, run_encoded: Callable | None = None) -> Runner:
    """Adapt a batch-1 runtime to the Runner contract (any batch size).

    An artifact that takes another input than normalized NCHW floats (an app-ready .tflite takes
    uint8 pixels) passes `encode` (normalized batch -> its own input) and `run_encoded` (that input
    -> outputs): latencies are then taken on the artifact's own input, encoded once outside the clock
    (`timed_call`), as an app hands the runtime its pixels. The harness's conversion back from
    normalized floats is not the artifact's cost (0.4 ms at 224 px, a tenth of an int8 MobileNetV2)."""

    def run(batch: np.ndarray) -> list[np.ndarray]:
        results = [run_one(np.ascontiguousarray(batch[i : i + 1], dtype=np.float32)) for i in range(len(batch))]
        return [np.concatenate([r[k] for r in results]).astype(np.float32) for k in range(len(results[0]))]

    run.batch_size = 1  # what the runtime is given per call (reports say so)
    if encode is not None and run_encoded is not None:
        run.encode, run.run_encoded = encode, run_encoded
    return run


def timed_call(runner: Runner, sample: np.ndarray) -> Callable[[], object]:
    """What a latency measurement calls: the runner on the sample, or, for a runner that says how
    (per_sample's encode/run_encoded), the runtime on the sample already in the artifact's own input."""
    encode = getattr(runner, "encode", None)
    if encode is None or len(sample) != 1:
        return lambda: runner(sample)
    encoded, run_encoded = encode(np.ascontiguousarray(sample, dtype=np.float32)), runner.run_encoded
    return lambda: run_encoded(encoded)


__all__ = [
    "ArtifactRefused", "FolderScan", "MANIFEST_SCHEMA", "MANIFEST_SUFFIX", "REQUIRED_MANIFEST_KEYS", "Runner",
    "RuntimeUnavailable", "SIGNATURE_SUFFIX", "VerifiedArtifact", "artifact_files", "find_artifacts", "manifest_path",
    "parse_manifest", "per_sample", "read_manifest", "scan_artifacts", "timed_call", "verified_copy", "verify_artifact",
]
