#!/usr/bin/env bash
# A minimal "edge board" environment: Python + numpy<2 + tflite-runtime 2.14.0 (the last release)
# and nothing else. Cached outside the repository, keyed by the pins, so CI pays for it once.
# Prints the environment's python on stdout.
set -euo pipefail
PINS="numpy==1.26.4 tflite-runtime==2.14.0"
PYTHON="${PYTHON:-python3.11}"
KEY=$(echo "$PINS $($PYTHON -c 'import sys; print(sys.version_info[:2])')" | sha256sum | cut -c1-12)
ENV_DIR="${EDGEMNV2_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgemnv2}/venv-tflite-runtime-$KEY"
if [ ! -f "$ENV_DIR/.ready" ]; then   # .ready is written last: a half-built env is rebuilt
  rm -rf "$ENV_DIR"
  "$PYTHON" -m venv "$ENV_DIR" >&2
  "$ENV_DIR/bin/pip" install --quiet --disable-pip-version-check $PINS >&2
  "$ENV_DIR/bin/python" -c "import numpy, tflite_runtime.interpreter" >&2
  touch "$ENV_DIR/.ready"
fi
echo "$ENV_DIR/bin/python"
