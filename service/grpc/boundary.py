"""The gRPC request boundary: one wrapper (`guarded`) around every method on the port, built once per method when
its service registers (`requests.GuardedServer`), so a call pays no interceptor hop. For each call, in order:

1. accounting opens a `Call` (`service/accounting.py`): every call is timed and counted by its status;
2. the caller is authorized (`auth.py`, with --auth-tokens-file; open methods skip it), before anything is parsed;
3. the request is parsed without raising: bytes that do not parse are INVALID_ARGUMENT naming the field
   (`parsing.py`), and logged as at most one WARNING per method every `REFUSAL_LOG_SECONDS`;
4. for the inference methods (`INFERENCE`), unread response bytes are bounded (`backpressure.py`);
5. the handler runs; a streaming handler's messages are written here;
6. a failure is answered through the one error table (`errors.py`); a cancelled call is CANCELLED or
   DEADLINE_EXCEEDED (`cancelled_status`), whether the handler was computing or gRPC was writing; a call that
   fails at its deadline is left for gRPC to end (`gone_by_deadline`);
7. the call ends, counted under the model it went to, with the status its client sees; its token's in-flight
   count is released.

Handlers are thin: they take the request apart, call the core, and return (or yield) the answer, raising domain
errors. grpc.aio would answer a parse failure UNKNOWN and log a traceback per call; here it costs a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import operator
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from service.accounting import Accounting
from service.config import Task
from service.errors import InvalidInputError
from service.grpc.backpressure import PendingResponses
from service.grpc.errors import cancelled_status, fail, gone_by_deadline, status_of
from service.grpc.parsing import Unparsable, lenient
from service.logs import RefusalLog

log = logging.getLogger(__name__)
V2 = "inference.GRPCInferenceService"
INFERENCE: dict[str, tuple[str, Task | None]] = {
    f"/{V2}/ModelInfer": ("v2", None),
    "/deepserve.v1.ImageClassifier/Classify": ("classify", Task.IMAGE_CLASSIFICATION),
    "/deepserve.v1.SentimentAnalyzer/Analyze": ("sentiment", Task.SENTIMENT),
    "/deepserve.v1.TextGenerator/Generate": ("generate", Task.TEXT_GENERATION),
}
"""The inference methods → their `api` label and the task whose default model answers a request naming no model.
Their responses count against the unread-bytes bounds. Other methods are counted under their name (`api_of`)."""

Admit = Callable[[grpc.aio.ServicerContext], Callable[[], None]]
"""Authorizes one call before its handler runs: returns what ends the call's accounting (called once, when the
call ends), or raises the `DeepserveError` the call is answered with."""


class Authorizing(Protocol):
    def admission(self, method: str) -> Admit | None:
        """The check for `method` (asked once, at registration); None when the method is open."""


@dataclass(frozen=True)
class Boundary:
    """What the boundary needs besides the handler; one per server, shared by its methods."""

    refusals: Callable[[str, str], None] = field(default_factory=lambda: RefusalLog(logger=log))
    """Told of each request that does not parse (method, reason)."""
    accounting: Accounting | None = None
    """None: calls are not counted (the plaintext health port)."""
    pending: PendingResponses | None = None
    authorizer: Authorizing | None = None


def api_of(method: str) -> tuple[str, Task | None]:
    """The `api` label of `method` and its task: `INFERENCE`'s, else V2 methods by their name in snake case
    (`model_metadata`) and other services by theirs (`health`, `server_reflection`)."""
    if method in INFERENCE:
        return INFERENCE[method]
    service, _, name = method.lstrip("/").rpartition("/")
    return _snake(name if service == V2 else service.rpartition(".")[2]), None


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def guarded(handler: grpc.RpcMethodHandler, method: str, boundary: Boundary) -> grpc.RpcMethodHandler:
    """`handler` behind the boundary (the module's docstring). A synchronous behaviour (not served by grpc.aio) is
    returned as it is, unless the method needs authorizing (then it is an error: it would go unchecked)."""
    behaviour = handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    streams = inspect.isasyncgenfunction(behaviour)
    admit = boundary.authorizer.admission(method) if boundary.authorizer is not None else None
    if not (streams or inspect.iscoroutinefunction(behaviour)):
        if admit is not None:
            raise TypeError(f"{method}: a synchronous handler cannot be authorized; make it async")
        return handler
    parse = None if handler.request_deserializer is None else lenient(handler.request_deserializer)
    if parse is None and admit is None and boundary.accounting is None:
        return handler  # raw bytes in, nothing to check or count
    request_streaming, refusals, accounting = handler.request_streaming, boundary.refusals, boundary.accounting
    api, task = api_of(method)
    pending = boundary.pending if method in INFERENCE else None
    names = _names(None if request_streaming else handler.request_deserializer)

    async def parsed(requests: AsyncIterable[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for data in requests:
            request = parse(data)  # type: ignore[misc]
            if isinstance(request, Unparsable):
                refusals(method, request.message)
                await context.abort(*status_of(InvalidInputError(request.message)))  # abort: it must end a stream
            yield request

    async def call(data: Any, context: grpc.aio.ServicerContext) -> Any:
        account = accounting.call(api, task) if accounting is not None else None
        release, request, code = None, None, "OK"
        try:
            if admit is not None:
                release = admit(context)
            if parse is None:
                request = data
            elif request_streaming:
                request = parsed(data, context)
            elif isinstance(parsed_request := parse(data), Unparsable):
                refusals(method, parsed_request.message)
                raise InvalidInputError(parsed_request.message)
            else:
                request = parsed_request
            if pending is not None:
                pending.admit(context)
            if not streams:
                response = await behaviour(request, context)
                if pending is not None and response is not None:
                    pending.hold(context, len(response) if isinstance(response, bytes) else response.ByteSize())
                return response
            # what grpc.aio does with an async generator: write each message (so no extra hop per message)
            async with contextlib.aclosing(behaviour(request, context)) as responses:
                async for response in responses:
                    await context.write(response)
            return None
        except asyncio.CancelledError:
            code = cancelled_status(context).name
            raise
        except grpc.aio.AbortError:  # the handler (or `parsed`) ended the call itself
            code = _aborted(context)
            raise
        except Exception as err:  # noqa: BLE001 - every failure gets a status
            code = fail(context, err, getattr(request, "id", "") if request is not None else "")
            if code == "DEADLINE_EXCEEDED":
                await gone_by_deadline(context)  # cancelled (and counted as it was) when gRPC ends the call first
            return None
        finally:
            if release is not None:
                release()
            if account is not None:
                if request is not None:
                    account.named(*names(request))
                account.end(code)

    factory = _FACTORIES[handler.request_streaming, handler.response_streaming]
    return factory(call, None, _passing_bytes(handler.response_serializer))  # type: ignore[operator]


def _names(deserializer: Callable[[bytes], Any] | None) -> Callable[[Any], tuple[str, str]]:
    """What reads the model and version a request names: V2's and the task APIs' `model_name`/`model_version`,
    V2's model-level `name`/`version`; nothing for requests about no model."""
    message: Any = getattr(deserializer, "__self__", None)  # `Message.FromString` is bound to the message class
    fields = message.DESCRIPTOR.fields_by_name if hasattr(message, "DESCRIPTOR") else {}
    for model, version in (("model_name", "model_version"), ("name", "version")):
        if model in fields and version in fields:
            return operator.attrgetter(model, version)
        if model in fields:
            name = operator.attrgetter(model)
            return lambda request: (name(request), "")
    return lambda request: ("", "")


def _aborted(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _passing_bytes(serializer: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    """The response serializer, except that a handler may return its response already serialized (bytes)."""
    if serializer is None:
        return None

    def serialize(response: Any) -> bytes:
        return response if isinstance(response, bytes) else serializer(response)

    return serialize
