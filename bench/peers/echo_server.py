"""A bare grpc.aio server with no model: what gRPC itself costs here.
- Every ModelInfer is answered at once with 100 zero bytes, no protobuf (bench/serving.py's floor, and the echo
  term of bench/peers_table.py's bound).
- Every `deepserve.v1.TextGenerator/Generate` call streams `max_new_tokens` one-word text deltas as fast as they
  can be written, one message per token as deepserve sends them, then the finished event (bench/generation_grpc.py's
  transport row).

    python bench/peers/echo_server.py PORT [--uvloop]

`--uvloop` serves on the event loop deepserve serves on; without it, on asyncio's own.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from service.grpc._generated.deepserve.v1 import text_generator_pb2 as tg

DELTA = tg.GenerateResponse(delta=tg.TextDelta(text=" tok"))


async def infer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return bytes(100)


async def generate(request: tg.GenerateRequest, context: grpc.aio.ServicerContext) -> None:
    for _ in range(request.max_new_tokens):
        await context.write(DELTA)
    finished = tg.GenerationFinished(generated_tokens=request.max_new_tokens, finish_reason=tg.FINISH_REASON_LENGTH)
    await context.write(tg.GenerateResponse(finished=finished))


async def main(port: str) -> None:
    server = grpc.aio.server()
    streaming = grpc.unary_stream_rpc_method_handler(
        generate,
        request_deserializer=tg.GenerateRequest.FromString,
        response_serializer=tg.GenerateResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)}
            ),
            grpc.method_handlers_generic_handler("deepserve.v1.TextGenerator", {"Generate": streaming}),
        )
    )
    server.add_insecure_port("127.0.0.1:" + port)
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    if "--uvloop" in sys.argv[2:]:
        import uvloop

        uvloop.run(main(sys.argv[1]))
    else:
        asyncio.run(main(sys.argv[1]))
