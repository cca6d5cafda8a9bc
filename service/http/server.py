"""The HTTP port: KServe V2 REST routes on Starlette, served by uvicorn on the server's event loop.

The boundary (`_edge`) wraps every route once: it authorizes the request against the route's scope
(`auth.SCOPES`, when the server has tokens), counts it against the token until the response is sent, and
answers any failure as JSON through the one HTTP error table. Unknown paths and methods answer JSON too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.http.auth import HttpAuthorizer
from service.http.errors import error_response
from service.http.listener import AsgiListener, Tls
from service.http.v2 import V2Api

LIMIT_CONCURRENCY = 1024
"""Open connections (idle ones included) past which uvicorn answers 503 instead of running the app."""
SHUTDOWN_TIMEOUT_S = 30
"""On close, how long requests in progress get (the drain's grace period bounds it first)."""

Handler = Callable[[Request], Awaitable[Response]]


def _edge(name: str, handler: Handler, authorizer: HttpAuthorizer | None) -> Handler:
    async def endpoint(request: Request) -> Response:
        release = None
        try:
            if authorizer is not None:
                client = request.client
                peer = f"{client.host}:{client.port}" if client else ""
                release = authorizer.admit(name, request.headers.getlist("authorization"), peer)
            return await handler(request)
        except Exception as err:  # noqa: BLE001 - every failure gets a status
            return error_response(err)
        finally:
            if release is not None:
                release()

    endpoint.__name__ = name
    return endpoint


def build_app(v2: V2Api, authorizer: HttpAuthorizer | None) -> Starlette:
    model = "/v2/models/{name}"
    version = "/v2/models/{name}/versions/{version}"
    routes = [
        ("/v2", "server_metadata", ["GET"]),
        ("/v2/health/live", "server_live", ["GET"]),
        ("/v2/health/ready", "server_ready", ["GET"]),
        (model, "model_metadata", ["GET"]),
        (version, "model_metadata", ["GET"]),
        (f"{model}/ready", "model_ready", ["GET"]),
        (f"{version}/ready", "model_ready", ["GET"]),
        (f"{model}/infer", "model_infer", ["POST"]),
        (f"{version}/infer", "model_infer", ["POST"]),
    ]
    return Starlette(
        routes=[Route(path, _edge(name, getattr(v2, name), authorizer), methods=m) for path, name, m in routes],
        exception_handlers={HTTPException: _http_error},
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such path, a method the path does not take) as JSON errors."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no such endpoint: {request.url.path[:200]}; the KServe V2 REST routes are under /v2"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path[:200]}"
    else:
        message = str(exc.detail)
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


class HttpEndpoint(AsgiListener):
    """`await serve(host, port)` starts the HTTP port on the running loop and returns the bound port."""

    def __init__(self, v2: V2Api, authorizer: HttpAuthorizer | None, tls: Tls | None = None) -> None:
        super().__init__(build_app(v2, authorizer), "HTTP port", "http_port", LIMIT_CONCURRENCY, SHUTDOWN_TIMEOUT_S,
                         tls)  # fmt: skip
