#!/usr/bin/env bash
# An x86 edge box's environment for OpenVINO bundles: Python + numpy + openvino and nothing else
# (openvino-telemetry comes with the wheel; the runtime never calls it). Cached outside the
# repository, keyed by the pins, so CI pays for it once. Prints the environment's python on stdout.
set -euo pipefail
PINS="numpy==2.4.6 openvino==2026.4.1 openvino-telemetry==2025.2.0"
PYTHON="${PYTHON:-python3.11}"
KEY=$(echo "$PINS $($PYTHON -c 'import sys; print(sys.version_info[:2])')" | sha256sum | cut -c1-12)
ENV_DIR="${EDGEMNV2_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgemnv2}/venv-openvino-$KEY"
if [ ! -f "$ENV_DIR/.ready" ]; then   # .ready is written last: a half-built env is rebuilt
  rm -rf "$ENV_DIR"
  "$PYTHON" -m venv "$ENV_DIR" >&2
  "$ENV_DIR/bin/pip" install --quiet --disable-pip-version-check $PINS >&2
  "$ENV_DIR/bin/python" -c "import numpy, openvino" >&2
  touch "$ENV_DIR/.ready"
fi
echo "$ENV_DIR/bin/python"
