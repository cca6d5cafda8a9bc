"""A bare grpc.aio server that answers every ModelInfer at once with 100 zero bytes, no model, no protobuf:
what gRPC itself costs here (bench/serving.py's floor, and the echo term of bench/peers_table.py's bound).

    python bench/peers/echo_server.py PORT
"""

from __future__ import annotations

import asyncio
import sys

import grpc


async def main(port: str) -> None:
    server = grpc.aio.server()
    answer = bytes(100)

    async def infer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return answer

    handler = grpc.unary_unary_rpc_method_handler(infer)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {"ModelInfer": handler}),)
    )
    server.add_insecure_port("127.0.0.1:" + port)
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
