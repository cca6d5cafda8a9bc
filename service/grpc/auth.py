"""Bearer-token authorization at the gRPC edge: which scope each method needs (the one table), and the check
that `boundary.guarded` runs before a handler when the server has `--auth-tokens-file`.

The check reads `authorization: Bearer <token>`, finds the token's entry (`service.auth`), refuses with
UNAUTHENTICATED / PERMISSION_DENIED / RESOURCE_EXHAUSTED through the error table, and counts the call against
the token's `max_concurrent_requests` until the call ends (the boundary's `finally`, which a cancelled call and
a stream that ends or breaks also reach). Open methods get no check at all: nothing is looked at, nothing is
counted. Refusals are logged with the token's name (never the token or its digest), at most one WARNING per
method and token every `REFUSAL_LOG_SECONDS`.
"""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import Callable

import grpc

from service.auth import InFlight, Scope, TokenEntry, TokenStore, identify, require
from service.errors import DeepserveError
from service.grpc.boundary import Admit
from service.grpc.errors import STATUS
from service.logs import RefusalLog

log = logging.getLogger(__name__)

V2 = "inference.GRPCInferenceService"
SCOPES: dict[str, Scope | None] = {
    # Open (None): health and reflection, as the issue asks. V2's ServerLive and ServerReady too: they are
    # Triton's "health" category, say nothing about any model, and are what load balancers and tritonclient's
    # wait loops call. ModelReady is not open: it answers per model name, so it would let anyone probe which
    # models exist; clients that infer hold an `infer` token anyway.
    "grpc.health.v1.Health": None,
    "grpc.reflection.v1alpha.ServerReflection": None,
    "grpc.reflection.v1.ServerReflection": None,
    f"/{V2}/ServerLive": None,
    f"/{V2}/ServerReady": None,
    # infer: inference, metadata, config, statistics, index, and the task APIs
    f"/{V2}/ModelReady": Scope.INFER,
    f"/{V2}/ServerMetadata": Scope.INFER,
    f"/{V2}/ModelMetadata": Scope.INFER,
    f"/{V2}/ModelConfig": Scope.INFER,
    f"/{V2}/ModelStatistics": Scope.INFER,
    f"/{V2}/RepositoryIndex": Scope.INFER,
    f"/{V2}/ModelInfer": Scope.INFER,
    f"/{V2}/ModelStreamInfer": Scope.INFER,  # (UNIMPLEMENTED)
    f"/{V2}/SystemSharedMemoryStatus": Scope.INFER,  # shared memory: Triton's inference transport (UNIMPLEMENTED)
    f"/{V2}/SystemSharedMemoryRegister": Scope.INFER,
    f"/{V2}/SystemSharedMemoryUnregister": Scope.INFER,
    f"/{V2}/CudaSharedMemoryStatus": Scope.INFER,
    f"/{V2}/CudaSharedMemoryRegister": Scope.INFER,
    f"/{V2}/CudaSharedMemoryUnregister": Scope.INFER,
    "deepserve.v1.ImageClassifier": Scope.INFER,
    "deepserve.v1.SentimentAnalyzer": Scope.INFER,
    "deepserve.v1.TextGenerator": Scope.INFER,
    # admin: what changes the server (trace and log settings would, were they implemented)
    f"/{V2}/RepositoryModelLoad": Scope.ADMIN,
    f"/{V2}/RepositoryModelUnload": Scope.ADMIN,
    f"/{V2}/TraceSetting": Scope.ADMIN,
    f"/{V2}/LogSettings": Scope.ADMIN,
}
"""Method (`/service/Method`) or whole service (`service`) → the scope a token needs; None: open to anyone.
A method listed nowhere needs `admin` (a new RPC is closed until it is given its scope here)."""
UNLISTED = Scope.ADMIN

caller: contextvars.ContextVar[str | None] = contextvars.ContextVar("caller", default=None)
"""The name of the token the current call was authorized with (each gRPC call runs in its own task)."""


def scope_of(method: str) -> Scope | None:
    if method in SCOPES:
        return SCOPES[method]
    service = method.lstrip("/").rpartition("/")[0]
    if service in SCOPES:
        return SCOPES[service]
    log.warning("method has no scope in service/grpc/auth.py SCOPES; it needs `admin`", extra={"method": method})
    return UNLISTED


class Authorizer:
    """What `GuardedServer` asks for each method it registers (`admission`)."""

    def __init__(self, store: TokenStore, refusals: RefusalLog | None = None) -> None:
        self.store = store
        self.in_flight = InFlight()
        self.refusals = refusals or RefusalLog(message="refused a call: credentials")

    def admission(self, method: str) -> Admit | None:
        """The check for calls of `method`, or None when the method is open."""
        scope = scope_of(method)
        return None if scope is None else functools.partial(self._admit, method, scope)

    def _admit(self, method: str, scope: Scope, context: grpc.aio.ServicerContext) -> Callable[[], None]:
        """Authorize one call and count it; returns what uncounts it. Raises the `DeepserveError` to answer."""
        values = [value for key, value in context.invocation_metadata() or () if key == "authorization"]
        entry: TokenEntry | None = None
        try:
            entry = identify(self.store.current(), values)
            require(entry, scope, method)
            self.in_flight.enter(entry)
        except DeepserveError as err:
            name = entry.name if entry is not None else None
            self.refusals(
                method, err.message, key=name or "", status=STATUS[err.code].name, token=name, peer=context.peer()
            )
            raise
        caller.set(entry.name)
        if scope is Scope.ADMIN:
            log.info("admin call", extra={"method": method, "token": entry.name, "peer": context.peer()})
        return functools.partial(self.in_flight.leave, entry.name)
