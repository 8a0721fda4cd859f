"""Classify images with MediaPipe Tasks' ImageClassifier, exactly as an app does: the .tflite as it
is, no options beyond the model path. Runs in the MediaPipe venv (device_tests/mediapipe_env.sh).

    python mediapipe_classify.py MODEL.tflite IMAGE_LIST.txt   -> JSON on stdout: [[index, name, score], ...]
"""

import json
import sys

from mediapipe import Image
from mediapipe.tasks.python import vision
from mediapipe.tasks.python.core.base_options import BaseOptions


def main() -> int:
    model, image_list = sys.argv[1], sys.argv[2]
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=model), max_results=1)
    results = []
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for path in open(image_list).read().split("\n"):
            if path:
                top = classifier.classify(Image.create_from_file(path)).classifications[0].categories[0]
                results.append([top.index, top.category_name, top.score])
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
