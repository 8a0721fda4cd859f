"""edgemnv2: MobileNetV2 classifiers and CenterNet detectors, quantized and deployed to edge runtimes."""

__version__ = "0.1.0"
