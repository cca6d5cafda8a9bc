"""`python -m tests.adversarial.burst ADDRESS CALLS TIMEOUT_MS...`: CALLS concurrent V2 calls to digits_cnn
from this process (grpc.aio, one channel), each with a timeout drawn in turn from TIMEOUT_MS; prints the
outcomes as JSON {"CODE: first words of the message": count}. The adversarial tests run several at once."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter

import grpc
from tritonclient.grpc import service_pb2_grpc

from tests.adversarial.clients import digit_request


async def burst(address: str, calls: int, timeouts_ms: list[float]) -> Counter[str]:
    request = digit_request()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        async def one(i: int) -> str:
            try:
                await stub.ModelInfer(request, timeout=timeouts_ms[i % len(timeouts_ms)] / 1000)
            except grpc.aio.AioRpcError as err:
                return f"{err.code().name}: {' '.join((err.details() or '').split()[:2])}"
            return "OK"

        return Counter(await asyncio.gather(*(one(i) for i in range(calls))))


if __name__ == "__main__":
    address, calls, *timeouts = sys.argv[1:]
    print(json.dumps(asyncio.run(burst(address, int(calls), [float(t) for t in timeouts]))))
