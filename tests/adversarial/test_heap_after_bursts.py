"""Large requests reuse warm heap pages while they come, and `deepserve serve` gives those pages back once they
stop (`service/memory.py`): after a burst of large V2 requests (16 MiB answers), the server trims its heap and
says so in its log, with the resident size before and after."""

from __future__ import annotations

import json
import threading

import grpc
import numpy as np

from tests.adversarial.clients import OPTIONS, tokens, v2_request, v2_stub
from tests.ops.servers import Server
from tests.waiting import eventually

CLIENTS, CALLS = 4, 6
SEPARATE = [*OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
"""A connection each: one connection holds one unread 16 MiB answer at a time (docs/limits.md)."""


def burst(server: Server) -> None:
    """CLIENTS clients, each on its own connection, sending CALLS large requests one after another."""
    ids = np.ones((4, 256), np.int64)
    request = v2_request("textgen_transformer", tokens("token_ids", ids), tokens("attention_mask", ids))

    def client() -> None:
        with grpc.insecure_channel(server.address, options=SEPARATE) as channel:
            for _ in range(CALLS):
                v2_stub(channel).ModelInfer(request, timeout=60)

    workers = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def trims(server: Server) -> list[dict]:
    lines = server.log_path.read_text(errors="replace").splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    return [e for e in events if e.get("event") == "heap trimmed"]


def test_the_server_gives_a_bursts_pages_back_once_it_ends(committed: Server) -> None:
    before = len(trims(committed))
    burst(committed)

    def gave_back() -> bool:
        # any trim since the burst began: the server's first trim after its start-up (model loads look like
        # growth) may fall in that window and give nothing back; the burst's trim follows it (a CI run saw 435 -> 435)
        return any(t["resident_mib_after"] < t["resident_mib_before"] for t in trims(committed)[before:])

    assert eventually(gave_back, 10, 0.2), (trims(committed)[before:], committed.log_tail())
