"""The Prometheus `/metrics` endpoint: a small ASGI app served by uvicorn on the server's own event loop.

No thread per connection (prometheus_client's `start_http_server` spends one on every open socket) and
only `/metrics` answers. The exposition text is rendered in a worker thread so that a scrape never
stalls gRPC requests. Connections are bounded: past `LIMIT_CONCURRENCY` open connections uvicorn answers
503, and a connection that starts no request within `IDLE_TIMEOUT_S` is closed, so sockets that never
send cannot lock scrapes out for longer than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.ports import listening_socket

LIMIT_CONCURRENCY = 64
"""Open connections (idle ones included) past which uvicorn answers 503 instead of running the app."""
IDLE_TIMEOUT_S = 5
"""How long a connection may stay open without starting a request, after connecting or after its last
response (uvicorn's keep-alive timeout covers only the latter)."""
SHUTDOWN_TIMEOUT_S = 2
"""On close, how long a scrape in progress gets to finish."""
ALLOWED = b"GET, HEAD"

Headers = list[tuple[bytes, bytes]]


class MetricsApp:
    """ASGI app: `GET`/`HEAD /metrics` → the registry's exposition, like prometheus_client's handler
    (content negotiation by `Accept`, gzip by `Accept-Encoding`, `?name[]=` filters); other paths → 404."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan is off and websockets are disabled; nothing else arrives
            return
        if scope["path"] != "/metrics":
            status, headers, body = 404, [(b"content-type", b"text/plain; charset=utf-8")], b"Not Found\n"
        elif scope["method"] not in ("GET", "HEAD"):
            body = f"Method {scope['method']} not allowed; use GET or HEAD\n".encode()
            status, headers = 405, [(b"allow", ALLOWED), (b"content-type", b"text/plain; charset=utf-8")]
        else:
            request = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            names = parse_qs(scope["query_string"].decode("latin-1")).get("name[]")
            status = 200
            headers, body = await asyncio.to_thread(
                self.render, request.get("accept", ""), request.get("accept-encoding", ""), names
            )
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})  # uvicorn drops it for HEAD

    def render(self, accept: str, accept_encoding: str, names: list[str] | None) -> tuple[Headers, bytes]:
        encoder, content_type = choose_encoder(accept)
        registry = self.registry if names is None else self.registry.restricted_registry(names)
        body = encoder(registry)
        headers = [(b"content-type", content_type.encode())]
        if gzip_accepted(accept_encoding):
            body = gzip.compress(body)
            headers.append((b"content-encoding", b"gzip"))
        return headers, body


class _IdleClosingH11(H11Protocol):
    """uvicorn's h11 protocol, plus: close a connection that has started no request within `IDLE_TIMEOUT_S`
    of connecting or of its last response. uvicorn arms its keep-alive timer only after a response, and
    disarms it on any byte received, so without this a socket that never sends (or stops half-way through
    its request line) would hold one of `LIMIT_CONCURRENCY` forever."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._idle_timer.cancel()
        super().connection_lost(exc)

    def _watch_idle(self) -> None:
        self._idle_timer = self.loop.call_later(IDLE_TIMEOUT_S, self._close_if_idle, self.cycle)

    def _close_if_idle(self, cycle_before: object) -> None:
        running = self.cycle is not None and not self.cycle.response_complete
        if self.cycle is cycle_before and not running:
            self.timeout_keep_alive_handler()  # closes the transport, as on keep-alive expiry
        else:
            self._watch_idle()


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: `App.run_until_signal` owns SIGTERM/SIGINT, and
    `Server.serve` would otherwise replace them with `signal.signal` for as long as it runs."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()


class MetricsEndpoint:
    """`await serve(host, port)` starts it on the running loop and returns the bound port; `await close()`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.app = MetricsApp(registry)
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def serve(self, host: str, port: int) -> int:
        sock = bind(host, port)
        config = uvicorn.Config(
            self.app, interface="asgi3", http=_IdleClosingH11, ws="none", lifespan="off", proxy_headers=False,
            log_config=None, access_log=False,
            limit_concurrency=LIMIT_CONCURRENCY, timeout_keep_alive=IDLE_TIMEOUT_S,
            timeout_graceful_shutdown=SHUTDOWN_TIMEOUT_S, server_header=False,
        )  # fmt: skip
        self._server = server = _Server(config)
        self._task = task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        listening = asyncio.ensure_future(server.listening.wait())
        await asyncio.wait([task, listening], return_when=asyncio.FIRST_COMPLETED)
        if not server.listening.is_set():
            listening.cancel()
            sock.close()
            self._server = self._task = None
            task.result()  # raises what stopped it
            raise OSError(f"the metrics endpoint on {host}:{port} stopped while starting")
        return int(sock.getsockname()[1])

    async def close(self) -> None:
        """Stop accepting, close idle connections, give a scrape in progress `SHUTDOWN_TIMEOUT_S`."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._server = self._task = None


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on (host, port), of the address family the host resolves to; a `BindError`
    naming the port and --metrics-port if that fails."""
    return listening_socket(host, port, "metrics port", "metrics_port")
