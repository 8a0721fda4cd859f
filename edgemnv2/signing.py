"""Authenticity: OpenSSF model signing (the `model-signing` package, key-based, offline).

`convert --sign-key KEY` signs each artifact together with its manifest and sidecars: the files are
staged under their final names in a private folder and signed as one model, so the signature
(`<artifact>.sig`, an OpenSSF/Sigstore bundle) names every file it covers by relative path. It
therefore verifies wherever the same files sit side by side: the artifacts folder, a reader's
private copy, or a device bundle.

model-signing cannot share this environment (its sigstore dependencies pin typing-extensions
above what litert-torch's converter allows), so edgemnv2 runs its official command line:
  1. EDGEMNV2_MODEL_SIGNING=/path/to/model_signing, if set;
  2. `python -m model_signing`, if this interpreter can import it;
  3. `model_signing` on PATH (e.g. `pipx install model-signing==1.1.1`);
  4. the project's pinned venv, `.venv-signing/` beside the source tree (`make setup` builds it).
"""

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import CheckFailed, UserError

SIGNATURE_SUFFIX = ".sig"
TOOL_ENV = "EDGEMNV2_MODEL_SIGNING"
PROJECT_VENV = Path(__file__).resolve().parents[1] / ".venv-signing" / "bin" / "model_signing"
TIMEOUT_S = 300


class SignatureRefused(CheckFailed):
    """Unsigned, wrongly signed or tampered: the artifact is not trusted (exit 1)."""


def signature_path(artifact: Path) -> Path:
    return Path(artifact).with_name(Path(artifact).name + SIGNATURE_SUFFIX)


def tool() -> list[str]:
    """The argv prefix that runs model-signing's command line; one-line error when there is none."""
    configured = os.environ.get(TOOL_ENV)
    if configured:
        if not Path(configured).is_file():
            raise UserError(f"{TOOL_ENV}={configured} does not exist")
        return [configured]
    if importlib.util.find_spec("model_signing") is not None:
        return [sys.executable, "-m", "model_signing"]
    on_path = shutil.which("model_signing")
    if on_path:
        return [on_path]
    if PROJECT_VENV.is_file():
        return [str(PROJECT_VENV)]
    raise UserError("signing needs the model-signing tool: run `make setup` (it builds .venv-signing/), "
                    f"`pipx install model-signing==1.1.1`, or set {TOOL_ENV} to its model_signing command")


def _key(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    return path.resolve()


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"model_signing did not answer within {TIMEOUT_S} s") from None


def _last_line(done: subprocess.CompletedProcess) -> str:
    lines = [line.strip() for line in (done.stderr + "\n" + done.stdout).splitlines() if line.strip()]
    return lines[-1][:400] if lines else f"exit code {done.returncode}"


def _stage(files: dict[str, Path], stage: Path) -> None:
    """Hard links (copies across devices) under the final names: what the signature will name."""
    for name, source in files.items():
        if Path(name).name != name:
            raise ValueError(f"not a plain file name: {name!r}")
        target = stage / name
        try:
            if source.is_dir():
                shutil.copytree(source, target, copy_function=os.link)
            else:
                os.link(source, target)
        except OSError:
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)


def sign_files(files: dict[str, Path], private_key: Path, signature_dest: Path, every_file: bool = False) -> None:
    """Sign `files` ({final name: current path}) as one model; write the signature at signature_dest.
    every_file: the signature records no ignored paths (model-signing otherwise records git's names,
    .gitignore and the like, which a verifier then ignores: files an attacker could add unseen)."""
    key = _key(private_key, "signing key")
    argv_prefix = tool()
    # named like every temporary file of a writer (fileio.temp_path): swept if this process is killed
    with tempfile.TemporaryDirectory(prefix=f".partial-{os.getpid()}-sign-", dir=signature_dest.parent) as stage:
        _stage(files, Path(stage))
        done = _run([*argv_prefix, "sign", "key", stage, *(["--no-ignore-git-paths"] if every_file else []),
                     "--private_key", str(key), "--signature", str(signature_dest)])
    if done.returncode != 0 or not signature_dest.is_file():
        raise CheckFailed(f"signing failed: {_last_line(done)}")


def verify_folder(folder: Path, signature: Path, public_key: Path) -> None:
    """Every file in `folder` (but the signature) must be exactly what the signature names: no file
    missing, none extra, none changed, and signed by the key's owner."""
    key = _key(public_key, "verification key")
    done = _run([*tool(), "verify", "key", str(folder), "--signature", str(signature), "--public_key", str(key)])
    if done.returncode != 0:
        raise SignatureRefused(f"signature check failed: {_last_line(done)}")
