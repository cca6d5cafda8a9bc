"""SIGTERM with HTTP requests in flight, on the real command: readiness turns 503 at once, new connections are refused
after the drain notice, requests that can finish within --grace-seconds do (streamed or not), those that cannot are
cut when it ends (503 JSON, or an `event: error` that ends the stream), and the process exits 0 right after."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.ops.servers import Server
from tests.tiny_task_models import write_lm

GRACE_S = 5.0
NOTICE_S = 1.0  # the default drain notice
MODEL = "lm"
SHORT, LONG = 40, 1000
"""Tokens: ~1 s of generation, and ~25 s (a step takes ~25 ms on this model on 2 CPUs)."""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    write_lm(tmp_path / "models", MODEL, context=1024, slow_repeats=120, max_active_sequences=4)
    running = Server(tmp_path / "models", tmp_path / "serve.log", grace_seconds=GRACE_S).start()
    try:
        running.wait_serving()
        yield running
    finally:
        running.kill()


@dataclass
class Answer:
    status: int = 0
    body: bytes = b""
    events: list[tuple[float, str, dict]] = field(default_factory=list)
    """(time, event, data) of a stream, as they arrived."""
    ended: float = 0.0


def _generate(port: int, tokens: int, stream: bool, first_event: Future[None] | None = None) -> Answer:
    body = {"model": MODEL, "prompt": "The quick brown", "max_new_tokens": tokens, "temperature": 0, "stream": stream}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", "/v1/generate", json.dumps(body))
    response = connection.getresponse()
    answer = Answer(response.status)
    if not stream:
        answer.body = response.read()
    else:
        event = ""
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                answer.events.append((time.monotonic(), event, json.loads(line[len("data: ") :])))
                if first_event is not None and not first_event.done():
                    first_event.set_result(None)
    answer.ended = time.monotonic()
    connection.close()
    return answer


def _ready_status(port: int) -> int | None:
    """GET /v2/health/ready over a new connection; None when the connection is refused (or reset: the listener
    closed while the connection was being accepted)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/v2/health/ready")
        return connection.getresponse().status
    except (ConnectionRefusedError, ConnectionResetError):
        return None
    finally:
        connection.close()


def test_sigterm_lets_http_requests_finish_within_the_grace_and_cuts_the_rest(server: Server) -> None:
    port = server.http_port
    assert _ready_status(port) == 200
    with ThreadPoolExecutor(4) as pool:
        whole_short = pool.submit(_generate, port, SHORT, False)
        whole_long = pool.submit(_generate, port, LONG, False)
        started: list[Future[None]] = [Future(), Future()]
        stream_short = pool.submit(_generate, port, SHORT, True, started[0])
        stream_long = pool.submit(_generate, port, LONG, True, started[1])
        for future in started:
            future.result(timeout=30)  # both streams run (and the unary requests, sent before them)
        assert server.proc is not None
        server.proc.terminate()
        signalled = time.monotonic()

        while (status := _ready_status(port)) == 200:  # until the signal has been handled
            assert time.monotonic() - signalled < 0.5, "still ready after SIGTERM"
        assert status == 503  # not ready at once, still accepting during the notice
        while (status := _ready_status(port)) is not None:
            assert status == 503
            assert time.monotonic() - signalled < NOTICE_S + 1.0, "still accepting long after the drain notice"
            time.sleep(0.05)
        refused_after = time.monotonic() - signalled
        assert refused_after > NOTICE_S - 0.2

        short, long_ = whole_short.result(60), whole_long.result(60)
        streamed_short, streamed_long = stream_short.result(60), stream_long.result(60)
    exit_code = server.proc.wait(30)
    exited = time.monotonic() - signalled
    log = server.log()

    assert short.status == 200, short.body
    assert json.loads(short.body)["generated_tokens"] == SHORT
    assert [e for _, e, _ in streamed_short.events][-1] == "finished"
    assert streamed_short.events[-1][2]["generated_tokens"] == SHORT
    for answer in (short, streamed_short):
        assert answer.ended - signalled < GRACE_S, "a request that could finish within the grace was not let"

    assert long_.status == 503
    assert "grace period (--grace-seconds) ended before this request finished" in json.loads(long_.body)["error"]
    _, last_event, last_data = streamed_long.events[-1]
    assert streamed_long.status == 200 and last_event == "error" and last_data["status"] == 503, last_data
    assert [e for _, e, _ in streamed_long.events[:-1]] == ["delta"] * (len(streamed_long.events) - 1)
    for answer in (long_, streamed_long):
        cut_at = answer.ended - signalled
        assert GRACE_S - 0.3 < cut_at < GRACE_S + 1.5, f"cut {cut_at:.2f} s after SIGTERM (grace {GRACE_S} s)"

    assert exit_code == 0, log
    assert exited < GRACE_S + 4, f"exited {exited:.2f} s after SIGTERM (grace {GRACE_S} s)\n{log}"
    assert "Exception in ASGI application" not in log and "Traceback" not in log, log
