"""The task APIs over HTTP: `POST /v1/classify`, `/v1/sentiment`, `/v1/generate`. Thin handlers on `TaskAPIs`, the
core gRPC's `deepserve.v1` services call (`service/grpc/tasks.py`), with the same limits and errors: take the request
apart, call the core, answer JSON (or Server-Sent Events for a streamed generation). Failures raise domain errors,
answered through the one HTTP table (`errors.py`). Answers use the protobuf messages' field names.

- classify: the body is one image (`Content-Type: image/*` or `application/octet-stream`), or `multipart/form-data`
  with one file part per image (in order; a field `top_k` may come along). Query parameters `top_k`, `model`,
  `version`, `timeout_ms`.
- sentiment: JSON `{"texts": [...], "model", "version", "timeout_ms"}` (the Content-Type is not looked at: `curl -d`
  works).
- generate: JSON `{"prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed", "repetition_penalty", "stop",
  "model", "version", "stream", "timeout_ms"}`. Without `"stream": true` the answer is the whole text and how it
  finished; with it, `text/event-stream`: an `event: delta` with `{"text"}` per chunk, then one `event: finished` with
  the finish reason and token counts (or one `event: error` with `{"error", "status"}` if it fails after the stream
  began). A client that disconnects cancels the generation: its slot is free at the scheduler's next step.

`timeout_ms` bounds a request as a gRPC deadline bounds a task call: 504 when it passes (in a stream, an `event: error`
with status 504 after the text sent so far).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from service.accounting import Call
from service.batching.sequences import TextChunk
from service.errors import InvalidInputError, explain
from service.http.codec import parse_json
from service.http.errors import CLIENT_CLOSED, STATUS
from service.http.v2 import read_body
from service.task_apis import GenerationDone, TaskAPIs
from service.types import GenerationRequest

UINT32 = 2**32 - 1
UINT64 = 2**64 - 1
GENERATE_FIELDS = ("prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed", "repetition_penalty", "stop",
                   "model", "version", "stream", "timeout_ms")  # fmt: skip
SENTIMENT_FIELDS = ("texts", "model", "version", "timeout_ms")
MAX_TIMEOUT_MS = 24 * 3600 * 1000
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
"""Proxies (nginx) must pass events on as they come."""


class TaskRoutes:
    def __init__(self, core: TaskAPIs, max_body_bytes: int) -> None:
        self.core = core
        self.max_body_bytes = max_body_bytes

    # ---- the endpoints --------------------------------------------------------------------------
    async def classify(self, request: Request, call: Call) -> Response:
        call.named(_query(request, "model"), _query(request, "version"))
        timeout = request.query_params.get("timeout_ms")
        deadline = _deadline(None if timeout is None else _count(timeout, "timeout_ms"))
        body = await read_body(request, self.max_body_bytes)
        images, form_top_k = _images(request.headers.get("content-type", ""), body)
        text = request.query_params.get("top_k", form_top_k)
        top_k = 0 if text is None else _count(text, "top_k")
        result = await self.core.classify(images, top_k, call.model, call.version, deadline)
        return JSONResponse(
            {
                "model_name": result.model,
                "model_version": result.version,
                "classifications": [
                    {"labels": [{"label": s.label, "probability": s.probability, "index": s.index} for s in scores]}
                    for scores in result.results
                ],
            }
        )

    async def sentiment(self, request: Request, call: Call) -> Response:
        doc = await self._json(request, SENTIMENT_FIELDS)
        call.named(_string(doc, "model"), _string(doc, "version"))
        deadline = _deadline(_integer(doc, "timeout_ms", MAX_TIMEOUT_MS))
        texts = doc.get("texts")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise InvalidInputError('\'texts\' must be a list of strings: {"texts": ["a review", ...]}')
        result = await self.core.analyze(texts, call.model, call.version, deadline)
        sentiments = [
            {
                "label": r.label,
                "probability": r.probability,
                "tokens": r.tokens,
                "truncated": r.truncated,
                "scores": [{"label": k, "probability": v} for k, v in r.scores.items()],
            }
            for r in result.results
        ]
        return JSONResponse({"model_name": result.model, "model_version": result.version, "sentiments": sentiments})

    async def generate(self, request: Request, call: Call) -> Response:
        doc = await self._json(request, GENERATE_FIELDS)
        call.named(_string(doc, "model"), _string(doc, "version"))
        prompt = doc.get("prompt")
        if not isinstance(prompt, str):
            raise InvalidInputError('\'prompt\' must be a string: {"prompt": "Once upon a time"}')
        stream = doc.get("stream", False)
        if not isinstance(stream, bool):
            raise InvalidInputError("'stream' must be true or false")
        stop = doc.get("stop", [])
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise InvalidInputError("'stop' must be a string or a list of strings")
        asked = GenerationRequest(
            prompt,
            max_new_tokens=_integer(doc, "max_new_tokens", UINT32) or 0,
            temperature=_number(doc, "temperature"),
            top_k=_integer(doc, "top_k", UINT32) or 0,
            top_p=_number(doc, "top_p"),
            seed=_integer(doc, "seed", UINT64),
            repetition_penalty=_number(doc, "repetition_penalty"),
            stop=tuple(stop),
            model=call.model,
            version=call.version,
        )
        events = self.core.generate(asked, _deadline(_integer(doc, "timeout_ms", MAX_TIMEOUT_MS)))
        # The first event before any answer: errors found before generating (a bad parameter, an unknown model,
        # a full queue) get their own status, streamed or not.
        try:
            first = await anext(events)
        except BaseException:
            await events.aclose()
            raise
        if stream:
            return StreamingResponse(_sse(first, events, call), media_type="text/event-stream", headers=SSE_HEADERS)
        return await _whole(first, events, request)

    # ---- helpers --------------------------------------------------------------------------------
    async def _json(self, request: Request, fields: tuple[str, ...]) -> dict[str, Any]:
        doc = parse_json(await read_body(request, self.max_body_bytes), "the request body")
        if not isinstance(doc, dict):
            raise InvalidInputError("the request body must be a JSON object")
        unknown = sorted(set(doc) - set(fields))
        if unknown:
            raise InvalidInputError(f"unknown field {unknown[0][:64]!r}; the fields are {', '.join(fields)}")
        return doc


def _finished(done: GenerationDone) -> dict[str, Any]:
    return {
        "finish_reason": done.reason.value,
        "prompt_tokens": done.prompt_tokens,
        "generated_tokens": done.generated_tokens,
        "prompt_truncated": done.prompt_truncated,
        "model_name": done.model,
        "model_version": done.version,
    }


async def _all(
    first: TextChunk | GenerationDone, events: AsyncGenerator[TextChunk | GenerationDone, None]
) -> AsyncIterator[TextChunk | GenerationDone]:
    yield first
    async for event in events:
        yield event


async def _whole(
    first: TextChunk | GenerationDone, events: AsyncGenerator[TextChunk | GenerationDone, None], request: Request
) -> Response:
    """The whole generation as one JSON answer. A client that goes away before it is done cancels it, as a streamed
    one does (the body has been read: what uvicorn has to say next is the disconnect): answered 499, which nobody
    reads but the metrics."""

    async def collect() -> Response:
        pieces: list[str] = []
        done: GenerationDone | None = None
        async with contextlib.aclosing(events):
            async for event in _all(first, events):
                if isinstance(event, GenerationDone):
                    done = event
                else:
                    pieces.append(event.text)
        assert done is not None
        return JSONResponse({"text": "".join(pieces), **_finished(done)})

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    collecting, watching = asyncio.ensure_future(collect()), asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait([collecting, watching], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (collecting, watching):
            task.cancel()
        await asyncio.gather(collecting, watching, return_exceptions=True)
    if collecting.cancelled():
        return Response(status_code=int(CLIENT_CLOSED))
    return collecting.result()  # or its error, which the boundary answers


async def _sse(
    first: TextChunk | GenerationDone, events: AsyncGenerator[TextChunk | GenerationDone, None], call: Call
) -> AsyncIterator[bytes]:
    """The stream's events. Cancelled (the client went away: Starlette cancels the body when uvicorn reports the
    disconnect) or closed early, it closes the core's generator, which frees the slot. The call ends with the
    stream: 200, the error's status, or `CLIENT_CLOSED`."""
    code = CLIENT_CLOSED
    try:
        async with contextlib.aclosing(events):
            async for event in _all(first, events):
                if isinstance(event, GenerationDone):
                    yield sse_event("finished", _finished(event))
                else:
                    yield sse_event("delta", {"text": event.text})
        code = "200"
    except Exception as err:  # noqa: BLE001 - the status line is sent: the error goes in the stream
        error_code, message = explain(err)
        status = STATUS[error_code]
        code = str(int(status))
        yield sse_event("error", {"error": message, "status": int(status)})
    finally:
        call.end(code)


