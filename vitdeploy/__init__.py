"""vitdeploy: export EfficientViT-M and SparseViT to ONNX / TensorRT, check parity and latency, serve."""

__version__ = "0.1.0"
