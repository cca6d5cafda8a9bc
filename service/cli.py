"""`deepserve` command line: serve; classify / sentiment / generate (the task APIs, see `client/commands.py`)."""

from __future__ import annotations

import argparse
import enum
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import ValidationError

from service.client import commands
from service.config import ServerSettings
from service.errors import BindError, ConfigError

MIB = 1024 * 1024
EXIT_START_FAILED = 1
EXIT_USAGE = 2
"""Bad settings, and a port that cannot be bound: what the user typed (or set in the environment) must change."""


def _shown(default: object) -> str:
    """A `ServerSettings` default as the user would type it."""
    if default is None:
        return "off"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, enum.Enum):
        return str(default.value)
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    if isinstance(default, int) and default >= MIB and default % MIB == 0:
        return f"{default} ({default // MIB} MiB)"
    return str(default)


def _setting(p: argparse.ArgumentParser, name: str, help: str, **kwargs: Any) -> None:
    """`--NAME` for the `ServerSettings` field `name`. Its help ends with the environment variable and the default,
    both read from `ServerSettings`, so they cannot drift. The flag has no argparse default: unset, it leaves the
    environment variable, then the field's default, in charge."""
    field = ServerSettings.model_fields[name]
    more = f"env DEEPSERVE_{name.upper()}; default {_shown(field.default)}"
    p.add_argument(f"--{name.replace('_', '-')}", help=f"{help} ({more})", **kwargs)


def _env_only(p: argparse.ArgumentParser) -> str:
    """The epilog of `serve --help`: the settings that have no flag, with their defaults."""
    flags = {action.dest for action in p._actions}
    rest = [
        f"DEEPSERVE_{name.upper()} (default {_shown(field.default)})"
        for name, field in ServerSettings.model_fields.items()
        if name not in flags
    ]
    return "Settings without a flag, by environment variable only: " + ", ".join(rest) + "."


def _serve_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "serve", help="serve a model repository over gRPC and HTTP", description="Serve a model repository."
    )
    _setting(p, "model_repository", "folder of models")
    _setting(p, "host", "address to bind")
    _setting(p, "port", "gRPC port, 0 for any free one", type=int)
    _setting(p, "metrics_port", "HTTP /metrics port, 0 for any free one", type=int)
    _setting(p, "http_port", "HTTP/REST port (KServe V2), 0 to disable", type=int)
    _setting(p, "device", "execution device", choices=["auto", "cpu", "cuda"])
    _setting(p, "grace_seconds", "on SIGTERM/SIGINT, seconds in-flight requests get to finish", type=float)
    _setting(p, "log_level", "JSON log lines on stderr from this level", choices=["debug", "info", "warning", "error"])
    _setting(p, "workers", "model runs at once: batches, lone requests and generation steps together", type=int)
    _setting(p, "max_message_bytes", "largest request/response", type=int)
    _setting(p, "max_pending_response_bytes", "unread response bytes held for all clients", type=int)
    _setting(p, "max_pending_response_bytes_per_connection", "the same per connection", type=int)
    _setting(p, "tls_cert_file", "PEM certificate chain: the gRPC port speaks TLS")
    _setting(p, "tls_key_file", "PEM private key of --tls-cert-file")
    _setting(p, "tls_client_ca_file", "require client certificates signed by this CA")
    _setting(p, "auth_tokens_file", "YAML of token digests and scopes; clients send a bearer token")
    _setting(p, "model_control_mode", "explicit: RepositoryModelLoad/Unload allowed", choices=["none", "explicit"])
    _setting(p, "health_port", "plaintext port serving only grpc.health.v1", type=int)
    _setting(p, "strict_readiness", "ready only while all models serve; false: once started", choices=["true", "false"])
    return p


def _version() -> str:
    try:
        return version("deepserve")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _run_serve(args: argparse.Namespace) -> int:
    from service import logs
    from service.app import serve

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "func") and v is not None}
    try:
        settings = ServerSettings(**flags)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        print(f"deepserve: invalid settings: {problems}", file=sys.stderr)
        return EXIT_USAGE
    logs.configure(settings.log_level)
    try:
        return serve(settings)
    except BindError as err:
        print(f"deepserve: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (ConfigError, OSError) as err:
        print(f"deepserve: {err}", file=sys.stderr)
        return EXIT_START_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deepserve", description="Model serving on ONNX Runtime over gRPC.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = _serve_parser(sub)
    serve.epilog = _env_only(serve)
    commands.add_parsers(sub)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _run_serve(args)
    if args.command in commands.COMMANDS:
        return commands.run(args)
    parser.error(f"unknown command {args.command}")
    return 2
