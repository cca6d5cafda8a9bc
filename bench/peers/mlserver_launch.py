"""Starts MLServer (`mlserver start FOLDER`) with a ModelConfig RPC added next to its V2 gRPC service.

    .bench-venvs/mlserver/bin/python bench/peers/mlserver_launch.py FOLDER MODEL_CONFIG_RESPONSE_FILE

MLServer 1.7.1 has no ModelConfig RPC, and perf_analyzer calls it before it measures. The answer is a
serialized `inference.ModelConfigResponse`, written by bench/peers_table.py with deepserve's stubs (MLServer's
virtualenv has its own `inference` protos, so this process only hands back the bytes).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import grpc
from mlserver.cli import main  # type: ignore[import-not-found]
from mlserver.grpc import server as mlserver_grpc  # type: ignore[import-not-found]


def add_model_config(answer: bytes) -> None:
    create_server = mlserver_grpc.GRPCServer._create_server

    async def model_config(request: bytes, context: Any) -> bytes:
        return answer

    def patched(self: Any) -> Any:
        server = create_server(self)
        handlers = {"ModelConfig": grpc.unary_unary_rpc_method_handler(model_config)}
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", handlers),)
        )
        return server

    mlserver_grpc.GRPCServer._create_server = patched


if __name__ == "__main__":
    folder, answer_file = sys.argv[1:3]
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench.peers.mlserver_runtime
    add_model_config(Path(answer_file).read_bytes())
    sys.argv = ["mlserver", "start", folder]
    sys.exit(main())
