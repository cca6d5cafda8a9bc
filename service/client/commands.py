"""`deepserve classify | sentiment | generate`: the task APIs from a shell, through `service.client.TaskClient`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import grpc

from service.client.tasks import DEFAULT_TARGET, ClientError, TaskClient

COMMANDS = ("classify", "sentiment", "generate")
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INVALID, EXIT_NOT_FOUND, EXIT_TIMEOUT = 0, 1, 2, 3, 4, 5, 6
EXIT_DENIED = 7
EXIT_INTERRUPTED = 130
EXIT_CODES_HELP = """exit codes:
  0    success
  1    the server failed (INTERNAL) or something unexpected happened
  2    bad usage: unknown option, unreadable file
  3    server unavailable: not running or unreachable, no model ready, queue full, shutting down; retry later
  4    the server refused the input (INVALID_ARGUMENT): bad image, empty text, parameter out of range
  5    no such model (NOT_FOUND)
  6    timed out (DEADLINE_EXCEEDED); raise --timeout
  7    not allowed: no or unknown token (UNAUTHENTICATED), or the token lacks the scope (PERMISSION_DENIED)
  130  interrupted (Ctrl-C)
"""
STATUS_EXIT = {
    grpc.StatusCode.UNAVAILABLE: EXIT_UNAVAILABLE,
    grpc.StatusCode.INVALID_ARGUMENT: EXIT_INVALID,
    grpc.StatusCode.RESOURCE_EXHAUSTED: EXIT_INVALID,
    grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
    grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_TIMEOUT,
    grpc.StatusCode.CANCELLED: EXIT_INTERRUPTED,
    grpc.StatusCode.UNAUTHENTICATED: EXIT_DENIED,
    grpc.StatusCode.PERMISSION_DENIED: EXIT_DENIED,
}


class UsageError(Exception):
    """Bad input on the command line (exit 2)."""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--server",
        default=os.environ.get("DEEPSERVE_SERVER", DEFAULT_TARGET),
        help=f"HOST:PORT or dns:///HOST:PORT (round-robin over its addresses); env DEEPSERVE_SERVER, "
        f"default {DEFAULT_TARGET}",
    )
    common.add_argument("--timeout", type=_positive(float), default=None, help="seconds to wait for the answer")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--model", default="", help="model name (default: the server's model for the task)")
    common.add_argument("--model-version", default="", help="model version (default: the newest)")
    common.add_argument(
        "--token",
        default=os.environ.get("DEEPSERVE_TOKEN"),
        help="bearer token for a server with --auth-tokens-file; env DEEPSERVE_TOKEN (safer: a command line is "
        "visible to other users of the machine)",
    )
    common.add_argument("--tls-ca-file", help="PEM CA of the server's certificate: connect with TLS")
    common.add_argument("--tls-cert-file", help="PEM client certificate, for a server that requires one (mutual TLS)")
    common.add_argument("--tls-key-file", help="PEM private key of --tls-cert-file")

    def parser(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=description,
            parents=[common],
            epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    p = parser("classify", "classify images", "Classify image files (PNG, JPEG, BMP, GIF, WebP); - reads stdin.")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top-k", type=_positive(int), default=0, help="labels per image (default 5, or fewer classes)")
    p.set_defaults(func=_classify, timeout_default=30.0)

    p = parser("sentiment", "sentiment of texts", "Sentiment of each TEXT; - reads one text per line from stdin.")
    p.add_argument("texts", nargs="+", metavar="TEXT")
    p.set_defaults(func=_sentiment, timeout_default=30.0)

    p = parser("generate", "generate text", "Continue PROMPT, printing text as it is generated; - reads stdin.")
    p.add_argument("prompt", metavar="PROMPT")
    p.add_argument("--max-tokens", type=_positive(int), default=0, help="tokens to generate (default: the model's)")
    p.add_argument("--temperature", type=float, default=None, help="0 is greedy (default 1)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most probable tokens (0: all)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling, in (0, 1] (default 1)")
    p.add_argument(
        "--repetition-penalty", type=float, default=None, help="above 1, generated tokens are less likely (default 1)"
    )
    p.add_argument("--seed", type=int, default=None, help="same seed, same text")
    p.add_argument("--stop", action="append", default=[], help="stop before this text (repeatable)")
    p.set_defaults(func=_generate, timeout_default=300.0)


def run(args: argparse.Namespace) -> int:
    """Run a task command; every failure becomes a message on stderr and an exit code."""
    timeout = args.timeout if args.timeout is not None else args.timeout_default
    try:
        with _connect(args, timeout) as client:
            return int(args.func(client, args))
    except UsageError as err:
        print(f"deepserve {args.command}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except ClientError as err:
        print(f"deepserve {args.command}: {_explain(err, args.server)}", file=sys.stderr)
        return STATUS_EXIT.get(err.code, EXIT_ERROR)
    except KeyboardInterrupt:
        print(f"deepserve {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _connect(args: argparse.Namespace, timeout: float) -> TaskClient:
    """The client for the command's flags; unreadable TLS files or a bad token are usage errors, and a token
    about to cross the network without TLS is a warning on stderr."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            client = TaskClient(
                args.server,
                timeout,
                token=args.token,
                tls_ca_file=args.tls_ca_file,
                tls_cert_file=args.tls_cert_file,
                tls_key_file=args.tls_key_file,
            )
    except OSError as err:
        raise UsageError(f"cannot read {err.filename}: {err.strerror or err}") from None
    except ValueError as err:
        raise UsageError(str(err)) from None
    for warning in caught:
        print(f"deepserve {args.command}: warning: {warning.message}", file=sys.stderr)
    return client


