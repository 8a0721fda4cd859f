"""The one code path that writes an artifact: an `ArtifactWriter` per run.

Every artifact is written atomically (temp name, then rename) and gets a manifest beside it:
`<artifact>.manifest.json`. The manifest is renamed into place last, so an artifact without a
manifest is an interrupted write: it is never trusted and is replaced on the next run.
"""

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgemnv2 import failpoints
from edgemnv2.artifacts import manifest_path
from edgemnv2.errors import UserError, is_internal_error, one_line, reraise_if_debugging
from edgemnv2.fileio import commit, discard, folder_lock, remove_stale_temps, sha256_of, size_of, temp_path
from edgemnv2.precision import Precision
from edgemnv2.signing import sign_files, signature_path

from .job import ConversionJob
from .manifest import build_manifest, stale_reason
from .target import Target, TargetSpec

LOG = logging.getLogger("edgemnv2.convert")


@dataclass
class ArtifactResult:
    target: str
    precision: str  # the precision's name
    path: Path | None
    status: str  # "ok" | "failed" | "skipped"
    seconds: float = 0.0
    size_bytes: int = 0
    message: str = ""
    manifest: dict = field(default_factory=dict)
    internal: bool = False  # failed by a bug of edgemnv2's, not by the converter's refusal: exit 3


def artifact_path(out_dir: Path, stem: str, spec: TargetSpec, precision: Precision) -> Path:
    return Path(out_dir) / f"{stem}.{spec.name}.{precision.name}{spec.suffix}"


