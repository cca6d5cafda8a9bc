"""An ASGI app served by uvicorn on the running event loop (the one grpc.aio and the batchers use), on one port.

Connections are bounded: past `limit_concurrency` open connections uvicorn answers 503, and a connection that
starts no request within `IDLE_TIMEOUT_S` is closed, so sockets that never send cannot hold a slot for longer
than that. uvicorn's own signal handlers are not installed: `App.run_until_signal` owns SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.ports import listening_socket

IDLE_TIMEOUT_S = 5
"""How long a connection may stay open without starting a request, after connecting or after its last
response (uvicorn's keep-alive timeout covers only the latter)."""


class _IdleClosing(asyncio.Protocol):
    """Added to uvicorn's HTTP protocol: close a connection that has started no request within `IDLE_TIMEOUT_S` of
    connecting or of its last response. uvicorn arms its keep-alive timer only after a response, and disarms it on
    any byte received, so without this a socket that never sends (or stops half-way through its request line) would
    hold one of the connection slots forever."""

    loop: asyncio.AbstractEventLoop
    cycle: Any
    timeout_keep_alive_handler: Callable[[], None]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
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


class _IdleClosingH11(_IdleClosing, H11Protocol):  # type: ignore[misc]
    pass


def _http_protocol() -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol where httptools is installed (a dependency: faster, see docs/performance.md),
    else its pure-Python h11 one; both with the idle timeout."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return _IdleClosingH11

    class _IdleClosingHttpTools(_IdleClosing, HttpToolsProtocol):  # type: ignore[misc]
        pass

    return _IdleClosingHttpTools


HTTP_PROTOCOL = _http_protocol()


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


class Drain:
    """When a listener's shutdown cuts the requests still running: a request cancelled from then on was cut by the
    drain (503), not left by its client."""

    def __init__(self) -> None:
        self.cut_at: float | None = None
        """`time.monotonic()` when the grace period ends; None while the listener is not stopping."""

    def cutting(self) -> bool:
        return self.cut_at is not None and time.monotonic() >= self.cut_at - 0.01


class AsgiListener:
    """`await serve(host, port)` starts `app` on the running loop and returns the bound port; `await close()`.

    `what` and `setting` name the port in a `BindError` ("metrics port", "metrics_port")."""

    def __init__(
        self,
        app: Any,
        what: str,
        setting: str,
        limit_concurrency: int,
        shutdown_timeout_s: int,
        tls: ssl.SSLContext | None = None,
        drain: Drain | None = None,
    ) -> None:
        self.app, self.what, self.setting = app, what, setting
        self.limit_concurrency = limit_concurrency
        self.shutdown_timeout_s = shutdown_timeout_s
        self.tls = tls
        """The context HTTPS listens with (`service/http/tls.py`); None: plain HTTP."""
        self.stopping = False
        """The shutdown has begun: requests still running when its time is up are cancelled."""
        self.drain = drain or Drain()
        """Told when the shutdown will cut the requests still running (the HTTP port counts them as cut)."""
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    def bind(self, host: str, port: int) -> None:
        """Bind the port now (a `BindError` naming it), to serve later: a server that cannot have all its ports
        fails before it starts anything."""
        self._sock = listening_socket(host, port, self.what, self.setting)

    async def serve(self, host: str, port: int) -> int:
        sock = self._sock or listening_socket(host, port, self.what, self.setting)
        self._sock = None
        config = uvicorn.Config(
            self.app,
            interface="asgi3",
            http=HTTP_PROTOCOL,
            ws="none",
            lifespan="off",
            proxy_headers=False,
            log_config=None,
            access_log=False,
            limit_concurrency=self.limit_concurrency,
            timeout_keep_alive=IDLE_TIMEOUT_S,
            timeout_graceful_shutdown=self.shutdown_timeout_s,
            server_header=False,
        )
        config.load()
        config.ssl = self.tls  # our context (uvicorn would build its own from file names, read once)
        self._server = server = _Server(config)
        self._task = task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        listening = asyncio.ensure_future(server.listening.wait())
        await asyncio.wait([task, listening], return_when=asyncio.FIRST_COMPLETED)
        if not server.listening.is_set():
            listening.cancel()
            sock.close()
            self._server = self._task = None
            task.result()  # raises what stopped it
            raise OSError(f"the {self.what} {host}:{port} stopped while starting")
        return int(sock.getsockname()[1])

    def stop_accepting(self, grace_s: float | None = None) -> None:
        """Start the shutdown: no new connections; idle ones close, requests in progress get `grace_s` from now to
        finish (`shutdown_timeout_s` if None), then uvicorn cancels them (within its 0.1 s tick)."""
        if self._server is not None and not self.stopping:
            self.stopping = True
            timeout = max(0, round(self.shutdown_timeout_s if grace_s is None else grace_s, 3))
            self._server.config.timeout_graceful_shutdown = timeout  # type: ignore[assignment]
            self.drain.cut_at = time.monotonic() + timeout
            self._server.should_exit = True

    async def close(self, grace_s: float | None = None) -> None:
        """Stop accepting (if `stop_accepting` has not), and return once the requests in progress have finished or
        been cut."""
        if self._server is None or self._task is None:
            return
        self.stop_accepting(grace_s)
        await self._task
        self._server = self._task = None
