"""How a model's sessions are set up: intra-op threads, session options (graph optimization, spinning) and
the batch sizes that get a session each (`execution.batch_buckets`)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from service.config import Execution, ModelConfig
from service.cpus import cpu_budget
from service.errors import ModelLoadError
from service.runtime.providers import CUDA

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def intra_op_threads(execution: Execution) -> tuple[int, str]:
    """A session's intra-op pool size, and where it comes from (for the load log): `execution.intra_op_threads`,
    else the container's CPU limit or the CPU affinity (service/cpus.py), else 0: ONNX Runtime's default, a
    thread per core."""
    if execution.intra_op_threads:
        return execution.intra_op_threads, "execution.intra_op_threads"
    budget = cpu_budget()
    if not budget.threads:
        return 0, "ONNX Runtime's default (no container CPU limit)"
    if budget.limit is None:
        return budget.threads, f"CPU affinity: {budget.affinity} of the machine's {budget.machine} CPUs"
    return budget.threads, f"container CPU limit of {budget.limit:g} CPUs, {budget.affinity} CPUs in affinity"


def session_options(execution: Execution, intra_op_threads: int, lone: bool = False) -> ort.SessionOptions:
    """`lone`: the options of the session for lone requests (`spinning: lone_runs`): its threads spin during
    runs and for `execution.lone_spin_us` after each."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = execution.inter_op_threads
    opts.graph_optimization_level = _OPT_LEVELS[execution.graph_optimization_level]
    spin = "1" if lone or execution.spinning in ("during_runs", "always") else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
    opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
    if lone and execution.lone_spin_us:
        for pool in ("intra_op", "inter_op"):
            opts.add_session_config_entry(f"session.{pool}.spin_duration_us", str(execution.lone_spin_us))
    elif lone or execution.spinning == "during_runs":
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    opts.log_severity_level = 3
    return opts


def bucket_sizes(config: ModelConfig, provider: str) -> list[int]:
    """`execution.batch_buckets` resolved for a model whose session runs on `provider`: [] for one session."""
    top = config.max_batch_size
    chosen = config.execution.batch_buckets
    if not config.batched or top <= 1:
        return []
    if chosen is None:
        if provider != CUDA:
            return []
        chosen = tuple(8**k for k in range(top.bit_length()) if 8**k < top)
    if not chosen:
        return []
    if chosen[-1] > top:
        raise ModelLoadError(
            f"execution.batch_buckets {list(chosen)} go beyond max_batch_size {top}; drop the larger sizes"
        )
    return list(chosen) if chosen[-1] == top else [*chosen, top]


def pad_batch(arr: np.ndarray, size: int) -> np.ndarray:
    """`arr` with copies of its first item appended up to `size` items: real data, so no padded row meets a
    division by zero or an all-masked softmax that a row of zeros could."""
    return np.concatenate([arr, np.repeat(arr[:1], size - len(arr), axis=0)])
