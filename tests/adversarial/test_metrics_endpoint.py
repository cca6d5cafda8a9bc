"""The /metrics endpoint against careless clients: idle connections cost no threads and lock scrapes out
only until the server closes them; only /metrics answers."""

from __future__ import annotations

import gzip
import http.client
import socket
import time

from prometheus_client.parser import text_string_to_metric_families

from service.metrics_http import IDLE_TIMEOUT_S, LIMIT_CONCURRENCY
from tests.ops.servers import Server

IDLE_CONNECTIONS = 300


def request(
    server: Server, method: str, path: str, headers: dict[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.metrics_port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response, response.read()
    finally:
        conn.close()


def test_metrics_answers_with_the_server_metrics(committed: Server) -> None:
    status, response, body = request(committed, "GET", "/metrics")
    assert status == 200
    assert response.getheader("Content-Type", "").startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert "deepserve_model_ready" in names

    status, response, head = request(committed, "HEAD", "/metrics")
    assert (status, head) == (200, b"")
    assert int(response.getheader("Content-Length", "0")) > 0


def test_metrics_honours_name_filter_accept_and_gzip(committed: Server) -> None:
    _, _, body = request(committed, "GET", "/metrics?name[]=deepserve_model_ready")
    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert names == {"deepserve_model_ready"}

    status, response, body = request(
        committed, "GET", "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert status == 200
    assert response.getheader("Content-Type", "").startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")

    status, response, body = request(committed, "GET", "/metrics", {"Accept-Encoding": "gzip"})
    assert (status, response.getheader("Content-Encoding")) == (200, "gzip")
    assert b"deepserve_model_ready" in gzip.decompress(body)


def test_only_metrics_is_served(committed: Server) -> None:
    for path in ("/", "/foo", "/metrics/", "/favicon.ico", "/metricsfoo", "/v2/health/ready", "/healthz"):
        status, _, body = request(committed, "GET", path)
        assert status == 404, path
        assert b"deepserve_" not in body
    for method in ("POST", "PUT", "DELETE"):
        status, response, _ = request(committed, method, "/metrics")
        assert status == 405, method
        assert response.getheader("Allow") == "GET, HEAD"


def test_idle_connections_cost_no_threads_and_lock_scrapes_out_only_until_they_time_out(committed: Server) -> None:
    committed.scrape()  # the first scrape starts the worker thread that renders the exposition
    before = committed.threads()
    idle = [socket.create_connection(("127.0.0.1", committed.metrics_port), timeout=5) for _ in range(IDLE_CONNECTIONS)]
    try:
        time.sleep(0.5)  # let the server accept them all
        during = committed.threads()
        assert during - before < 5, f"threads {before} → {during} with {IDLE_CONNECTIONS} idle connections"

        # With more than LIMIT_CONCURRENCY connections open, a scrape is answered at once, with 503...
        assert IDLE_CONNECTIONS > LIMIT_CONCURRENCY
        started = time.monotonic()
        status, _, _ = request(committed, "GET", "/metrics", timeout=3)
        assert status in (200, 503)
        assert time.monotonic() - started < 2

        # ...and with 200 once the server has closed the connections that never sent a request.
        deadline = time.monotonic() + IDLE_TIMEOUT_S + 5
        while status != 200 and time.monotonic() < deadline:
            time.sleep(0.25)
            status, _, _ = request(committed, "GET", "/metrics", timeout=3)
        assert status == 200, f"scrapes still refused {time.monotonic() - started:.1f}s after the idle connections"
        for sock in idle:
            sock.settimeout(1)
            assert sock.recv(1) == b"", "the server should have closed an idle connection"
    finally:
        for sock in idle:
            sock.close()
    assert committed.threads() - before < 5
