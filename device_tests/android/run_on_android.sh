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
#
# Exit codes: 0 the bundle ran on the device (with python: its tolerances were met); 1 it ran and a
# tolerance broke; 2 nothing ran (no adb, no device, no python+numpy and no native runner);
# 3 not a bundle, or a name in it that is not a plain file name.
# Names read from the bundle (its folder, its artifact) reach `adb shell` only after they match
# SAFE_NAME, and always inside single quotes: a crafted manifest cannot inject shell commands.
set -euo pipefail
BUNDLE="${1:?usage: run_on_android.sh BUNDLE_DIR [THREADS]}"
THREADS="${2:-4}"
REMOTE=/data/local/tmp/edgemnv2
SAFE_NAME='^[A-Za-z0-9][A-Za-z0-9._-]*$'
NOTHING_RAN=2
BAD_BUNDLE=3

[[ "$THREADS" =~ ^[0-9]+$ ]] || { echo "THREADS must be a number, not: $THREADS" >&2; exit $BAD_BUNDLE; }
[ -f "$BUNDLE/bundle.json" ] || { echo "not a bundle (no bundle.json): $BUNDLE" >&2; exit $BAD_BUNDLE; }
NAME=$(basename -- "$BUNDLE")
[[ "$NAME" =~ $SAFE_NAME ]] || { echo "bundle folder name is not a plain name: $NAME" >&2; exit $BAD_BUNDLE; }
# The artifact's name comes from the manifest: read it with python, passing the path as an
# argument (never as source text), then validate it.
ARTIFACT=$(python3 - "$BUNDLE" <<'PY'
import json, os, sys
bundle = sys.argv[1]
info = json.load(open(os.path.join(bundle, "bundle.json")))
print(json.load(open(os.path.join(bundle, os.path.basename(info["manifest"]))))["artifact"])
PY
) || { echo "cannot read the bundle's manifest: $BUNDLE" >&2; exit $BAD_BUNDLE; }
[[ "$ARTIFACT" =~ $SAFE_NAME ]] || { echo "the manifest's artifact name is not a plain file name: $ARTIFACT" >&2; exit $BAD_BUNDLE; }

if ! command -v adb >/dev/null 2>&1; then
  echo "adb is not installed: nothing ran. Install Android platform-tools to use this script." >&2
  exit $NOTHING_RAN
fi
if [ "$(adb devices | awk 'NR>1 && $2=="device"' | wc -l)" -eq 0 ]; then
  echo "adb found, but no device is connected (adb devices lists none): nothing ran." >&2
  exit $NOTHING_RAN
fi
DIR="$REMOTE/$NAME"
adb shell "mkdir -p '$REMOTE'"
adb push "$BUNDLE" "$REMOTE/" >/dev/null
if adb shell 'command -v python3 >/dev/null && python3 -c "import numpy"' >/dev/null 2>&1; then
  set +e
  adb shell "cd '$DIR' && python3 run_bundle.py . --threads '$THREADS'; echo \"exit=\$?\"" | tee "$BUNDLE/android.log"
  set -e
  adb pull "$DIR/result.json" "$BUNDLE/result.android.json" >/dev/null
  echo "result: $BUNDLE/result.android.json"
  CODE=$(sed -n 's/^exit=\([0-9]*\).*/\1/p' "$BUNDLE/android.log" | tail -1)
  exit "${CODE:-4}"
fi
case "$ARTIFACT" in
  *.tflite) BIN=benchmark_model; ARGS=("--graph=$DIR/$ARTIFACT" "--num_threads=$THREADS" "--use_xnnpack=true") ;;
  *.pte)    BIN=executor_runner; ARGS=("--model_path=$DIR/$ARTIFACT" "--num_executions=20") ;;
  *) echo "no native runner for $ARTIFACT on Android; nothing ran" >&2; exit $NOTHING_RAN ;;
esac
if ! adb shell "test -x '/data/local/tmp/$BIN'"; then
  echo "the device has no python3+numpy and no /data/local/tmp/$BIN: nothing ran (see the header of this script for how to get $BIN)." >&2
  exit $NOTHING_RAN
fi
echo "latency only ($BIN); drift NOT measured on this device:"
QUOTED=$(printf " '%s'" "${ARGS[@]}")
adb shell "'/data/local/tmp/$BIN'$QUOTED"