@dataclass(frozen=True)
class ArtifactWriter:
    """Where and how one run writes its artifacts: the out folder, the checkpoint's stem (every file's
    name starts with it) and hash (every manifest's provenance), whether an artifact already there may
    be replaced, and the key that signs each one."""

    out_dir: Path
    stem: str
    checkpoint_sha256: str
    force: bool = False
    sign_key: Path | None = None

    def path(self, spec: TargetSpec, precision: Precision) -> Path:
        return artifact_path(self.out_dir, self.stem, spec, precision)

    def replacing(self) -> "ArtifactWriter":
        """The same writer, allowed to replace (the --max-drop search's scratch candidates, a file it re-writes)."""
        return dataclasses.replace(self, force=True)

    def into(self, folder: Path, signed: bool = True) -> "ArtifactWriter":
        """The same writer into another folder (the search's scratch folder: unsigned candidates)."""
        return dataclasses.replace(self, out_dir=Path(folder), sign_key=self.sign_key if signed else None)

    def write(self, target: Target, job: ConversionJob) -> ArtifactResult:
        """Convert with one target; never leaves a partial artifact. Errors become a failed result.

        The artifact, its sidecars and its manifest are built under temporary names (and signed, with
        the writer's key, as one set under their final names); then, holding the folder lock, they are renamed
        into place, the manifest last. Two converts into one folder therefore never interleave: every
        artifact matches its manifest. A manifest is the commit mark.
        """
        spec: TargetSpec = target.spec
        if job.precision.name not in spec.precisions:
            raise UserError(f"target '{spec.name}' does not support precision '{job.precision}'; supported: {', '.join(spec.precisions)}")
        final = self.path(spec, job.precision)
        manifest_file = manifest_path(final)
        provenance = job.provenance(self.checkpoint_sha256)
        if manifest_file.exists() and not self.force:
            return _existing(spec, job, final, provenance)
        try:
            Path(self.out_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create output folder {self.out_dir}: {exc.strerror}") from None
        remove_stale_temps(self.out_dir)
        started = time.perf_counter()
        temp, sidecars, temp_manifest, temp_signature = temp_path(final), {}, temp_path(manifest_file), temp_path(signature_path(final))
        try:
            extra = target.convert(job, temp) or {}
            sidecars = extra.pop(SIDECARS, {})
            seconds = time.perf_counter() - started
            manifest = build_manifest(job, spec, temp, provenance, extra, seconds)
            manifest["artifact_bytes"] += sum(size_of(sidecars[suffix]) for suffix in spec.shipped_sidecars)
            manifest["artifact"] = final.name
            manifest["sidecars"] = {suffix: {"file": final.name + suffix, "sha256": sha256_of(path)} for suffix, path in sidecars.items()}
            manifest["signed"] = self.sign_key is not None
            temp_manifest.write_text(json.dumps(manifest, indent=2))
            if self.sign_key is not None:
                members = {final.name: temp, manifest_file.name: temp_manifest, **{final.name + suffix: path for suffix, path in sidecars.items()}}
                sign_files(members, self.sign_key, temp_signature)
            failpoints.reached(failpoints.ARTIFACT_WRITTEN)
            with folder_lock(self.out_dir):
                if manifest_file.exists() and not self.force:  # another process finished it meanwhile
                    return _existing(spec, job, final, provenance)
                manifest_file.unlink(missing_ok=True)  # uncommit the old artifact before replacing it
                signature_path(final).unlink(missing_ok=True)  # an old signature must not outlive its artifact
                commit(temp, final)
                for suffix, path in sidecars.items():
                    commit(path, final.with_name(final.name + suffix))
                if self.sign_key is not None:
                    commit(temp_signature, signature_path(final))
                commit(temp_manifest, manifest_file)
            failpoints.reached(failpoints.ARTIFACT_COMMITTED)
        except UserError as exc:
            return ArtifactResult(spec.name, job.precision.name, None, "failed", time.perf_counter() - started, message=str(exc))
        except OSError as exc:
            return ArtifactResult(spec.name, job.precision.name, None, "failed", time.perf_counter() - started, message=f"could not write {final.name}: {exc.strerror or exc}")
        except Exception as exc:  # a converter crash must not abort the other targets
            reraise_if_debugging(exc)
            internal = is_internal_error(exc)
            LOG.error("converting %s %s: %s", spec.name, job.precision.name, "internal error" if internal else "the converter refused it", exc_info=exc)
            return ArtifactResult(spec.name, job.precision.name, None, "failed", time.perf_counter() - started, message=one_line(exc), internal=internal)
        finally:
            for leftover in [temp, temp_manifest, temp_signature, *sidecars.values()]:
                discard(Path(leftover))
        return ArtifactResult(spec.name, job.precision.name, final, "ok", manifest["conversion_seconds"], manifest["artifact_bytes"], manifest=manifest)


def remove_artifact(artifact: Path) -> None:
    """Take an artifact out of its folder: its manifest first (the commit mark: a reader never sees
    a manifest without its file), then its signature, sidecars and the artifact itself."""
    manifest_file = manifest_path(artifact)
    with folder_lock(artifact.parent):
        try:
            sidecars = json.loads(manifest_file.read_text()).get("sidecars") or {}
        except (OSError, ValueError, AttributeError):
            sidecars = {}
        manifest_file.unlink(missing_ok=True)
        signature_path(artifact).unlink(missing_ok=True)
        for suffix in sidecars:
            discard(artifact.with_name(artifact.name + suffix))
        # renamed out of the way first: a package folder half removed would otherwise keep the artifact's name
        doomed = temp_path(artifact)
        if artifact.exists() or artifact.is_symlink():
            os.replace(artifact, doomed)
        discard(doomed)


def _existing(spec, job, final: Path, provenance: dict) -> ArtifactResult:
    """An artifact is already there: reuse it only if it was built from the same inputs."""
    reason = stale_reason(manifest_path(final), provenance)
    if reason is not None:
        raise UserError(f"{final} exists, but {reason}; pass --force to replace it (or convert into another --out)")
    return ArtifactResult(spec.name, job.precision.name, final, "skipped", message=f"{final.name} is up to date (same checkpoint, recipe, calibration and tools)")


SIDECARS = "_sidecars"  # key a target's convert() may return: {suffix: temp file written beside dest}


def sidecar_temp(dest: Path, suffix: str) -> Path:
    """Where a target writes a companion file during convert (renamed into place with the artifact)."""
    return dest.with_name(dest.name + suffix)


def sidecar_path(artifact: Path, manifest: dict, suffix: str) -> Path | None:
    entry = (manifest.get("sidecars") or {}).get(suffix)
    return artifact.with_name(entry["file"]) if entry else None
