"""A bare grpc.aio server for `deepserve.v1.TextGenerator/Generate` with no model: each call streams
`max_new_tokens` text deltas (one short word each, one message per token as deepserve sends them) as fast as
it can write them, then the finished event. On the event loop deepserve serves on (uvloop where installed).
What streaming a token costs in gRPC itself: bench/generation_grpc.py's transport row.

    python bench/peers/stream_echo_server.py PORT
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from service.grpc._generated.deepserve.v1 import text_generator_pb2 as tg

DELTA = tg.GenerateResponse(delta=tg.TextDelta(text=" tok"))


async def main(port: str) -> None:
    server = grpc.aio.server()

    async def generate(request: tg.GenerateRequest, context: grpc.aio.ServicerContext) -> None:
        for _ in range(request.max_new_tokens):
            await context.write(DELTA)
        finished = tg.GenerationFinished(generated_tokens=request.max_new_tokens, finish_reason=tg.FINISH_REASON_LENGTH)
        await context.write(tg.GenerateResponse(finished=finished))

    handler = grpc.unary_stream_rpc_method_handler(
        generate,
        request_deserializer=tg.GenerateRequest.FromString,
        response_serializer=tg.GenerateResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("deepserve.v1.TextGenerator", {"Generate": handler}),)
    )
    server.add_insecure_port("127.0.0.1:" + port)
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(sys.argv[1]))
    else:
        uvloop.run(main(sys.argv[1]))
