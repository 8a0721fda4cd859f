#!/usr/bin/env bash
# An x86 edge box's environment for OpenVINO bundles: Python + numpy + openvino and nothing else
# (openvino-telemetry comes with the wheel; the runtime never calls it), cached (pinned_venv.sh).
# Prints the environment's python on stdout.
exec bash "$(dirname "$0")/pinned_venv.sh" openvino "import numpy, openvino" numpy==2.4.6 openvino==2026.4.1 openvino-telemetry==2025.2.0
