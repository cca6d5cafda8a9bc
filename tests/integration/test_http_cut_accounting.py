"""Requests that the drain cuts at the end of the grace period are counted as their clients are answered: 503 in
deepserve_requests_total, not 499 (a client that went away) and not missing. The server runs in this process, so its
counters can be read after it stopped."""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import FREE_PORT, start_server
from tests.tiny_task_models import write_lm

MODEL = "lm"


def _generate(port: int, stream: bool) -> tuple[int, bytes]:
    body = {"model": MODEL, "prompt": "The quick brown", "max_new_tokens": 1000, "temperature": 0, "stream": stream}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", "/v1/generate", json.dumps(body))
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_requests_cut_by_the_drain_are_counted_as_503(tmp_path: Path) -> None:
    write_lm(tmp_path / "models", MODEL, context=1024, slow_repeats=120, max_active_sequences=4)
    server = start_server(tmp_path / "models", http_port=FREE_PORT)
    port = server.app.http_port
    assert port
    try:
        with ThreadPoolExecutor(2) as pool:
            whole, streamed = pool.submit(_generate, port, False), pool.submit(_generate, port, True)
            deadline = time.monotonic() + 30
            while server.app.registry.get(MODEL).scheduler.active < 2:  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "the generations never started"
                time.sleep(0.02)
            server.call(server.app.stop(grace=0.5))
            (status, body), (stream_status, events) = whole.result(30), streamed.result(30)
    finally:
        server.loop.call_soon_threadsafe(server.loop.stop)
    assert status == 503, body
    assert stream_status == 200 and b"event: error" in events and b'"status":503' in events

    def counted(code: str) -> float:
        labels = {"model": MODEL, "version": "1", "api": "http_generate", "code": code}
        return server.app.metrics.registry.get_sample_value("deepserve_requests_total", labels) or 0.0

    assert counted("503") == 2
    assert counted("499") == 0
