"""On-device bundles: one self-contained folder per artifact that runs with numpy + one runtime.

    <bundle>/<artifact stem>/
        <artifact> + <artifact>.manifest.json     verified by sha256 before it runs
        inputs.npy                                N preprocessed real images, float32 NCHW
        reference_<k>.npy                         fp32 eager outputs for the same inputs
        labels.npy                                ground truth (classifiers)
        <artifact>.sig, signing_key.pub           the artifact's signature (if signed) and, with
                                                  --verify-key, the key it was verified against
        bundle.json                               tolerances from the gates, provenance, and the
                                                  sha256 of every other file (checked before running)
        run_bundle.py                             the device runner (device_tests/run_bundle.py)
        runtime_adapters.py                       its runtime adapters (the host's runner processes use the same)
        bundle.sig                                with --sign-key: one signature over every file
                                                  above, bundle.json included

The artifact's signature covers the artifact and its manifest, not bundle.json: whoever edits the
folder could point bundle.json at another manifest, or empty its tolerances. `run_bundle.py
--verify-key` therefore accepts only a bundle signed whole (bundle.sig) and verifies it strictly.

Tolerances are the gates that a sample set can judge: agreement and SQNR. Metric drops need the
whole validation set (one flip in 64 images is 1.6 points), and latency limits belong to the host,
so those stay in `validate`.
"""

import json
import shutil
from importlib import resources
from pathlib import Path

import numpy as np

from conversion import get_target, verified_artifact

from .artifacts import VerifiedArtifact, scan_artifacts
from .data.preprocess import Preprocessing
from .data.stream import batches
from .errors import UserError
from .evaluate import torch_runner
from .fileio import HASH_ENCODING, atomic_output, refuse_overwrite, sha256_of
from .signing import sign_files, signature_path
from .tasks import get_task
from .validation.gates import GATE_KINDS, Gates

SCHEMA = "edgemnv2-bundle/2"
PUBLIC_KEY_NAME = "signing_key.pub"
BUNDLE_SIGNATURE = "bundle.sig"  # the device runner's BUNDLE_SIGNATURE
BUNDLE_GATES = ("min_top1_agreement", "min_sqnr_db", "max_abs_error")


def runner_script() -> Path:
    """device_tests/run_bundle.py, shipped inside the package as edgemnv2/device/run_bundle.py."""
    return Path(str(resources.files("edgemnv2.device").joinpath("run_bundle.py")))


def tolerances(gates: Gates, task: str, precision: str, target: str) -> list[dict]:
    limits = gates.limits(task, precision, target)
    return [
        {"gate": name, "measure": GATE_KINDS[task][name].measure, "bound": GATE_KINDS[task][name].bound, "limit": limit}
        for name, limit in sorted(limits.items()) if name in BUNDLE_GATES
    ]


def write_bundle(verified: VerifiedArtifact, source_artifact: Path, inputs: np.ndarray, references: list[np.ndarray], labels: np.ndarray | None,
                 gates: Gates, dest: Path, force: bool, runtime, verify_key: Path | None = None, compared: list[int] | None = None,
                 sign_key: Path | None = None) -> Path:
    """Build the folder under a temporary name and rename it into place: never half a bundle.
    The artifact files come from the verified private copy, not from the artifacts folder.
    `runtime`: the target's spec (its device runtime and importable runtime modules).
    `sign_key`: sign the finished folder, bundle.json included, as one model (BUNDLE_SIGNATURE)."""
    refuse_overwrite(dest, force)
    manifest, artifact = verified.manifest, verified.path
    limits = tolerances(gates, manifest["task"], manifest["precision"], manifest["target"])
    if not limits:  # the device runner refuses a bundle that checks nothing: never make one
        raise UserError(f"the gates ({gates.source}) give {artifact.name} no limit a device can check ({', '.join(BUNDLE_GATES)}); "
                        f"add one for {manifest['task']} {manifest['precision']}")
    with atomic_output(dest, force=True) as temp:
        temp.mkdir(parents=True)
        # artifact, manifest, sidecars (and the signature, when it was verified): the private copy
        # holds nothing else, and these are the bytes that were checked
        for member in sorted(artifact.parent.iterdir()):
            (shutil.copytree if member.is_dir() else shutil.copy2)(member, temp / member.name)
        signature = signature_path(source_artifact)
        if signature.is_file() and not (temp / signature.name).exists():  # carried, unverified (no --verify-key)
            shutil.copy2(signature, temp / signature.name)
        if verify_key is not None:
            shutil.copy2(verify_key, temp / PUBLIC_KEY_NAME)
        np.save(temp / "inputs.npy", inputs.astype(np.float32), allow_pickle=False)
        for k, reference in enumerate(references):
            np.save(temp / f"reference_{k}.npy", reference.astype(np.float32), allow_pickle=False)
        if labels is not None:
            np.save(temp / "labels.npy", labels.astype(np.int64), allow_pickle=False)
        shutil.copy2(runner_script(), temp / "run_bundle.py")
        shutil.copy2(runner_script().with_name("runtime_adapters.py"), temp / "runtime_adapters.py")  # the runner's adapters
        info = {
            "schema": SCHEMA, "hash_encoding": HASH_ENCODING, "manifest": artifact.name + ".manifest.json", "samples": int(len(inputs)),
            "outputs": manifest["outputs"], "tolerances": limits,
            # the device runner never imports edgemnv2: what it needs of the task and target travels here
            "argmax_output": get_task(manifest["task"]).argmax_output, "device_runtime": runtime.device_runtime,
            "drift_outputs": compared,  # indices of the outputs the drift figures compare (null: all)
            "runtime_modules": list(runtime.runtime_modules),
            "gates_source": gates.source, "runtime_needed": manifest["runtime"],
            "runs_on": runtime.runs_on,
            "signature": signature.name if signature.is_file() else None,
            "public_key": PUBLIC_KEY_NAME if verify_key is not None else None,
            # every file but bundle.json itself: the runner refuses the bundle if one differs or is missing
            "files": {member.name: sha256_of(member) for member in sorted(temp.iterdir())},
        }
        (temp / "bundle.json").write_text(json.dumps(info, indent=2))
        if sign_key is not None:  # every file, git-like names too: the runner's strict check admits no unsigned file
            sign_files({member.name: member for member in sorted(temp.iterdir())}, sign_key, temp / BUNDLE_SIGNATURE, every_file=True)
    return dest


