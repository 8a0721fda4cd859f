#!/usr/bin/env bash
# A minimal environment for an outside client: Python + exact pins and nothing else, cached outside
# the repository and keyed by the pins, so CI pays for it once. Prints the environment's python.
#   usage: pinned_venv.sh NAME "PYTHON CHECK" PIN [PIN ...]
set -euo pipefail
NAME="$1"; CHECK="$2"; shift 2
PINS="$*"
PYTHON="${PYTHON:-python3.11}"
KEY=$(echo "$PINS $($PYTHON -c 'import sys; print(sys.version_info[:2])')" | sha256sum | cut -c1-12)
ENV_DIR="${EDGEMNV2_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgemnv2}/venv-$NAME-$KEY"
# one builder at a time (parallel test workers, two shells): the others wait, then find .ready
mkdir -p "$(dirname "$ENV_DIR")"
exec 9>"$ENV_DIR.lock"
flock 9
if [ ! -f "$ENV_DIR/.ready" ]; then   # .ready is written last: a half-built env is rebuilt
  rm -rf "$ENV_DIR"
  "$PYTHON" -m venv "$ENV_DIR" >&2
  "$ENV_DIR/bin/pip" install --quiet --disable-pip-version-check $PINS >&2
  "$ENV_DIR/bin/python" -c "$CHECK" >&2
  touch "$ENV_DIR/.ready"
fi
echo "$ENV_DIR/bin/python"
