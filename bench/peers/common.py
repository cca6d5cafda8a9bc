"""What the two minimal peers share: a KServe V2 servicer with the RPCs perf_analyzer calls besides ModelInfer
(ServerLive/Ready/Metadata, ModelReady, ModelMetadata, ModelConfig), the tensor decoding and encoding, and `serve()`.

The ONNX Runtime session gets the options deepserve gives the model (from `execution` in its config.yaml, by
deepserve's own service.runtime.session_options), with `intra_op_threads` 0 there meaning 2 here (issue 12's
machine has 2 cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.peers.ort_session import session  # noqa: E402
from service.config import DATATYPES, ModelConfig, load_model_config  # noqa: E402
from service.grpc._generated.inference import grpc_service_pb2 as pb  # noqa: E402
from service.grpc._generated.inference import grpc_service_pb2_grpc as pb_grpc  # noqa: E402
from service.grpc._generated.inference import model_config_pb2 as mc  # noqa: E402
from service.runtime import session_options  # noqa: E402

DEFAULT_INTRA_OP_THREADS = 2
# The session config entries deepserve may set (ONNX Runtime cannot list those that are set).
SESSION_CONFIG_KEYS = (
    "session.intra_op.allow_spinning",
    "session.inter_op.allow_spinning",
    "session.force_spinning_stop",
    "session.intra_op.spin_duration_us",
    "session.inter_op.spin_duration_us",
    "session.dynamic_block_base",
    "session.set_denormal_as_zero",
    "session.disable_prepacking",
    "session.use_env_allocators",
)


def ort_options(config: ModelConfig, intra_op_threads: int = DEFAULT_INTRA_OP_THREADS) -> dict[str, Any]:
    """The session options deepserve gives this model (service.runtime.session_options, whatever they are in
    this checkout), as a plain dict for bench/peers/ort_session.py; `intra_op_threads` where the config has 0."""
    threads = config.execution.intra_op_threads or intra_op_threads
    opts = session_options(config.execution, threads)
    entries = {}
    for key in SESSION_CONFIG_KEYS:
        try:
            entries[key] = opts.get_session_config_entry(key)
        except RuntimeError:  # not set
            continue
    return {
        "intra_op_threads": opts.intra_op_num_threads,
        "inter_op_threads": opts.inter_op_num_threads,
        "graph_optimization_level": opts.graph_optimization_level.name,
        "config_entries": entries,
    }


def _shape(config: ModelConfig, dims: tuple[int, ...]) -> list[int]:
    return ([-1] if config.batched else []) + list(dims)


def metadata_response(name: str, config: ModelConfig) -> pb.ModelMetadataResponse:
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=name,
        versions=["1"],
        platform="onnxruntime_onnx",
        inputs=[tensor(name=t.name, datatype=t.datatype, shape=_shape(config, t.dims)) for t in config.inputs],
        outputs=[tensor(name=t.name, datatype=t.datatype, shape=_shape(config, t.dims)) for t in config.outputs],
    )


def config_response(name: str, config: ModelConfig) -> pb.ModelConfigResponse:
    """The fields perf_analyzer reads: max_batch_size, inputs and outputs with their types and dims."""
    kind = {k: mc.DataType.Name(mc.DataType.Value(f"TYPE_{k}")) for k in DATATYPES if k != "BYTES"}
    kind["BYTES"] = "TYPE_STRING"
    return pb.ModelConfigResponse(
        config=mc.ModelConfig(
            name=name,
            platform="onnxruntime_onnx",
            backend="onnxruntime",
            max_batch_size=config.max_batch_size,
            input=[mc.ModelInput(name=t.name, data_type=kind[t.datatype], dims=t.dims) for t in config.inputs],
            output=[mc.ModelOutput(name=t.name, data_type=kind[t.datatype], dims=t.dims) for t in config.outputs],
        )
    )


class Statistics:
    """The ModelStatistics that perf_analyzer reads for its server-side breakdown: requests answered, and the time
    of the model runs they were in (as Triton counts it: each request of a batch is charged the batch's run)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.runs = 0
        self.compute_ns = 0

    def add(self, requests: int, run_ns: int) -> None:
        with self._lock:
            self.requests += requests
            self.runs += 1
            self.compute_ns += run_ns * requests

    def response(self, name: str) -> pb.ModelStatisticsResponse:
        with self._lock:
            requests, runs, compute_ns = self.requests, self.runs, self.compute_ns
        duration = pb.StatisticDuration
        return pb.ModelStatisticsResponse(
            model_stats=[
                pb.ModelStatistics(
                    name=name,
                    version="1",
                    inference_count=requests,
                    execution_count=runs,
                    inference_stats=pb.InferStatistics(
                        success=duration(count=requests, ns=compute_ns),
                        queue=duration(count=requests),
                        compute_input=duration(count=requests),
                        compute_infer=duration(count=requests, ns=compute_ns),
                        compute_output=duration(count=requests),
                    ),
                )
            ]
        )


class Peer(pb_grpc.GRPCInferenceServiceServicer):
    """One model, one ONNX Runtime session; subclasses implement ModelInfer, running the model through `run`."""

    def __init__(self, model_dir: Path, intra_op_threads: int, ort_defaults: bool = False) -> None:
        """`ort_defaults`: ONNX Runtime's own session options (its threads spin) but for the thread count,
        instead of the ones deepserve gives the model's batches."""
        self.name = model_dir.name
        self.config = load_model_config(model_dir)
        self.options = ort_options(self.config, intra_op_threads)
        if ort_defaults:
            self.options = {**self.options, "config_entries": {}}
        self.session = session(str(model_dir / "1" / "model.onnx"), self.options)
        self.input_name = self.config.inputs[0].name
        self.metadata = metadata_response(self.name, self.config)
        self.model_config = config_response(self.name, self.config)
        self.statistics = Statistics()

    def run(self, batch: np.ndarray, requests: int = 1) -> list[np.ndarray]:
        """The session on one input, timed into the statistics (a few hundred ns: the time of two clock reads)."""
        start = time.perf_counter_ns()
        outputs = self.session.run(None, {self.input_name: batch})
        self.statistics.add(requests, time.perf_counter_ns() - start)
        return outputs

    def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=type(self).__name__, version="0", extensions=["statistics"])

    def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=request.name == self.name)

    def ModelMetadata(self, request: Any, context: Any) -> pb.ModelMetadataResponse:
        return self.metadata

    def ModelConfig(self, request: Any, context: Any) -> pb.ModelConfigResponse:
        return self.model_config

    def ModelStatistics(self, request: Any, context: Any) -> pb.ModelStatisticsResponse:
        """Only the model runs are timed: the success time is theirs too, so perf_analyzer shows no overhead."""
        return self.statistics.response(self.name)

    def decode(self, request: pb.ModelInferRequest) -> np.ndarray:
        tensor = request.inputs[0]
        dtype = np.dtype(DATATYPES[tensor.datatype])
        if request.raw_input_contents:
            return np.frombuffer(request.raw_input_contents[0], dtype=dtype).reshape(tensor.shape)
        return np.asarray(tensor.contents.fp32_contents, dtype=dtype).reshape(tensor.shape)

    def encode(self, outputs: list[np.ndarray]) -> pb.ModelInferResponse:
        response = pb.ModelInferResponse(model_name=self.name, model_version="1")
        for spec, out in zip(self.config.outputs, outputs, strict=True):
            response.outputs.add(name=spec.name, datatype=spec.datatype, shape=out.shape)
            response.raw_output_contents.append(out.tobytes())
        return response