def sse_event(name: str, data: dict[str, Any]) -> bytes:
    """One Server-Sent Event: `event: <name>` and its JSON `data`."""
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


# ---- request parts ------------------------------------------------------------------------------------------
def _query(request: Request, name: str) -> str:
    return request.query_params.get(name, "")


def _string(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key, "")
    if not isinstance(value, str):
        raise InvalidInputError(f"{key!r} must be a string")
    return value


def _integer(doc: dict[str, Any], key: str, most: int) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= most:
        raise InvalidInputError(f"{key!r} must be a whole number from 0 to {most}, got {json.dumps(value)[:32]}")
    return value


def _number(doc: dict[str, Any], key: str) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidInputError(f"{key!r} must be a number, got {json.dumps(value)[:32]}")
    return float(value)


def _deadline(timeout_ms: int | None) -> float | None:
    """The `time.monotonic()` deadline of a request's `timeout_ms` (as a gRPC deadline bounds a task call: its time
    in the queue, and a generation to its end), counted from when the handler reads it."""
    if timeout_ms is None:
        return None
    if not 0 < timeout_ms <= MAX_TIMEOUT_MS:
        raise InvalidInputError(f"timeout_ms must be from 1 to {MAX_TIMEOUT_MS} (a day), got {timeout_ms}")
    return time.monotonic() + timeout_ms / 1000


def _count(text: str, name: str) -> int:
    if not text.strip().isdigit() or int(text) > UINT32:
        raise InvalidInputError(f"{name} must be a whole number, got {text[:32]!r}")
    return int(text)


def _images(content_type: str, body: bytes) -> tuple[list[bytes], str | None]:
    """The images of a classify request, and the multipart form's `top_k` field if it has one."""
    kind = content_type.split(";")[0].strip().lower()
    if kind.startswith("image/") or kind == "application/octet-stream":
        return [body], None
    if kind == "multipart/form-data":
        return _multipart(content_type, body)
    raise InvalidInputError(
        f"send the image as the body (Content-Type: image/png, image/jpeg, ...) or several as multipart/form-data, "
        f"not {kind or 'no Content-Type'!r}"
    )


def _multipart(content_type: str, body: bytes) -> tuple[list[bytes], str | None]:
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
