#!/usr/bin/env bash
# Push one edgemnv2 bundle to an Android device over adb and run it there.
#
#   device_tests/android/run_on_android.sh BUNDLE_DIR [THREADS]
#
# What runs on the phone:
#   * if the device has python3 with numpy (e.g. Termux: pkg install python python-numpy) and the
#     bundle's runtime, the bundle's own run_bundle.py: full drift + latency JSON, like on the host;
#   * otherwise, for latency only, the runtime's native benchmark binary, if you pushed it to
#     /data/local/tmp (drift is then NOT measured, and this script says so):
#       .tflite  benchmark_model   (TFLite/LiteRT prebuilt "benchmark_model" for android_aarch64,
#                                   https://ai.google.dev/edge/litert/models/measurement)
#       .pte     executor_runner   (build ExecuTorch with the Android NDK:
#                                   cmake -DCMAKE_TOOLCHAIN_FILE=$ANDROID_NDK/build/cmake/android.toolchain.cmake
#                                   -DANDROID_ABI=arm64-v8a -DEXECUTORCH_BUILD_XNNPACK=ON ..;
#                                   see the ExecuTorch "Building an ExecuTorch Android demo" docs)
# Without adb or a device it explains and exits 0: nothing is pretended.
set -euo pipefail
BUNDLE="${1:?usage: run_on_android.sh BUNDLE_DIR [THREADS]}"
THREADS="${2:-4}"
REMOTE=/data/local/tmp/edgemnv2
if ! command -v adb >/dev/null 2>&1; then
  echo "adb is not installed: no Android run was attempted. Install Android platform-tools to use this script."
  exit 0
fi
if [ "$(adb devices | awk 'NR>1 && $2=="device"' | wc -l)" -eq 0 ]; then
  echo "adb found, but no device is connected (adb devices lists none): no Android run was attempted."
  exit 0
fi
[ -f "$BUNDLE/bundle.json" ] || { echo "not a bundle (no bundle.json): $BUNDLE" >&2; exit 3; }
NAME=$(basename "$BUNDLE")
adb shell mkdir -p "$REMOTE"
adb push "$BUNDLE" "$REMOTE/" >/dev/null
if adb shell 'command -v python3 >/dev/null && python3 -c "import numpy"' >/dev/null 2>&1; then
  adb shell "cd $REMOTE/$NAME && python3 run_bundle.py . --threads $THREADS"
  adb pull "$REMOTE/$NAME/result.json" "$BUNDLE/result.android.json" >/dev/null
  echo "result: $BUNDLE/result.android.json"
  exit 0
fi
ARTIFACT=$(python3 -c "import json,sys; b=json.load(open('$BUNDLE/bundle.json')); print(json.load(open('$BUNDLE/'+b['manifest']))['artifact'])")
case "$ARTIFACT" in
  *.tflite) BIN=benchmark_model; ARGS="--graph=$REMOTE/$NAME/$ARTIFACT --num_threads=$THREADS --use_xnnpack=true" ;;
  *.pte)    BIN=executor_runner; ARGS="--model_path=$REMOTE/$NAME/$ARTIFACT --num_executions=20" ;;
  *) echo "no native runner for $ARTIFACT on Android; drift and latency NOT measured"; exit 0 ;;
esac
if ! adb shell "test -x /data/local/tmp/$BIN"; then
  echo "the device has no python3+numpy and no /data/local/tmp/$BIN: nothing was run (see the header of this script for how to get $BIN)."
  exit 0
fi
echo "latency only ($BIN); drift NOT measured on this device:"
adb shell "/data/local/tmp/$BIN $ARGS"
