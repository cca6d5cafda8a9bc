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
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from service.accounting import Call
from service.errors import InvalidInputError, explain
from service.http import fields
from service.http.codec import parse_json
from service.http.errors import CLIENT_CLOSED, STATUS
from service.http.v2 import read_body
from service.task_apis import GenerationDone, TaskAPIs
from service.types import GenerationRequest, TextChunk

GENERATE_FIELDS = (
    "prompt",
    "max_new_tokens",
    "temperature",
    "top_k",
    "top_p",
    "seed",
    "repetition_penalty",
    "stop",
    "model",
    "version",
    "stream",
    "timeout_ms",
)
SENTIMENT_FIELDS = ("texts", "model", "version", "timeout_ms")
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
"""Proxies (nginx) must pass events on as they come."""


class TaskRoutes:
    def __init__(self, core: TaskAPIs, max_body_bytes: int) -> None:
        self.core = core
        self.max_body_bytes = max_body_bytes

    # ---- the endpoints --------------------------------------------------------------------------
    async def classify(self, request: Request, call: Call) -> Response:
        call.named(fields.query(request, "model"), fields.query(request, "version"))
        timeout = request.query_params.get("timeout_ms")
        deadline = fields.deadline(None if timeout is None else fields.count(timeout, "timeout_ms"))
        body = await read_body(request, self.max_body_bytes)
        images, form_top_k = fields.images(request.headers.get("content-type", ""), body)
        text = request.query_params.get("top_k", form_top_k)
        top_k = 0 if text is None else fields.count(text, "top_k")
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
        call.named(fields.string(doc, "model"), fields.string(doc, "version"))
        deadline = fields.deadline(fields.integer(doc, "timeout_ms", fields.MAX_TIMEOUT_MS))
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
        call.named(fields.string(doc, "model"), fields.string(doc, "version"))
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
            max_new_tokens=fields.integer(doc, "max_new_tokens", fields.UINT32) or 0,
            temperature=fields.number(doc, "temperature"),
            top_k=fields.integer(doc, "top_k", fields.UINT32) or 0,
            top_p=fields.number(doc, "top_p"),
            seed=fields.integer(doc, "seed", fields.UINT64),
            repetition_penalty=fields.number(doc, "repetition_penalty"),
            stop=tuple(stop),
            model=call.model,
            version=call.version,
        )
        events = self.core.generate(asked, fields.deadline(fields.integer(doc, "timeout_ms", fields.MAX_TIMEOUT_MS)))
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
    async def _json(self, request: Request, known: tuple[str, ...]) -> dict[str, Any]:
        doc = parse_json(await read_body(request, self.max_body_bytes), "the request body")
        if not isinstance(doc, dict):
            raise InvalidInputError("the request body must be a JSON object")
        unknown = sorted(set(doc) - set(known))
        if unknown:
            raise InvalidInputError(f"unknown field {unknown[0][:64]!r}; the fields are {', '.join(known)}")
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
    stream: 200 or the error's status; a stream cancelled or closed early leaves its call to the boundary, which
    knows whether the client left (`CLIENT_CLOSED`) or the drain cut it (503)."""
    code: str | None = None
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
        if code is not None:
            call.end(code)


def sse_event(name: str, data: dict[str, Any]) -> bytes:
    """One Server-Sent Event: `event: <name>` and its JSON `data`."""
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()
