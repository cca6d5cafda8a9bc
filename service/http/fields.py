"""The parts of a task request over HTTP (`tasks.py`): JSON fields, query parameters, `timeout_ms` as a deadline,
and the images of a classify request (its body, or multipart/form-data). Each refuses a bad value with an
`InvalidInputError` that names the field and what it takes."""

from __future__ import annotations

import email.parser
import json
import time
from typing import Any

from starlette.requests import Request

from service.errors import InvalidInputError

UINT32 = 2**32 - 1
UINT64 = 2**64 - 1
MAX_TIMEOUT_MS = 24 * 3600 * 1000


def query(request: Request, name: str) -> str:
    return request.query_params.get(name, "")


def string(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key, "")
    if not isinstance(value, str):
        raise InvalidInputError(f"{key!r} must be a string")
    return value


def integer(doc: dict[str, Any], key: str, most: int) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= most:
        raise InvalidInputError(f"{key!r} must be a whole number from 0 to {most}, got {json.dumps(value)[:32]}")
    return value


def number(doc: dict[str, Any], key: str) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidInputError(f"{key!r} must be a number, got {json.dumps(value)[:32]}")
    return float(value)


def deadline(timeout_ms: int | None) -> float | None:
    """The `time.monotonic()` deadline of a request's `timeout_ms` (as a gRPC deadline bounds a task call: its time
    in the queue, and a generation to its end), counted from when the handler reads it."""
    if timeout_ms is None:
        return None
    if not 0 < timeout_ms <= MAX_TIMEOUT_MS:
        raise InvalidInputError(f"timeout_ms must be from 1 to {MAX_TIMEOUT_MS} (a day), got {timeout_ms}")
    return time.monotonic() + timeout_ms / 1000


def count(text: str, name: str) -> int:
    if not text.strip().isdigit() or int(text) > UINT32:
        raise InvalidInputError(f"{name} must be a whole number, got {text[:32]!r}")
    return int(text)


def images(content_type: str, body: bytes) -> tuple[list[bytes], str | None]:
    """The images of a classify request, and the multipart form's `top_k` field if it has one."""
    kind = content_type.split(";")[0].strip().lower()
    if kind.startswith("image/") or kind == "application/octet-stream":
        return [body], None
    if kind == "multipart/form-data":
        return multipart(content_type, body)
    raise InvalidInputError(
        f"send the image as the body (Content-Type: image/png, image/jpeg, ...) or several as multipart/form-data, "
        f"not {kind or 'no Content-Type'!r}"
    )


def multipart(content_type: str, body: bytes) -> tuple[list[bytes], str | None]:
    """multipart/form-data (RFC 7578): every part with a filename is an image, in order; a part named `top_k`
    without a filename is the field."""
    headers = email.parser.Parser().parsestr(f"Content-Type: {content_type}\n\n", headersonly=True)
    boundary = headers.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise InvalidInputError("the multipart/form-data Content-Type has no boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 2 or not chunks[-1].startswith(b"--"):
        raise InvalidInputError("the multipart/form-data body is not complete: it must end with the closing boundary")
    images: list[bytes] = []
    top_k: str | None = None
    for index, chunk in enumerate(chunks[1:-1]):
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep or not head.startswith(b"\r\n") or not content.endswith(b"\r\n"):
            raise InvalidInputError(f"part {index} of the multipart/form-data body is malformed")
        part = email.parser.Parser().parsestr(head[2:].decode("latin-1") + "\n\n", headersonly=True)
        data = content[:-2]
        if part.get_filename() is not None:
            images.append(data)
        elif part.get_param("name", header="content-disposition") == "top_k":
            top_k = data.decode("latin-1")
        else:
            name = part.get_param("name", header="content-disposition")
            raise InvalidInputError(
                f"unexpected form field {str(name)[:64]!r}: send images as file parts, and top_k if needed"
            )
    return images, top_k
