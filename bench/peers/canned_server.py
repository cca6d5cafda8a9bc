"""A peer that runs no model: it decodes each ModelInfer's input as the minimal peers do, then answers with one
answer computed at start-up. What the gRPC stack alone costs a request, on a sync grpcio server (as the minimal
peers) or on grpc.aio on uvloop (as deepserve): bench/transport_floor.py's two servers.

    python bench/peers/canned_server.py --port 9001 [--aio] [--model-dir models/digits_cnn]
"""

from __future__ import annotations

import argparse
import sys
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.peers.common import ROOT, Peer, pb_grpc


class CannedServer(Peer):
    def __init__(self, model_dir: Path) -> None:
        super().__init__(model_dir, intra_op_threads=1)
        spec = self.session.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        self.answer = self.encode(self.session.run(None, {self.input_name: np.zeros(shape, np.float32)}))

    def ModelInfer(self, request: Any, context: Any) -> Any:
        self.decode(request)
        return self.answer


class AioCannedServer(CannedServer):
    """The same answers from grpc.aio coroutines, as deepserve's handlers are."""

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # type: ignore[override]
        return super().ModelInfer(request, context)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # type: ignore[override]
        return self.metadata

    async def ModelConfig(self, request: Any, context: Any) -> Any:  # type: ignore[override]
        return self.model_config

    async def ServerLive(self, request: Any, context: Any) -> Any:  # type: ignore[override]
        return super().ServerLive(request, context)

    async def ServerReady(self, request: Any, context: Any) -> Any:  # type: ignore[override]
        return super().ServerReady(request, context)

    async def ModelReady(self, request: Any, context: Any) -> Any:  # type: ignore[override]
        return super().ModelReady(request, context)


async def serve_aio(servicer: AioCannedServer, port: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "digits_cnn")
    parser.add_argument("--aio", action="store_true", help="grpc.aio on uvloop instead of a sync grpcio server")
    args = parser.parse_args()
    if args.aio:
        import uvloop

        uvloop.run(serve_aio(AioCannedServer(args.model_dir), args.port))
        return
    peer = CannedServer(args.model_dir)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(peer, server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
