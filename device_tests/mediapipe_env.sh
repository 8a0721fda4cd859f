#!/usr/bin/env bash
# MediaPipe Tasks in its own venv (requirements/mediapipe.txt, exact pins, no resolver), cached
# outside the repository and keyed by the pins, so CI pays for it once. Prints its python on stdout.
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PINS_FILE="$HERE/requirements/mediapipe.txt"
PYTHON="${PYTHON:-python3.11}"
KEY=$( (cat "$PINS_FILE"; $PYTHON -c 'import sys; print(sys.version_info[:2])') | sha256sum | cut -c1-12)
ENV_DIR="${EDGEMNV2_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgemnv2}/venv-mediapipe-$KEY"
# one builder at a time (parallel test workers, two shells): the others wait, then find .ready
mkdir -p "$(dirname "$ENV_DIR")"
exec 9>"$ENV_DIR.lock"
flock 9
if [ ! -f "$ENV_DIR/.ready" ]; then   # .ready is written last: a half-built env is rebuilt
  rm -rf "$ENV_DIR"
  "$PYTHON" -m venv "$ENV_DIR" >&2
  "$ENV_DIR/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$PINS_FILE" >&2
  "$ENV_DIR/bin/python" -c "from mediapipe.tasks.python import vision" >&2
  touch "$ENV_DIR/.ready"
fi
echo "$ENV_DIR/bin/python"
