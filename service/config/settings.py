"""`deepserve serve`'s settings: flags and `DEEPSERVE_*` environment variables (`ServerSettings`)."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Device(str, enum.Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


PositiveInt = Annotated[int, Field(ge=1)]


class ServerSettings(BaseSettings):
    """`deepserve serve` flags; each has a `DEEPSERVE_<NAME>` environment variable."""

    model_config = SettingsConfigDict(env_prefix="DEEPSERVE_", extra="forbid", frozen=True)

    model_repository: Path = Path("models")
    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=0, le=65535)
    """gRPC port; 0 picks a free one."""
    metrics_port: int | None = Field(default=8002, ge=0, le=65535)
    """HTTP port for /metrics; None disables the endpoint."""
    http_port: int = Field(default=8000, ge=0, le=65535)
    """HTTP/REST port: KServe V2 REST (`/v2/...`), next to gRPC on the same models, limits and tokens; 0 disables
    it. 8000 as in Triton (HTTP 8000, gRPC 8001, metrics 8002)."""
    device: Device = Device.AUTO
    grace_seconds: float = Field(default=10.0, ge=0)
    """On SIGTERM/SIGINT, how long in-flight requests on both ports get to finish, counted from the signal; those
    still running then are cut (gRPC: cancelled; HTTP: 503, or an `event: error` ending a stream)."""
    drain_notice_s: float = Field(default=1.0, ge=0)
    """On SIGTERM/SIGINT, how long the server reports NOT_SERVING while still accepting, before it stops
    taking new calls (part of the grace period)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_message_bytes: PositiveInt = 32 * 1024 * 1024
    """Largest gRPC message accepted or sent; larger requests get RESOURCE_EXHAUSTED."""
    max_pending_response_bytes: PositiveInt = 512 * 1024 * 1024
    """Bytes of responses the server holds for clients that have not read them yet, all connections together;
    past it, new requests get RESOURCE_EXHAUSTED until clients read or go away (docs/limits.md)."""
    max_pending_response_bytes_per_connection: PositiveInt = 64 * 1024 * 1024
    """The same, per client connection: a client that stops reading stalls only itself."""
    workers: PositiveInt = 4
    """Model runs at once, all models together: V2 batches (in as many threads), lone requests run on the event
    loop, and generation steps (each lane's thread takes a run slot per step)."""
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    """The event loop that serves gRPC, HTTP and /metrics: uvloop (libuv, in C) or asyncio's own. uvloop served
    20-30% more requests per second at 8 and 32 concurrent clients (docs/performance.md)."""
    keepalive_time_s: float = Field(default=30.0, gt=0)
    max_connection_age_s: float | None = Field(default=300.0, gt=0)
    """Connections are closed (gracefully) after this age so clients spread over new replicas."""
    max_connection_age_grace_s: float = Field(default=30.0, ge=0)
    tls_cert_file: Path | None = None
    """PEM certificate chain; with `tls_key_file` the gRPC port speaks TLS only and the HTTP port HTTPS only. The
    files are read again when they change, so a certificate manager can rotate them in place: new connections on
    either port get the new certificate."""
    tls_key_file: Path | None = None
    """PEM private key of `tls_cert_file`."""
    tls_client_ca_file: Path | None = None
    """PEM CA bundle: clients must present a certificate signed by it (mutual TLS). Needs `tls_cert_file`."""
    auth_tokens_file: Path | None = None
    """YAML `tokens: [{name, sha256, scopes: [infer|admin], max_concurrent_requests}]`: clients send
    `authorization: Bearer <token>`; reloaded when it changes (docs/security.md)."""
    model_control_mode: Literal["none", "explicit"] = "none"
    """`none`: RepositoryModelLoad/Unload are refused. `explicit`: allowed (with the `admin` scope when tokens
    are configured). Loading a model runs code from the repository, so it is off unless asked for."""
    health_port: int | None = Field(default=None, ge=0, le=65535)
    """A plaintext port serving only grpc.health.v1.Health (Kubernetes' gRPC probes cannot speak TLS)."""
    strict_readiness: bool = True
    """Ready (health `""` SERVING, `ServerReady` true) only while every model the server is meant to serve is
    loaded: one that failed to load (at start-up or on a `RepositoryModelLoad`) makes it not ready until it
    loads or is unloaded. `false`: ready once start-up has finished, until it drains (Triton's
    `--strict-readiness`)."""

    @model_validator(mode="after")
    def _tls_complete(self) -> ServerSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both --tls-cert-file and --tls-key-file, or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("--tls-client-ca-file (mutual TLS) needs --tls-cert-file and --tls-key-file")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None