RPCS = (
    "ModelInfer",
    "ModelMetadata",
    "ModelConfig",
    "ModelStatistics",
    "ModelReady",
    "ServerMetadata",
    "ServerLive",
    "ServerReady",
)
"""The RPCs perf_analyzer calls."""


def aio_variant(peer_class: type[Peer]) -> type[Peer]:
    """`peer_class` with its RPCs as coroutines, for grpc.aio: each runs the sync method on the event loop, as
    deepserve runs a lone request there."""

    def coroutine(name: str) -> Any:
        sync = getattr(peer_class, name)

        async def method(self: Peer, request: Any, context: Any) -> Any:
            return sync(self, request, context)

        method.__name__ = name
        return method

    return type(f"Aio{peer_class.__name__}", (peer_class,), {name: coroutine(name) for name in RPCS})


def serve(peer_class: type[Peer], default_workers: int, aio: bool = False) -> None:
    """`python bench/peers/<peer>.py --port P [--model-dir models/digits_cnn]`: serves until killed. With `aio`,
    `--aio` serves the same peer on grpc.aio on uvloop (as deepserve does; `aio_variant`)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "digits_cnn")
    parser.add_argument("--intra-op-threads", type=int, default=DEFAULT_INTRA_OP_THREADS)
    parser.add_argument("--workers", type=int, default=default_workers, help="gRPC handler threads")
    parser.add_argument("--ort-defaults", action="store_true", help="ONNX Runtime's own options (spinning)")
    if aio:
        parser.add_argument("--aio", action="store_true", help="grpc.aio on uvloop instead of a sync grpcio server")
    args = parser.parse_args()
    on_aio = aio and args.aio
    chosen = aio_variant(peer_class) if on_aio else peer_class
    peer = chosen(args.model_dir, args.intra_op_threads, args.ort_defaults)
    if on_aio:
        import uvloop

        uvloop.run(_serve_aio(peer, args.port))
        return
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(peer, server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(json.dumps({"peer": chosen.__name__, "port": args.port, "ort": peer.options}), flush=True)
    server.wait_for_termination()


async def _serve_aio(peer: Peer, port: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(peer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()
