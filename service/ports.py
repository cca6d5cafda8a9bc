"""Listening sockets for the server's ports: bound, or a `BindError` that names the port and its setting."""

from __future__ import annotations

import errno
import socket

from service.errors import BindError


def listening_socket(host: str, port: int, what: str, setting: str) -> socket.socket:
    """A TCP socket bound to (host, port), of the address family the host resolves to (not yet listening); the
    connections it accepts get TCP_NODELAY from asyncio."""
    address = f"{host}:{port}"
    try:
        family, _, proto, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
        )[0]
        # proto IPPROTO_TCP, not 0: accepted sockets inherit it, and asyncio sets TCP_NODELAY only on sockets
        # whose proto says TCP. Without it, a response written in two parts (headers, then body) waits for
        # the client's delayed ACK of the first: about 40 ms per request on a keep-alive connection.
        sock = socket.socket(family, socket.SOCK_STREAM, proto)
    except OSError as err:
        raise BindError(what, address, setting, str(err.strerror or err)) from err
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
    except OSError as err:
        sock.close()
        reason = "in use" if err.errno == errno.EADDRINUSE else str(err.strerror or err)
        raise BindError(what, address, setting, reason) from err
    return sock


def check_free(host: str, port: int, what: str, setting: str) -> None:
    """`BindError` unless (host, port) can be bound now. For servers (gRPC) whose own failure to bind is a log
    line of the C core and an exception without the reason; port 0 always can."""
    if port != 0:
        listening_socket(host, port, what, setting).close()
