#!/usr/bin/env bash
# A minimal "edge board" environment: Python + numpy<2 + tflite-runtime 2.14.0 (the last release)
# and nothing else, cached (pinned_venv.sh). Prints the environment's python on stdout.
exec bash "$(dirname "$0")/pinned_venv.sh" tflite-runtime "import numpy, tflite_runtime.interpreter" numpy==1.26.4 tflite-runtime==2.14.0
