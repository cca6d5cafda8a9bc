"""Dynamic batching through the real server: concurrent tritonclient requests share model runs."""

from __future__ import annotations

import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tc
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from tests.conftest import start_server
from tests.tiny_models import make_repository


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(metrics: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in metrics.items() if n == name and all((k, labels[k]) in ls for k in labels))


def infer_add_sub(client: tc.InferenceServerClient, value: float) -> np.ndarray:
    a = np.full((1, 4), value, dtype=np.float32)
    inputs = [tc.InferInput("INPUT0", [1, 4], "FP32"), tc.InferInput("INPUT1", [1, 4], "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(a)
    return client.infer("add_sub", inputs).as_numpy("OUTPUT0")


def test_concurrent_requests_are_really_batched(server):
    before = scrape(server.app.metrics_port)
    clients = [tc.InferenceServerClient(server.address) for _ in range(16)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: infer_add_sub(clients[i % 16], float(i)), range(160)))
    for i, out in enumerate(results):
        np.testing.assert_array_equal(out, np.full((1, 4), 2.0 * i, dtype=np.float32))

    stats = clients[0].get_inference_statistics("add_sub").model_stats[0]
    assert stats.inference_count >= 160
    assert stats.execution_count < stats.inference_count, "mean batch size must be above 1"
    assert sum(b.batch_size * b.compute_infer.count for b in stats.batch_stats) == stats.inference_count
    assert any(b.batch_size > 1 for b in stats.batch_stats)

    after = scrape(server.app.metrics_port)
    labels = {"model": "add_sub", "version": "1"}
    runs = sample(after, "deepserve_batch_size_count", **labels) - sample(
        before, "deepserve_batch_size_count", **labels
    )
    items = sample(after, "deepserve_batch_size_sum", **labels) - sample(before, "deepserve_batch_size_sum", **labels)
    assert items == 160
    assert items / runs > 1.0, f"mean batch size in /metrics is {items / runs:.2f}"
    queued = sample(after, "deepserve_queue_duration_seconds_count", **labels) - sample(
        before, "deepserve_queue_duration_seconds_count", **labels
    )
    assert queued == 160


def test_overload_every_request_succeeds_or_is_refused(tmp_path: Path):
    repo = make_repository(tmp_path, names=("slow",))  # max_queue_size 8, tens of ms per run
    running = start_server(repo)
    try:
        capacity, concurrent = 8, 80
        x = np.random.default_rng(0).standard_normal((1, 64, 512)).astype(np.float32)

        def call(i: int) -> str:
            client = tc.InferenceServerClient(running.address)
            inp = tc.InferInput("x", [1, 64, 512], "FP32")
            inp.set_data_from_numpy(x)
            try:
                client.infer("slow", [inp], client_timeout=60)
                return "OK"
            except InferenceServerException as err:
                assert err.status() == "StatusCode.UNAVAILABLE", err
                assert "queue full" in err.message()
                return "UNAVAILABLE"
            finally:
                client.close()

        rss_before = _rss_mb()
        with ThreadPoolExecutor(concurrent) as pool:
            outcomes = list(pool.map(call, range(concurrent * 2)))
        assert set(outcomes) <= {"OK", "UNAVAILABLE"}
        assert outcomes.count("OK") >= capacity
        assert outcomes.count("UNAVAILABLE") > 0, "10x the queue size must overflow it"
        assert _rss_mb() - rss_before < 300, "memory must stay bounded under overload"

        metrics = scrape(running.app.metrics_port)
        rejected = sample(metrics, "deepserve_rejected_requests_total", model="slow", reason="queue_full")
        assert rejected == outcomes.count("UNAVAILABLE")
        assert sample(metrics, "deepserve_queue_depth", model="slow") == 0
        # serves normally afterwards
        assert call(0) == "OK"
    finally:
        running.stop()


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status")
    return 0.0
