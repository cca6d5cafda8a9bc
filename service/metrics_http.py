"""The Prometheus `/metrics` endpoint: a small ASGI app served by uvicorn on the server's own event loop.

No thread per connection (prometheus_client's `start_http_server` spends one on every open socket) and
only `/metrics` answers. The exposition text is rendered in a worker thread so that a scrape never
stalls gRPC requests. Connections are bounded: past `LIMIT_CONCURRENCY` open connections uvicorn answers
503, and a connection that starts no request within `IDLE_TIMEOUT_S` is closed, so sockets that never
send cannot lock scrapes out for longer than that.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from service.http.listener import IDLE_TIMEOUT_S, AsgiListener
from service.ports import listening_socket

__all__ = ["IDLE_TIMEOUT_S", "LIMIT_CONCURRENCY", "MetricsApp", "MetricsEndpoint", "bind"]

LIMIT_CONCURRENCY = 64
"""Open connections (idle ones included) past which uvicorn answers 503 instead of running the app."""
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


class MetricsEndpoint(AsgiListener):
    """`await serve(host, port)` starts it on the running loop and returns the bound port; `await close()`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(MetricsApp(registry), "metrics port", "metrics_port", LIMIT_CONCURRENCY, SHUTDOWN_TIMEOUT_S)


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on (host, port), of the address family the host resolves to; a `BindError`
    naming the port and --metrics-port if that fails."""
    return listening_socket(host, port, "metrics port", "metrics_port")
