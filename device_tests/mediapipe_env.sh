#!/usr/bin/env bash
# MediaPipe Tasks in its own venv (requirements/mediapipe.txt, exact pins, no resolver), cached
# (pinned_venv.sh, keyed by the pins). Prints its python on stdout.
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PINS=$(grep -vE '^[[:space:]]*(#|$)' "$HERE/requirements/mediapipe.txt")
# shellcheck disable=SC2086  # one pin per word
exec bash "$HERE/device_tests/pinned_venv.sh" mediapipe "from mediapipe.tasks.python import vision" --no-deps $PINS
