"""A raw HTTP/2 gRPC client (the `h2` package) that can misbehave as no real gRPC library does: it
advertises a zero flow-control window and never reads, so every response it asks for stays on the server."""

from __future__ import annotations

import socket
import struct

import h2.config
import h2.connection
import h2.settings
from google.protobuf.message import Message


def grpc_frame(message: Message) -> bytes:
    """A gRPC length-prefixed message: not compressed, 4-byte big-endian length."""
    data = message.SerializeToString()
    return struct.pack(">BI", 0, len(data)) + data


class StalledClient:
    """One connection whose stream windows are 0: the server can send headers but no response bytes."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=5)
        self.authority = f"{host}:{port}"
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config)
        self.conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0}
        )
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())

    def call(self, method: str, request: Message, count: int = 1) -> None:
        """Start `count` unary calls of `method` ("/package.Service/Method") and never take their answers:
        the server's frames are read only for the window updates that let the requests through."""
        body = grpc_frame(request)
        for _ in range(count):
            stream = self.conn.get_next_available_stream_id()
            headers = [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", method),
                (":authority", self.authority),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ]
            self.conn.send_headers(stream, headers)
            sent = 0
            while sent < len(body):
                room = min(self.conn.local_flow_control_window(stream), self.conn.max_outbound_frame_size)
                if room <= 0:
                    self._read()
                    continue
                chunk = body[sent : sent + room]
                sent += len(chunk)
                self.conn.send_data(stream, chunk, end_stream=sent == len(body))
                self.sock.sendall(self.conn.data_to_send())
            self.sock.sendall(self.conn.data_to_send())

    def _read(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.conn.receive_data(data)
        self.sock.sendall(self.conn.data_to_send())

    def close(self) -> None:
        self.sock.close()
