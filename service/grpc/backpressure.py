"""Response bytes waiting on clients that do not read them, bounded per connection and server-wide.

A response handed to gRPC stays in the server's memory until the client's flow-control window lets it
go; a client that never reads (a zero window) would otherwise pile up gigabytes. Each V2 or task response
is counted from the moment the handler returns it until its call is done (sent, or the client went
away), at `COPIES` times its size (its serialized bytes and gRPC core's buffer both live until then),
per connection (`context.peer()`, one per TCP connection) and in total. While a connection or
the server is over its bound, new requests get RESOURCE_EXHAUSTED before any work is done, and a
response that would go over it is dropped and answered RESOURCE_EXHAUSTED instead. The bytes are
released when the calls end, so the memory comes back when such clients go away.
"""

from __future__ import annotations

import grpc
from prometheus_client import Gauge

from service.errors import PayloadTooLargeError

COUNTED_FROM = 4096
"""Smaller responses are not counted (most answers: labels, scores, a digit's probabilities). Even 10,000
stalled calls of such responses hold under 100 MB."""
COPIES = 2
"""Copies of a response the server holds until its call ends: the serialized bytes the handler returned
and gRPC core's buffer (measured with a zero-window client)."""


class PendingResponses:
    def __init__(self, total_limit: int, connection_limit: int, gauge: Gauge | None = None) -> None:
        self.total_limit = total_limit
        self.connection_limit = connection_limit
        self.total = 0
        self._by_peer: dict[str, int] = {}
        self._gauge = gauge

    def admit(self, context: grpc.aio.ServicerContext) -> None:
        """Refuse new work for a connection (or the server) whose unread responses are over the bound."""
        if self.total >= self.total_limit:
            raise PayloadTooLargeError(
                f"the server holds {self.total} bytes of responses that clients have not read "
                f"(max_pending_response_bytes {self.total_limit}); retry later or on another replica"
            )
        if not self._by_peer:  # nothing held anywhere: no need to ask who is calling
            return
        held = self._by_peer.get(context.peer(), 0)
        if held >= self.connection_limit:
            raise PayloadTooLargeError(
                f"this connection has {held} bytes of responses it has not read (max_pending_response_bytes_per_"
                f"connection {self.connection_limit}); read the responses before sending more requests"
            )

    def hold(self, context: grpc.aio.ServicerContext, size: int) -> None:
        """Count a response of `size` bytes until its call is done, or refuse it if it would go over a bound
        (a response larger than a bound alone still goes out when nothing else is held). Responses under
        `COUNTED_FROM` bytes are not counted: the bookkeeping would cost more than they can hold."""
        if size < COUNTED_FROM:
            return
        peer, size = context.peer(), size * COPIES
        held = self._by_peer.get(peer, 0)
        if (held and held + size > self.connection_limit) or (self.total and self.total + size > self.total_limit):
            raise PayloadTooLargeError(
                f"the {size // COPIES}-byte response was dropped: this connection already holds {held // COPIES} bytes "
                "of responses it has not read, or the server is at max_pending_response_bytes; read responses "
                "before sending more requests"
            )
        self._by_peer[peer] = held + size
        self._add(size)
        context.add_done_callback(lambda _: self._release(peer, size))

    def _release(self, peer: str, size: int) -> None:
        left = self._by_peer.get(peer, 0) - size
        if left > 0:
            self._by_peer[peer] = left
        else:
            self._by_peer.pop(peer, None)
        self._add(-size)

    def _add(self, size: int) -> None:
        self.total += size
        if self._gauge is not None:
            self._gauge.set(self.total)
