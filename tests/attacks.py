"""Hostile files for the trust tests, built with the formats' own tools (not transcribed by hand).

Each payload, if it ever runs, creates a marker file: the tests assert the marker never appears
through edgemnv2, and (for the .pt2) that it DOES appear through torch.export.load, so the attack
is real and the test would have failed on the code before the fix.
"""

import io
import json
import pickle
import shutil
import struct
import zipfile
from pathlib import Path

import torch

from edgemnv2.artifacts import artifact_files, manifest_path
from edgemnv2.fileio import sha256_of
from edgemnv2.signing import signature_path


class _TouchMarker:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def malicious_pt2(dest: Path, marker: Path) -> Path:
    """A genuine torch.export archive whose weights config says use_pickle, with a pickle payload:
    torch 2.14's torch.export.load hands it to torch.load(weights_only=False)."""
    program = torch.export.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    members = {}
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        for name in archive.namelist():
            members[name] = archive.read(name)
    config_name = next(n for n in members if n.endswith("model_weights_config.json"))
    config = json.loads(members[config_name])
    config["config"]["weight"]["use_pickle"] = True
    members[config_name] = json.dumps(config).encode()
    weight_file = config_name.rsplit("/", 1)[0] + "/" + config["config"]["weight"]["path_name"]
    members[weight_file] = pickle.dumps(_TouchMarker(marker))
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return dest


def _rewrite_program(path: Path, edit) -> None:
    """Edit the JSON program inside a program file (safetensors header metadata), keeping the tensors."""
    data = path.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + size])
    document = json.loads(header["__metadata__"]["edgemnv2_program"])
    edit(document)
    header["__metadata__"]["edgemnv2_program"] = json.dumps(document)
    new_header = json.dumps(header).encode()
    new_header += b" " * (-len(new_header) % 8)
    path.write_bytes(struct.pack("<Q", len(new_header)) + new_header + data[8 + size :])


def program_with_guards_code(path: Path, marker: Path) -> None:
    """guards_code is passed to exec() by ExportedProgram.module()."""
    _rewrite_program(path, lambda doc: doc.__setitem__("guards_code", [f"__import__('pathlib').Path({str(marker)!r}).touch() or True"]))


def program_with_foreign_operator(path: Path, marker: Path) -> None:
    """torch's deserializer resolves any 'torch.x.y' target with getattr: here, a Python function."""
    def edit(doc):
        doc["graph_module"]["graph"]["nodes"][0]["target"] = "torch.hub.load"
    _rewrite_program(path, edit)


def copy_artifact(artifact: Path, manifest: dict, dest_dir: Path) -> Path:
    """Copy one artifact with its manifest, sidecars and signature into dest_dir."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    files = artifact_files(artifact, manifest)
    if signature_path(artifact).is_file():
        files[signature_path(artifact).name] = signature_path(artifact)
    for name, source in files.items():
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, dest_dir / name)
    return dest_dir / artifact.name


def rewrite_manifest(artifact: Path, **changes) -> dict:
    """What an attacker who can write the folder does: change files, then fix up the manifest."""
    manifest_file = manifest_path(artifact)
    manifest = json.loads(manifest_file.read_text())
    manifest.update(changes)
    manifest["artifact_sha256"] = sha256_of(artifact)
    for entry in (manifest.get("sidecars") or {}).values():
        entry["sha256"] = sha256_of(artifact.with_name(entry["file"]))
    manifest_file.write_text(json.dumps(manifest, indent=2))
    return manifest
