"""Starts MLServer (`mlserver start FOLDER`) with Triton's model configuration added next to its V2 gRPC service
and its V2 REST routes.

    .bench-venvs/mlserver/bin/python bench/peers/mlserver_launch.py FOLDER MODEL_CONFIG_RESPONSE_FILE [CONFIG_JSON]

MLServer 1.7.1 has no ModelConfig RPC nor `GET /v2/models/{name}/config`, and perf_analyzer (`-i grpc` or `-i http`)
calls one of them before it measures. The gRPC answer is a serialized `inference.ModelConfigResponse`, the HTTP one
its JSON, both written by bench/peers_table.py with deepserve's code (MLServer's virtualenv has its own `inference`
protos, so this process only hands back the bytes).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import grpc
from mlserver.cli import main  # type: ignore[import-not-found]
from mlserver.grpc import server as mlserver_grpc  # type: ignore[import-not-found]
from mlserver.rest import server as mlserver_rest  # type: ignore[import-not-found]


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


def add_model_config_route(answer: bytes) -> None:
    create_app = mlserver_rest.create_app

    async def model_config(model_name: str, model_version: str = "") -> Any:
        from fastapi import Response  # type: ignore[import-not-found]

        return Response(answer, media_type="application/json")

    def patched(*args: Any, **kwargs: Any) -> Any:
        app = create_app(*args, **kwargs)
        app.add_api_route("/v2/models/{model_name}/config", model_config, methods=["GET"])
        app.add_api_route("/v2/models/{model_name}/versions/{model_version}/config", model_config, methods=["GET"])
        return app

    mlserver_rest.create_app = patched


if __name__ == "__main__":
    folder, answer_file = sys.argv[1:3]
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench.peers.mlserver_runtime
    add_model_config(Path(answer_file).read_bytes())
    if len(sys.argv) > 3:
        add_model_config_route(Path(sys.argv[3]).read_bytes())
    sys.argv = ["mlserver", "start", folder]
    sys.exit(main())
