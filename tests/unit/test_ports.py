"""Listening sockets: the connections they accept are TCP_NODELAY on the event loop (asyncio sets it only when the
socket's proto says TCP), so a response written in two parts is not held back by Nagle's algorithm until the
client's delayed ACK (about 40 ms a request on a keep-alive connection)."""

from __future__ import annotations

import asyncio
import socket

from service.ports import listening_socket


def test_accepted_connections_are_tcp_nodelay() -> None:
    async def main() -> int:
        sock = listening_socket("127.0.0.1", 0, "HTTP port", "http_port")
        nodelay = asyncio.get_running_loop().create_future()

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = writer.get_extra_info("socket")
            nodelay.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            value = await asyncio.wait_for(nodelay, 5)
            writer.close()
        return int(value)

    assert asyncio.run(main()) != 0
