"""Build the gRPC server: one port for V2, the task APIs, health and reflection."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from service.config import ServerSettings
from service.errors import BindError
from service.grpc._generated.inference import grpc_service_pb2, grpc_service_pb2_grpc
from service.grpc.boundary import Boundary
from service.grpc.reflection import add_reflection
from service.grpc.requests import GuardedServer
from service.grpc.tls import server_credentials
from service.grpc.v2 import InferenceServicer
from service.ports import check_free
from service.tls import CertificateFiles

V2_SERVICE = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


MAX_PENDING_CALLS = 65_536


def server_options(settings: ServerSettings) -> list[tuple[str, int]]:
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_pings_without_data", 0),
        # gRPC core cancels calls the application has not picked up yet beyond 1,000 (soft) and 3,000 (hard):
        # under a burst clients would get CANCELLED, uncounted. The application refuses overload itself, with
        # UNAVAILABLE "queue full", counted; this only keeps core from answering first.
        ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
        ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_CALLS),
    ]
    if settings.max_connection_age_s is not None:
        options += [
            ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_s * 1000)),
        ]
    return options


def build_server(
    settings: ServerSettings,
    inference: InferenceServicer,
    health: HealthServicer,
    extra_services: list[str],
    boundary: Boundary | None = None,
    certificates: CertificateFiles | None = None,
) -> tuple[grpc.aio.Server, int]:
    """The server with every service registered and its port bound (not started), speaking TLS with `certificates`
    when given. Returns the bound port.

    Services register through `GuardedServer`, behind the request boundary (`boundary.py`; the task services,
    added later by `tasks.add_task_services`, go behind the same one)."""
    server = grpc.aio.server(options=server_options(settings))
    guarded = GuardedServer(server, boundary)
    grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(inference, guarded)
    health_pb2_grpc.add_HealthServicer_to_server(health, guarded)
    add_reflection(guarded, [V2_SERVICE, *extra_services])
    credentials = None if certificates is None else server_credentials(certificates)
    return server, _bind(server, settings.host, settings.port, "port", credentials)


def build_health_server(settings: ServerSettings, health: HealthServicer) -> tuple[grpc.aio.Server, int]:
    """A plaintext server on `settings.health_port` with only grpc.health.v1.Health (Kubernetes' gRPC probes
    cannot speak TLS), answering from the main server's `health` so both report the same statuses."""
    assert settings.health_port is not None
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health, GuardedServer(server))
    return server, _bind(server, settings.host, settings.health_port, "health_port")


PORT_NAMES = {"port": "gRPC port", "health_port": "health port"}


def _bind(
    server: grpc.aio.Server, host: str, port: int, setting: str, credentials: grpc.ServerCredentials | None = None
) -> int:
    """The bound port; a `BindError` naming the port and its `setting` when it cannot be bound. Checked first with
    a socket of our own: gRPC's failure is a C-core log line and a RuntimeError without the reason."""
    what, address = PORT_NAMES[setting], f"{host}:{port}"
    check_free(host, port, what, setting)
    try:
        bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise BindError(what, address, setting, "in use?")
    return bound
