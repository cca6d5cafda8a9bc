"""How the task tests call a server: the raw gRPC generation stream, and HTTP requests (JSON, images, multipart
forms, Server-Sent Events)."""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator

import grpc

from service.grpc._generated.deepserve.v1 import text_generator_pb2 as tg
from service.grpc._generated.deepserve.v1 import text_generator_pb2_grpc as tg_grpc
from tests.conftest import RunningServer
from tests.integration.tasks.test_image import ink_box

PROMPT = "The quick brown fox"
IMAGE = ink_box((20, 20, 80, 80))


def messages(task_server: RunningServer, request: tg.GenerateRequest, timeout: float = 30) -> list[tg.GenerateResponse]:
    """The raw stream of response messages (to count them)."""
    with grpc.insecure_channel(task_server.address) as channel:
        return list(tg_grpc.TextGeneratorStub(channel).Generate(request, timeout=timeout))


def request(
    server: RunningServer,
    path: str,
    body: bytes,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.app.http_port, timeout=30)
    try:
        conn.request("POST", path, body, {"Content-Type": content_type, **(headers or {})})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def post(server: RunningServer, path: str, doc: object, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    return request(server, path, json.dumps(doc).encode(), headers=headers)


def multipart(images: list[bytes], fields: dict[str, str] | None = None) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in (fields or {}).items()
    ]
    for i, image in enumerate(images):
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="{i}.png"\r\n'
            f"Content-Type: image/png\r\n\r\n".encode()
            + image
            + b"\r\n"
        )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def open_stream(
    server: RunningServer, doc: dict, headers: dict[str, str] | None = None
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", server.app.http_port, timeout=30)
    conn.request(
        "POST",
        "/v1/generate",
        json.dumps({**doc, "stream": True}).encode(),
        {"Content-Type": "application/json", **(headers or {})},
    )
    return conn, conn.getresponse()


def events(response: http.client.HTTPResponse) -> Iterator[tuple[str, dict]]:
    """Server-Sent Events, parsed line by line as they arrive: (event name, JSON data)."""
    name, data = "message", ""
    while line := response.readline():
        text = line.decode().rstrip("\n")
        if text.startswith("event: "):
            name = text[len("event: ") :]
        elif text.startswith("data: "):
            data += text[len("data: ") :]
        elif text == "":
            yield name, json.loads(data)
            name, data = "message", ""
