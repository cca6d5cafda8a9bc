"""Composition root: settings → repository → registry → gRPC server + HTTP/REST port + metrics endpoint; lifecycle.

Start-up: check that the repository holds models, bind the port (liveness answers at once), load and warm
up the models, then report SERVING: with strict readiness (the default) only while every model the server
is meant to serve does (`ModelRegistry.all_ready`), re-evaluated on every load and unload. On
SIGTERM/SIGINT: NOT_SERVING (gRPC health and /v2/health/ready), stop accepting on both ports, let in-flight
requests finish within `grace_seconds`, close the batchers, exit 0. The HTTP port runs on this event loop, as
gRPC does: both call the same registry, pipelines and batchers.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from service.accounting import Accounting
from service.auth import TokenStore
from service.batching.slots import RunSlots
from service.collector import settle
from service.config import ServerSettings
from service.grpc.auth import Authorizer
from service.grpc.backpressure import PendingResponses
from service.grpc.boundary import Boundary
from service.grpc.requests import GuardedServer
from service.grpc.server import V2_SERVICE, build_health_server, build_server
from service.grpc.tasks import SERVICES as TASK_SERVICES
from service.grpc.tasks import add_task_services
from service.grpc.v2 import InferenceServicer
from service.http.auth import HttpAuthorizer
from service.http.server import HttpEndpoint
from service.http.tasks import TaskRoutes
from service.http.tls import server_context
from service.http.v2 import V2Api
from service.memory import HeapTrimmer, keep_heap_warm
from service.metrics import Metrics, RequestRecorder
from service.metrics_http import MetricsEndpoint
from service.registry import ModelRegistry
from service.repository import ModelRepository
from service.runtime import available_providers, check_device
from service.task_apis import TaskAPIs
from service.tls import CertificateFiles

log = logging.getLogger(__name__)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SETTLE_AFTER_S = 1.0
"""After the loaded models change, how long to wait before `settle` (one pass for a reload's several changes)."""
LIVENESS = "liveness"
"""The health name for start-up and liveness probes (Triton's /v2/health/live): SERVING from the end of start-up,
whatever loaded, until the process exits. A model that fails to load turns `""` off (strict readiness), not this,
so a probe on it restarts only a server that stops answering."""


class App:
    def __init__(self, settings: ServerSettings) -> None:
        check_device(settings.device, available_providers())
        repository = ModelRepository(settings.model_repository)
        repository.require_models()
        self.authorizer = _authorizer(settings)
        self.certificates = _certificates(settings)
        """The TLS files both ports serve, watched for rotation (None: plaintext)."""
        self.settings = settings
        self.metrics = Metrics()
        self.metrics_endpoint = MetricsEndpoint(self.metrics.registry)
        self.executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="infer")
        # As many model runs at once as workers: V2 batches, lone requests on the event loop, generation steps.
        slots = RunSlots(settings.workers)
        self.registry = ModelRegistry(repository, self.metrics, self.executor, settings.device, slots)
        self.health = HealthServicer()
        self.started = False
        """Start-up has finished (the models were loaded) and the server is not draining."""
        self.draining = False
        self.port = 0
        self.metrics_port: int | None = None
        self.http_port: int | None = None
        accounting = Accounting(RequestRecorder(self.metrics), self.registry)
        pending = PendingResponses(
            settings.max_pending_response_bytes,
            settings.max_pending_response_bytes_per_connection,
            self.metrics.pending_response_bytes,
        )
        boundary = Boundary(accounting=accounting, pending=pending, authorizer=self.authorizer)
        control = settings.model_control_mode == "explicit"
        inference = InferenceServicer(self.registry, self.ready, model_control=control)
        self.tasks = TaskAPIs(self.registry)
        self.services = [V2_SERVICE, *TASK_SERVICES]
        self.server, self.port = build_server(
            settings, inference, self.health, list(TASK_SERVICES), boundary, self.certificates
        )
        add_task_services(GuardedServer(self.server, boundary), self.tasks)
        self.http = _http_endpoint(
            settings,
            V2Api(self.registry, self.ready, settings.max_message_bytes, model_control=control),
            TaskRoutes(self.tasks, settings.max_message_bytes),
            accounting,
            self.authorizer,
            self.certificates,
        )
        self.health_server: grpc.aio.Server | None = None
        self.health_port: int | None = None
        """Plaintext port with only grpc.health.v1, answered by `self.health` (the main port's servicer)."""
        if settings.health_port is not None:
            self.health_server, self.health_port = build_health_server(settings, self.health)
        self._background: set[asyncio.Task] = set()
        self._settling: asyncio.TimerHandle | None = None
        self.registry.listeners.append(self._health_changed)

    async def start(self) -> None:
        s = self.settings
        await self._update_health()
        if self.http is not None:
            try:
                self.http.bind(s.host, s.http_port)
            except OSError:
                await self.server.stop(None)
                raise
        await self.server.start()
        if s.metrics_port is not None:
            try:
                self.metrics_port = await self.metrics_endpoint.serve(s.host, s.metrics_port)
            except OSError:
                await self.server.stop(None)  # or the gRPC server outlives the loop and fails noisily at exit
                raise
        if self.http is not None:
            try:
                self.http_port = await self.http.serve(s.host, s.http_port)
            except OSError:
                await self.server.stop(None)
                await self.metrics_endpoint.close()
                raise
        if self.health_server is not None:
            await self.health_server.start()
        log.info(
            "listening",
            extra={
                "grpc": f"{s.host}:{self.port}",
                "http": self.http_port,
                "metrics": self.metrics_port,
                "device": s.device.value,
                "providers": available_providers(),
                "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
                "tls": s.tls,
                "mutual_tls": s.tls_client_ca_file is not None,
                "health": self.health_port,
            },
        )
        await self.registry.load_all()
        settle()  # the long-lived objects out of the cycle collector's way (see service/collector.py)
        self.started = True
        await self._update_health()
        loaded = sorted({p.name for p in self.registry.loaded()})
        extra = {"models": loaded, "repository": str(self.registry.repository.root)}
        if self.ready():
            log.info("ready", extra=extra)
        else:
            log.error("started, not ready: a model failed to load (see above; --strict-readiness)", extra=extra)

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING at once, stop taking new calls after the notice, and give the calls in progress on both
        ports until `grace` seconds after this began (the notice is part of it); the rest are cut then."""
        grace = self.settings.grace_seconds if grace is None else grace
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        self.started, self.draining = False, True
        if self._settling is not None:
            self._settling.cancel()
        log.info("draining", extra={"grace_seconds": grace})
        await self._update_health()
        # Clients that watch health (or a load balancer's probes) move away before new calls are refused:
        # calls that reach a stopping gRPC server before their handler starts are cancelled.
        await asyncio.sleep(min(self.settings.drain_notice_s, grace))
        left = max(0.0, deadline - loop.time())
        if self.http is not None:
            self.http.stop_accepting(left)
        await self.server.stop(left)
        if self.http is not None:
            await self.http.close()
        if self.health_server is not None:
            await self.health_server.stop(None)
        await self.metrics_endpoint.close()
        await self.registry.close(timeout=1.0)
        self.executor.shutdown(wait=True, cancel_futures=False)
        log.info("stopped")

    async def run_until_signal(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        await self.stop()

    def ready(self) -> bool:
        """Health `""` and the V2 service SERVING, `ServerReady` true: started and not draining, and with strict
        readiness every model the server is meant to serve serving (`ModelRegistry.all_ready`)."""
        return self.started and (not self.settings.strict_readiness or self.registry.all_ready())

    def _health_changed(self) -> None:
        if self.started:
            task = asyncio.get_running_loop().create_task(self._update_health())
            self._background.add(task)  # keep a reference until done, or the loop may drop it
            task.add_done_callback(self._background.discard)
            if self._settling is None:  # the models changed: settle once the registry is done (a reload notifies often)
                self._settling = asyncio.get_running_loop().call_later(SETTLE_AFTER_S, self._settle)

    def _settle(self) -> None:
        self._settling = None
        settle()

    async def _update_health(self) -> None:
        """Every health status from the current state. A task service serves while started and a model can serve
        its task, whatever strict readiness says of the other models: its clients need only that one."""
        ready = self.ready()
        for name in ("", *self.services):
            task = TASK_SERVICES.get(name)
            serving = ready if task is None else self.started and self.tasks.serves(task)
            await self.health.set(name, SERVING if serving else NOT_SERVING)  # type: ignore[arg-type]
        live = self.started or self.draining
        await self.health.set(LIVENESS, SERVING if live else NOT_SERVING)  # type: ignore[arg-type]


def _http_endpoint(
    settings: ServerSettings,
    v2: V2Api,
    tasks: TaskRoutes,
    accounting: Accounting,
    authorizer: Authorizer | None,
    certificates: CertificateFiles | None,
) -> HttpEndpoint | None:
    """The HTTP port (None with --http-port 0): the gRPC port's TLS files (one watcher: a rotation reaches both ports)
    and tokens (one in-flight count per token across both protocols)."""
    if settings.http_port == 0:
        return None
    tls = None if certificates is None else server_context(certificates)
    http_authorizer = None if authorizer is None else HttpAuthorizer(authorizer.store, authorizer.in_flight)
    return HttpEndpoint(v2, tasks, accounting, http_authorizer, tls)


def _certificates(settings: ServerSettings) -> CertificateFiles | None:
    """The TLS files, checked (a `ConfigError` naming the flag), or None without --tls-cert-file."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    return CertificateFiles(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)


