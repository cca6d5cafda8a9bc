"""Bearer-token authorization at the HTTP edge: which scope each route needs (the one table for HTTP;
`service/grpc/auth.py` has gRPC's), and the check the boundary (`http/server.py`) runs before a handler.

The same tokens file and the same per-token in-flight counts as gRPC: a token's `max_concurrent_requests`
covers its calls on both protocols together. Clients send `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from service.auth import InFlight, Scope, TokenEntry, TokenStore, identify, require
from service.errors import DeepserveError
from service.http.errors import STATUS
from service.logs import RefusalLog

log = logging.getLogger(__name__)

SCOPES: dict[str, Scope | None] = {
    # Open (None): the health routes, as on gRPC (ServerLive, ServerReady): load balancers and probes call them.
    "server_live": None,
    "server_ready": None,
    # the API's description (/openapi.json) and the page that renders it (/docs): static, no model named
    "openapi": None,
    "docs": None,
    # infer: everything that names or runs a model, and the server's metadata
    "server_metadata": Scope.INFER,
    "model_metadata": Scope.INFER,
    "model_config": Scope.INFER,
    "model_ready": Scope.INFER,
    "model_infer": Scope.INFER,
    "model_stats": Scope.INFER,
    "repository_index": Scope.INFER,
    # admin: loading and unloading models (also refused unless --model-control-mode explicit)
    "model_load": Scope.ADMIN,
    "model_unload": Scope.ADMIN,
    # the task endpoints, as gRPC's deepserve.v1 services
    "classify": Scope.INFER,
    "sentiment": Scope.INFER,
    "generate": Scope.INFER,
}
"""Route name → the scope a token needs; None: open to anyone. A route listed nowhere needs `admin`."""
UNLISTED = Scope.ADMIN


class HttpAuthorizer:
    def __init__(self, store: TokenStore, in_flight: InFlight) -> None:
        self.store = store
        self.in_flight = in_flight
        self.refusals = RefusalLog(message="refused an HTTP request: credentials", logger=log)

    def admit(self, route: str, authorization: list[str], peer: str) -> Callable[[], None] | None:
        """Authorize one request and count it; returns what uncounts it (None for open routes). Raises the
        `DeepserveError` to answer with."""
        scope = SCOPES.get(route, UNLISTED)
        if scope is None:
            return None
        entry: TokenEntry | None = None
        try:
            entry = identify(self.store.current(), authorization)
            require(entry, scope, route)
            self.in_flight.enter(entry)
        except DeepserveError as err:
            name = entry.name if entry is not None else None
            self.refusals(route, err.message, key=name or "", status=int(STATUS[err.code]), token=name, peer=peer)
            raise
        if scope is Scope.ADMIN:
            log.info("admin call", extra={"route": route, "token": entry.name, "peer": peer})
        return functools.partial(self.in_flight.leave, entry.name)
