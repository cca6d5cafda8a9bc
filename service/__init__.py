"""deepserve: a model-serving gRPC server on ONNX Runtime."""

__version__ = "0.1.0"
