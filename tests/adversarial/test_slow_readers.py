"""Clients that never read (issue 10, row 2): raw HTTP/2 connections with a zero flow-control window ask
for large V2 responses. What the server holds for them is bounded per connection and in total, the rest
get RESOURCE_EXHAUSTED (counted), other clients are still served, and the memory comes back when the
stalled connections go away."""

from __future__ import annotations

import grpc
import numpy as np

from tests.adversarial.clients import (
    OPTIONS,
    code_of,
    digit_request,
    requests_counted,
    tokens,
    v2_request,
    v2_stub,
)
from tests.adversarial.h2client import StalledClient
from tests.ops.servers import Server, metric
from tests.waiting import eventually

CONNECTIONS, CALLS = 10, 3
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
RESPONSE_MB = 4 * 256 * 4096 * 4 / 2**20  # textgen logits for its largest V2 request (1,024 tokens): 16 MiB


def test_stalled_clients_hold_bounded_memory_and_give_it_back(committed: Server) -> None:
    ids = np.ones((4, 256), np.int64)
    request = v2_request("textgen_transformer", tokens("token_ids", ids), tokens("attention_mask", ids))
    # as many answers read as usual first, all at once: ONNX Runtime's arena grows to the working set of the
    # batches they make and keeps it (a cost of the model, not of stalled clients), so what must come back is
    # measured from there
    separate = [*OPTIONS, ("grpc.use_local_subchannel_pool", 1)]  # a connection each
    channels = [grpc.insecure_channel(committed.address, options=separate) for _ in range(CONNECTIONS)]
    try:
        futures = [v2_stub(channel).ModelInfer.future(request, timeout=60) for channel in channels]
        assert all(f.result() for f in futures)
    finally:
        for channel in channels:
            channel.close()
    before = requests_counted(committed, model="textgen_transformer", api="v2")
    rss_before = committed.rss_mb()
    host, port = committed.address.split(":")
    clients = [StalledClient(host, int(port)) for _ in range(CONNECTIONS)]
    try:
        for client in clients:
            client.call(MODEL_INFER, request, CALLS)

        def answered() -> int:
            return sum((requests_counted(committed, model="textgen_transformer", api="v2") - before).values())

        peak = 0.0

        def all_answered() -> bool:
            nonlocal peak
            peak = max(peak, committed.rss_mb())
            return answered() == CONNECTIONS * CALLS

        assert eventually(all_answered, 120, 0.2), answered()
        counted = requests_counted(committed, model="textgen_transformer", api="v2") - before
        # one response per stalled connection fits its bound (64 MiB, about three copies of a 16 MiB reply)
        assert counted == {"OK": CONNECTIONS, "RESOURCE_EXHAUSTED": CONNECTIONS * (CALLS - 1)}, counted
        held = metric(committed.scrape(), "deepserve_pending_response_bytes")
        assert held >= CONNECTIONS * RESPONSE_MB * 2**20
        # before the bounds, 300 such calls took 14.6 GB; now what is held stays near the bound
        assert peak - rss_before < CONNECTIONS * 3 * RESPONSE_MB + 300, (rss_before, peak)
        with grpc.insecure_channel(committed.address) as channel:  # a well-behaved client is still served
            assert code_of(lambda: v2_stub(channel).ModelInfer(digit_request(), timeout=30))[0] is grpc.StatusCode.OK
    finally:
        for client in clients:
            client.close()
    assert eventually(lambda: metric(committed.scrape(), "deepserve_pending_response_bytes") == 0, 30, 0.2)
    assert eventually(lambda: committed.rss_mb() - rss_before < 150, 30, 0.2), (rss_before, committed.rss_mb())