def _classify(client: TaskClient, args: argparse.Namespace) -> int:
    images = [_read_bytes(path) for path in args.images]
    result = client.classify(images, args.top_k, args.model, args.model_version)
    if args.json:
        pairs = zip(args.images, result.results, strict=True)
        rows = [{"image": path, "labels": [vars_of(s) for s in scores]} for path, scores in pairs]
        _print_json({"model": result.model, "version": result.version, "results": rows})
        return EXIT_OK
    for path, scores in zip(args.images, result.results, strict=True):
        print(f"{path}: " + ", ".join(f"{s.label} ({s.probability:.3f})" for s in scores))
    return EXIT_OK


def _sentiment(client: TaskClient, args: argparse.Namespace) -> int:
    texts = [line for t in args.texts for line in (_stdin_lines() if t == "-" else [t])]
    result = client.analyze(texts, args.model, args.model_version)
    if args.json:
        rows = [{"text": t, **vars_of(s)} for t, s in zip(texts, result.results, strict=True)]
        _print_json({"model": result.model, "version": result.version, "results": rows})
        return EXIT_OK
    for text, s in zip(texts, result.results, strict=True):
        note = f"  [truncated to {s.tokens} tokens]" if s.truncated else ""
        print(f"{s.label}\t{s.probability:.3f}\t{text}{note}")
    return EXIT_OK


def _generate(client: TaskClient, args: argparse.Namespace) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    stream = client.generate(
        prompt,
        max_new_tokens=args.max_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        stop=args.stop,
        model=args.model,
        version=args.model_version,
        repetition_penalty=args.repetition_penalty,
    )
    printed = False
    try:
        for text in stream:
            if args.json:
                _print_json({"text": text})
            else:
                print(text, end="", flush=True)
                printed = True
    except KeyboardInterrupt:
        stream.cancel()
        raise
    finally:
        if printed and stream.summary is None:
            print(flush=True)  # the error message starts on its own line
    summary = stream.summary
    assert summary is not None
    if args.json:
        _print_json(vars_of(summary))
    else:
        print(flush=True)  # before the summary on stderr, which a shell's 2>&1 would otherwise print first
        cut = ", prompt truncated" if summary.prompt_truncated else ""
        print(
            f"[{summary.finish_reason}: {summary.prompt_tokens} prompt tokens, {summary.generated_tokens} generated"
            f"{cut}; {summary.model} v{summary.version}]",
            file=sys.stderr,
        )
    return EXIT_OK


# ---- helpers --------------------------------------------------------------------------------------
def vars_of(value: object) -> dict:
    return {name: getattr(value, name) for name in value.__slots__}  # type: ignore[attr-defined]


def _print_json(value: object) -> None:
    print(json.dumps(value, ensure_ascii=False), flush=True)


def _read_bytes(path: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror or err}") from None


def _stdin_lines() -> list[str]:
    return [line for line in sys.stdin.read().splitlines() if line.strip()]


def _explain(err: ClientError, server: str) -> str:
    if err.code is grpc.StatusCode.UNAVAILABLE and "connect" in err.message.lower():
        return (
            f"cannot reach the server at {server} ({err.message}); is it running? "
            "Start one with `deepserve serve`, or point --server at it"
        )
    if err.code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer in time ({err.message}); try a larger --timeout"
    if err.code is grpc.StatusCode.UNAUTHENTICATED:
        return f"unauthenticated: {err.message}; pass --token or set DEEPSERVE_TOKEN"
    return f"{err.code.name.lower().replace('_', ' ')}: {err.message}"


def _positive(kind: Callable[[str], float | int]) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse
