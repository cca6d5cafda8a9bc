"""`deepserve` command line: serve; classify / sentiment / generate (the task APIs, see `task_cli`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from service import task_cli
from service.errors import ConfigError


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model repository over gRPC", description="Serve a model repository.")
    p.add_argument("--model-repository", help="folder of models (env DEEPSERVE_MODEL_REPOSITORY; default models)")
    p.add_argument("--host", help="address to bind (env DEEPSERVE_HOST; default 127.0.0.1)")
    p.add_argument("--port", type=int, help="gRPC port, 0 for any free one (env DEEPSERVE_PORT; default 8001)")
    p.add_argument("--metrics-port", type=int, help="HTTP /metrics port (env DEEPSERVE_METRICS_PORT; default 8002)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="execution device (env DEEPSERVE_DEVICE)")
    p.add_argument("--grace-seconds", type=float, help="drain time on SIGTERM (env DEEPSERVE_GRACE_SECONDS)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="env DEEPSERVE_LOG_LEVEL")
    p.add_argument("--workers", type=int, help="inference threads (env DEEPSERVE_WORKERS; default 4)")
    p.add_argument(
        "--max-message-bytes", type=int, help="largest request/response (env DEEPSERVE_MAX_MESSAGE_BYTES; 32 MiB)"
    )
    p.add_argument(
        "--max-pending-response-bytes", type=int,
        help="unread response bytes held for all clients (env DEEPSERVE_MAX_PENDING_RESPONSE_BYTES; 512 MiB)",
    )  # fmt: skip
    p.add_argument(
        "--max-pending-response-bytes-per-connection", type=int,
        help="the same per connection (env DEEPSERVE_MAX_PENDING_RESPONSE_BYTES_PER_CONNECTION; 64 MiB)",
    )  # fmt: skip
    p.add_argument(
        "--tls-cert-file", help="PEM certificate chain: the gRPC port speaks TLS (env DEEPSERVE_TLS_CERT_FILE)"
    )
    p.add_argument("--tls-key-file", help="PEM private key of --tls-cert-file (env DEEPSERVE_TLS_KEY_FILE)")
    p.add_argument(
        "--tls-client-ca-file", help="require client certificates signed by this CA (env DEEPSERVE_TLS_CLIENT_CA_FILE)"
    )
    p.add_argument(
        "--auth-tokens-file",
        help="YAML of token digests and scopes; clients send a bearer token (env DEEPSERVE_AUTH_TOKENS_FILE)",
    )
    p.add_argument(
        "--model-control-mode", choices=["none", "explicit"],
        help="none (default): model load/unload refused; explicit: allowed (env DEEPSERVE_MODEL_CONTROL_MODE)",
    )  # fmt: skip
    p.add_argument(
        "--health-port", type=int, help="plaintext port serving only grpc.health.v1 (env DEEPSERVE_HEALTH_PORT)"
    )


def _run_serve(args: argparse.Namespace) -> int:
    from service import logs
    from service.app import serve
    from service.config import ServerSettings

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "func") and v is not None}
    try:
        settings = ServerSettings(**flags)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        print(f"deepserve: invalid settings: {problems}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    try:
        return serve(settings)
    except (ConfigError, OSError) as err:
        print(f"deepserve: {err}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deepserve", description="Model serving on ONNX Runtime over gRPC.")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    task_cli.add_parsers(sub)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _run_serve(args)
    if args.command in task_cli.COMMANDS:
        return task_cli.run(args)
    parser.error(f"unknown command {args.command}")
    return 2
