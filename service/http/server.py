"""The HTTP port: KServe V2 REST routes and the task endpoints (`/v1/...`) on Starlette, served by uvicorn on the
server's event loop.

The boundary (`_edge`) wraps every route once, as gRPC's (`service/grpc/boundary.py`) wraps every method: it opens
the request's `Call` (`service/accounting.py`: every request timed and counted by its status, under the model it
went to), authorizes the request against the route's scope (`auth.SCOPES`, when the server has tokens), counts it
against the token until the response has been sent (a streamed one to its end, or until its client goes away), and
answers any failure as JSON through the one HTTP error table. Unknown paths and methods answer JSON too. A request
still running when the drain's grace period ends is cut (`_CutAtGrace`): 503, or an `event: error` that ends its
event stream.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from service.accounting import Accounting, Call
from service.config import Task
from service.errors import UnavailableError
from service.http import openapi
from service.http.auth import HttpAuthorizer
from service.http.docs import DocsPages
from service.http.errors import CLIENT_CLOSED, STATUS, error_response
from service.http.listener import AsgiListener, Drain
from service.http.routes import OPERATIONS, TASKS, V2
from service.http.tasks import TaskRoutes, sse_event
from service.http.v2 import V2Api

LIMIT_CONCURRENCY = 1024
CUT_CODE = str(int(STATUS[UnavailableError.code]))
"""How a request that the drain cut is counted: 503, as its client is answered (`_CutAtGrace`)."""
"""Open connections (idle ones included) past which uvicorn answers 503 instead of running the app."""
SHUTDOWN_TIMEOUT_S = 30
"""On a close that names no grace period, how long requests in progress get (the drain passes its own)."""
CUT = "the server is shutting down and its grace period (--grace-seconds) ended before this request finished; retry"

APIS: dict[str, tuple[str, Task | None]] = {
    "model_infer": ("http_v2", None),
    "classify": ("http_classify", Task.IMAGE_CLASSIFICATION),
    "sentiment": ("http_sentiment", Task.SENTIMENT),
    "generate": ("http_generate", Task.TEXT_GENERATION),
}
"""The inference routes' `api` label and the task whose default model answers a request naming no model; other
routes are counted as `http_<handler>` (`http_model_metadata`)."""

Handler = Callable[[Request, Call], Awaitable[Response]]


def _edge(
    name: str, handler: Handler, accounting: Accounting, authorizer: HttpAuthorizer | None, drain: Drain
) -> Callable:
    api, task = APIS.get(name, (f"http_{name}", None))

    async def endpoint(request: Request) -> Response:
        call = accounting.call(api, task)
        call.named(request.path_params.get("name", ""), request.path_params.get("version", ""))
        release = None
        try:
            if authorizer is not None:
                client = request.client
                peer = f"{client.host}:{client.port}" if client else ""
                release = authorizer.admit(name, request.headers.getlist("authorization"), peer)
            response = await handler(request, call)
        except Exception as err:  # noqa: BLE001 - every failure gets a status
            response = error_response(err, call.request_id)
        except BaseException:  # cancelled: the client went away, or the drain cut it
            if release is not None:
                release()
            call.end(CUT_CODE if drain.cutting() else CLIENT_CLOSED)
            raise
        if not isinstance(response, StreamingResponse):  # a stream ends its call itself, with its outcome
            call.end(str(response.status_code))
            if release is None:
                return response
        return _Sent(response, call, release, drain)

    endpoint.__name__ = name
    return endpoint


class _Sent(Response):
    """A response that calls `release` once it has been sent, or once sending it ended any other way (the client
    went away, the server stopped): a token's in-flight count covers a stream to its end. A call that the
    response did not end by then (a stream cut short) is counted as `CLIENT_CLOSED`, or as 503 when the drain cut
    it."""

    def __init__(self, response: Response, call: Call, release: Callable[[], None] | None, drain: Drain) -> None:
        self.response, self.call, self.release, self.drain = response, call, release, drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.response(scope, receive, send)
        finally:
            if self.release is not None:
                self.release()
            self.call.end(CUT_CODE if self.drain.cutting() else CLIENT_CLOSED)


def build_app(
    v2: V2Api, tasks: TaskRoutes, accounting: Accounting, authorizer: HttpAuthorizer | None, drain: Drain | None = None
) -> Starlette:
    """The routes of `routes.OPERATIONS`, each through the boundary, and the API's own description: `/openapi.json`
    and the `/docs` page that renders it (its files ship in `service/http/static/`)."""
    drain = drain or Drain()
    handlers = {V2: v2, TASKS: tasks}
    routes = [
        Route(
            op.path,
            _edge(op.handler, getattr(handlers[op.tag], op.handler), accounting, authorizer, drain),
            methods=[op.method.upper()],
        )
        for op in OPERATIONS
    ]
    pages = DocsPages(openapi.document(auth=authorizer is not None))
    routes += [
        Route("/openapi.json", _edge("openapi", pages.openapi, accounting, authorizer, drain), methods=["GET"]),
        Route("/docs", _edge("docs", pages.page, accounting, authorizer, drain), methods=["GET"]),
        Route("/docs/{asset}", _edge("docs", pages.asset, accounting, authorizer, drain), methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such path, a method the path does not take) as JSON errors."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = (
            f"no such endpoint: {request.url.path[:200]}; the KServe V2 REST routes are under /v2, the task "
            "endpoints are POST /v1/classify, /v1/sentiment and /v1/generate; all are described at /openapi.json "
            "and /docs"
        )
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path[:200]}"
    else:
        message = str(exc.detail)
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


class _CutAtGrace:
    """The app as the listener serves it. When the drain's grace period ends, uvicorn cancels the requests still
    running; instead of its plain-text 500 (or a stream that just stops), a request whose response has not started
    is answered 503 with the JSON error, and an event stream ends with `event: error` (status 503), as a stream that
    fails after it began does (`tasks._sse`). Only cancellations while the listener stops are answered so."""

    def __init__(self, app: Starlette, listener: AsgiListener) -> None:
        self.app, self.listener = app, listener

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started: list[bytes] = []  # the response's content type, once it has started

        async def sending(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started.append(dict(message.get("headers", ())).get(b"content-type", b""))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self.listener.stopping or task is None or (started and not _is_sse(started[0])):
                raise
            task.uncancel()  # the request is over; answer it and end
            if started:
                body = sse_event("error", {"error": CUT, "status": int(STATUS[UnavailableError.code])})
                await send({"type": "http.response.body", "body": body, "more_body": False})
            else:
                await error_response(UnavailableError(CUT))(scope, receive, send)


def _is_sse(content_type: bytes) -> bool:
    return content_type.startswith(b"text/event-stream")


class HttpEndpoint(AsgiListener):
    """`await serve(host, port)` starts the HTTP port on the running loop and returns the bound port."""

    def __init__(
        self,
        v2: V2Api,
        tasks: TaskRoutes,
        accounting: Accounting,
        authorizer: HttpAuthorizer | None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        drain = Drain()
        app = _CutAtGrace(build_app(v2, tasks, accounting, authorizer, drain), self)
        super().__init__(app, "HTTP port", "http_port", LIMIT_CONCURRENCY, SHUTDOWN_TIMEOUT_S, tls, drain)
