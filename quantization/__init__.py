"""Folding and post-training int8 quantization for every model in the edgemnv2 registry."""
