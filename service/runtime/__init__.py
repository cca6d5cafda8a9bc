"""ONNX Runtime: execution-provider choice (providers.py), session set-up (options.py), a model version's session
and its warm-up (session.py), the KV-cache step model's contract (step_model.py).

Knows nothing of gRPC or batching: a `ModelSession` runs a feed dict and returns named outputs.
"""

from service.runtime.options import bucket_sizes, intra_op_threads, pad_batch, session_options
from service.runtime.providers import (
    CPU,
    CUDA,
    available_providers,
    check_device,
    choose_providers,
    with_options,
)
from service.runtime.session import ModelSession, check_signature
from service.runtime.step_model import StepModel, load_step_model

__all__ = [
    "CPU",
    "CUDA",
    "ModelSession",
    "StepModel",
    "available_providers",
    "bucket_sizes",
    "check_device",
    "check_signature",
    "choose_providers",
    "intra_op_threads",
    "load_step_model",
    "pad_batch",
    "session_options",
    "with_options",
]