def _input_size(manifest: dict) -> tuple[int, int]:
    """The size the artifact takes, as its manifest records it (convert --input-size may have changed
    it from the checkpoint's); a manifest without a usable one is one line."""

    return tuple(Preprocessing.from_dict(manifest.get("preprocessing"), f"{manifest.get('artifact', 'an artifact')}'s manifest").input_size)


def _references(model, meta, data, size: tuple[int, int]) -> tuple:
    """The bundle's images (inputs.npy: --samples of them, read through the same stream as validate)
    at `size`, the fp32 model's outputs on them, their labels, and the checkpoint meta at that size."""
    import dataclasses

    if size != tuple(meta.preprocessing.input_size):
        meta = dataclasses.replace(meta, preprocessing=dataclasses.replace(meta.preprocessing, input_size=size))
        data = dataclasses.replace(data, preprocessing=meta.preprocessing, cached=None)
    reference = torch_runner(model)
    inputs, outputs = [], []
    for batch in batches(data, 16, description="fp32 references"):
        inputs.append(meta.preprocessing.normalize(batch.images))
        outputs.append(reference(inputs[-1]))
    references = [np.concatenate([o[k] for o in outputs]) for k in range(len(outputs[0]))]
    return np.concatenate(inputs), references, get_task(meta.task).bundle_labels(data), meta


def make_bundles(checkpoint: Path, model, meta, artifacts_dir: Path, data, out_dir: Path, gates: Gates, force: bool,
                 verify_key: Path | None = None, sign_key: Path | None = None) -> list[Path]:
    """`model`/`meta`: the loaded checkpoint (the caller already needed its preprocessing)."""
    checkpoint_sha = sha256_of(checkpoint)
    scan = scan_artifacts(artifacts_dir)
    if scan.problems:
        manifest_file, reason = scan.problems[0]
        raise UserError(f"{reason} (bundle makes nothing while {artifacts_dir} holds an unreadable manifest)")
    found = [(p, m) for p, m in scan.found if m.get("checkpoint_sha256") == checkpoint_sha]
    if not found:
        raise UserError(f"no artifact in {artifacts_dir} was converted from {Path(checkpoint).name}")
    task = get_task(meta.task)
    at_size: dict[tuple, tuple] = {}  # input size -> (inputs, references, labels, meta): an --input-size artifact gets its own
    written = []
    for artifact, _ in found:
        with verified_artifact(artifact, verify_key) as verified:
            size = _input_size(verified.manifest)
            if size not in at_size:
                at_size[size] = _references(model, meta, data, size)
            inputs, references, labels, size_meta = at_size[size]
            stem = artifact.name.replace(".", "_")
            spec = get_target(verified.manifest["target"]).spec
            expected, compared = references, None
            if task.postprocessed_references is not None and list(verified.manifest["outputs"]) == list(task.postprocessed_output_names):
                expected, compared = task.postprocessed_references(references, tuple(size_meta.preprocessing.input_size))
            written.append(write_bundle(verified, artifact, inputs, expected, labels, gates, Path(out_dir) / stem, force, spec, verify_key,
                                        compared, sign_key))
    return written
