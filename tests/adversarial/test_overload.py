"""Overload from several client processes (issue 10, rows 6, 7 and 13): every call ends OK, UNAVAILABLE
"queue full" or DEADLINE_EXCEEDED, never CANCELLED, and every call the server picks up is counted in
`deepserve_requests_total`; labels never take a client's strings, so /metrics does not grow with them."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc

from service.grpc._generated.deepserve.v1 import sentiment_analyzer_pb2 as sa
from service.grpc._generated.deepserve.v1 import sentiment_analyzer_pb2_grpc as sa_grpc
from tests.adversarial.clients import requests_counted
from tests.ops.servers import ROOT, Server

PROCESSES = 4
QUEUE = 1024  # digits_cnn's max_queue_size (the default)


def bursts(server: Server, calls: int, *timeouts_ms: float) -> Counter[str]:
    """`calls` concurrent V2 calls from each of PROCESSES client processes at once."""
    args = [sys.executable, "-m", "tests.adversarial.burst", server.address, str(calls), *map(str, timeouts_ms)]
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(PROCESSES)]
    total: Counter[str] = Counter()
    for proc in procs:
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0
        total.update(json.loads(out))
    return total


def test_ten_times_the_queue_gets_ok_or_queue_full_and_all_are_counted(committed: Server) -> None:
    before = requests_counted(committed, model="digits_cnn", api="v2")
    outcomes = bursts(committed, 10 * QUEUE // PROCESSES, 120_000)
    after = requests_counted(committed, model="digits_cnn", api="v2")
    assert set(outcomes) <= {"OK", "UNAVAILABLE: queue full:", "DEADLINE_EXCEEDED: Deadline Exceeded"}, outcomes
    assert outcomes["OK"] > 0 and outcomes["UNAVAILABLE: queue full:"] > 0, outcomes
    counted = after - before
    assert "CANCELLED" not in counted
    assert sum(counted.values()) == 10 * QUEUE
    assert counted["OK"] == outcomes["OK"] and counted["UNAVAILABLE"] == outcomes["UNAVAILABLE: queue full:"]


def test_millisecond_deadlines_under_load_end_as_deadline_exceeded_never_cancelled(committed: Server) -> None:
    """Calls whose deadline passes while they wait are DEADLINE_EXCEEDED. Those the server picked up are counted
    so; gRPC core ends those whose deadline passed before the server picked them up without deepserve ever
    seeing them (docs/limits.md), so the count can be lower than the clients'."""
    before = requests_counted(committed, model="digits_cnn", api="v2")
    with ThreadPoolExecutor(1) as pool:
        load = pool.submit(bursts, committed, 2 * QUEUE // PROCESSES, 120_000)
        outcomes = bursts(committed, 875, 1, 2, 3, 4, 5)
        load.result()
    after = requests_counted(committed, model="digits_cnn", api="v2") - before
    assert set(outcomes) <= {"OK", "DEADLINE_EXCEEDED: Deadline Exceeded", "UNAVAILABLE: queue full:"}, outcomes
    assert outcomes["DEADLINE_EXCEEDED: Deadline Exceeded"] > 0
    assert "CANCELLED" not in after, after
    assert after["DEADLINE_EXCEEDED"] <= outcomes["DEADLINE_EXCEEDED: Deadline Exceeded"]


def test_unknown_versions_share_one_label_so_metrics_do_not_grow(committed: Server) -> None:
    def scrape_size() -> int:
        url = f"http://127.0.0.1:{committed.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return len(response.read())

    with grpc.insecure_channel(committed.address) as channel:
        analyze = sa_grpc.SentimentAnalyzerStub(channel).Analyze

        def calls(first: int, count: int) -> Counter[str]:
            futures = [
                analyze.future(sa.AnalyzeRequest(texts=["ok"], model_name="sentiment_rnn", model_version=str(1000 + v)))
                for v in range(first, first + count)
            ]
            return Counter(f.exception().code().name for f in futures)  # type: ignore[union-attr]

        assert calls(0, 50) == {"NOT_FOUND": 50}
        size = scrape_size()
        assert calls(50, 2000) == {"NOT_FOUND": 2000}
    assert abs(scrape_size() - size) < 300
