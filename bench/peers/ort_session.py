"""An ONNX Runtime session from a plain dict of options. Imports nothing but onnxruntime, so MLServer's
virtualenv can use it too; `bench/peers/common.py` reads the dict off the SessionOptions deepserve builds."""

from __future__ import annotations

from typing import Any

import onnxruntime as ort


def session(model_file: str, options: dict[str, Any]) -> ort.InferenceSession:
    """options: intra_op_threads, inter_op_threads, graph_optimization_level (a GraphOptimizationLevel name)
    and config_entries (session config keys and values)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(options.get("intra_op_threads", 0))
    opts.inter_op_num_threads = int(options.get("inter_op_threads", 0))
    opts.graph_optimization_level = ort.GraphOptimizationLevel.__members__[
        options.get("graph_optimization_level", "ORT_ENABLE_ALL")
    ]
    for key, value in options.get("config_entries", {}).items():
        opts.add_session_config_entry(key, value)
    return ort.InferenceSession(model_file, opts, providers=["CPUExecutionProvider"])