def _authorizer(settings: ServerSettings) -> Authorizer | None:
    """The bearer-token check (None without --auth-tokens-file: every call is let in). A tokens file that does not
    read or validate is a `ConfigError`. Model control with no tokens gets a loud warning."""
    if settings.auth_tokens_file is not None:
        return Authorizer(TokenStore(settings.auth_tokens_file))
    if settings.model_control_mode == "explicit":
        log.warning(
            "--model-control-mode explicit without --auth-tokens-file: anyone who can reach the port can load and "
            "unload models; give the server a tokens file (admin scope) or keep model control off"
        )
    return None


def serve(settings: ServerSettings) -> int:
    keep_heap_warm()  # large requests reuse warm pages; what a burst took goes back to the OS soon after
    trimmer = HeapTrimmer().start()

    async def main() -> None:
        await App(settings).run_until_signal()  # the gRPC server must be built inside the running loop

    try:
        _loop_runner(settings.event_loop)(main())
    finally:
        trimmer.stop()
    return 0


def _loop_runner(choice: str) -> Callable[[Coroutine[Any, Any, None]], None]:
    """`asyncio.run` on the event loop `choice` names. uvloop (libuv) runs the loop's own work (callbacks,
    futures, sockets) in C: 20-30% more V2 requests per second at 8 and 32 concurrent clients on 2 CPUs
    (docs/performance.md). Where it cannot be imported (Windows), the standard loop, with a warning."""
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed; serving on asyncio's own event loop (DEEPSERVE_EVENT_LOOP)")
        else:
            return uvloop.run
    return asyncio.run
