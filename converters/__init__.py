"""File-to-file steps, each usable alone: t7 import, ONNX export, precision, TensorRT build."""
