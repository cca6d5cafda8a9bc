"""Executable documentation: the docs' examples (see `tests/e2e/docs_blocks.py`) run against `deepserve serve` on the
committed models; `python -m tests.e2e.docs_examples --update` (`make docs`) rewrites the outputs that differ."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.docs_blocks import (
    ANY_LINES,
    DOCS,
    DOCS_HTTP,
    DOCS_SERVER,
    DOCS_UNUSED,
    ROOT,
    Block,
    Command,
    blocks,
    matches,
)
from tests.ports import free_port

COMMAND_TIMEOUT_S = 120


class DocsServer:
    """`deepserve serve` on the committed models, and the commands of the docs run against it."""

    def __init__(self, log: Path) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.unused = f"127.0.0.1:{free_port()}"  # nothing listens there (closed again at once)
        self.http = f"127.0.0.1:{free_port()}"
        bin_dir = Path(sys.executable).parent
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "DEEPSERVE_SERVER": self.address,
            "PYTHONPATH": str(ROOT),
        }
        self.env.pop("DEEPSERVE_TOKEN", None)
        self.log = log
        port, http_port = self.address.rsplit(":", 1)[1], self.http.rsplit(":", 1)[1]
        args = [
            "serve",
            "--model-repository",
            "models",
            "--device",
            "cpu",
            "--host",
            "127.0.0.1",
            "--port",
            port,
            "--metrics-port",
            "0",
            "--http-port",
            http_port,
            "--log-level",
            "warning",
        ]
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(bin_dir / "deepserve"), *args], cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def wait_serving(self, timeout: float = 120.0) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"deepserve serve exited early:\n{self.log.read_text()}")
                try:
                    if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:  # SERVING
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(f"deepserve serve not SERVING after {timeout}s:\n{self.log.read_text()}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def _to_real(self, text: str) -> str:
        return text.replace(DOCS_SERVER, self.address).replace(DOCS_UNUSED, self.unused).replace(DOCS_HTTP, self.http)

    def _to_docs(self, text: str) -> str:
        return text.replace(self.address, DOCS_SERVER).replace(self.unused, DOCS_UNUSED).replace(self.http, DOCS_HTTP)

    def run(self, command: str) -> tuple[list[str], int]:
        """The command's output lines (stdout and stderr in the order written) and its exit status."""
        result = subprocess.run(
            ["bash", "-c", self._to_real(command)],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=COMMAND_TIMEOUT_S,
        )
        text = self._to_docs(result.stdout.decode(errors="replace"))
        return text.removesuffix("\n").split("\n") if text else [], result.returncode

    def run_python(self, source: str) -> tuple[str, int]:
        result = subprocess.run(
            [sys.executable, "-c", self._to_real(source)],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )
        return result.stdout + result.stderr, result.returncode


@contextmanager
def docs_server(log: Path) -> Iterator[DocsServer]:
    server = DocsServer(log)
    try:
        server.wait_serving()
        yield server
    finally:
        server.close()


@dataclass
class Outcome:
    command: Command
    actual: list[str]
    exit_code: int

    @property
    def ok(self) -> bool:
        return self.exit_code == self.command.exit_code and matches(self.command.expected, self.actual)

    def transcript(self, expected: bool) -> list[str]:
        """The command with the expected (or actual) output, as the block shows it."""
        c = self.command
        lines, code = (c.expected, c.exit_code) if expected else (self.actual, self.exit_code)
        note = c.exit_note if code == c.exit_code else ""
        return [f"$ {c.text}", *lines, *([f"[exit status {code}{note}]"] if code else [])]


def check(block: Block, server: DocsServer) -> list[Outcome]:
    return [Outcome(c, *server.run(c.text)) for c in block.commands()]


def describe(block: Block, outcomes: list[Outcome]) -> str:
    """A readable difference for a failed block."""
    parts = [f"{block.name}: the output differs from the docs (`make docs` rewrites them; review with git diff)"]
    for o in outcomes:
        if not o.ok:
            parts += ["--- docs", *o.transcript(expected=True), "+++ actual", *o.transcript(expected=False)]
    return "\n".join(parts)


def update(path: str, server: DocsServer) -> list[str]:
    """Rewrite the output of every console block of `path` that no longer matches. Returns what changed."""
    lines = (ROOT / path).read_text().splitlines()
    changed: list[str] = []
    for block in reversed(blocks(path)):  # from the end, so earlier line numbers stay valid
        if block.lang != "console":
            continue
        outcomes = check(block, server)
        if all(o.ok for o in outcomes):
            continue
        body = [line for o in outcomes for line in o.transcript(expected=o.ok)]
        lines[block.line : block.end] = body
        lost = any(ANY_LINES in line for o in outcomes if not o.ok for line in o.command.expected)
        changed.append(block.name + (" (its `…` lines were replaced by this run's output)" if lost else ""))
    if changed:
        (ROOT / path).write_text("\n".join(lines) + "\n")
    return changed[::-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.e2e.docs_examples",
        description="Run the docs' command examples against the committed models; --update rewrites their output.",
    )
    parser.add_argument("--update", action="store_true", help="rewrite the outputs that differ")
    parser.add_argument("files", nargs="*", default=list(DOCS), help=f"Markdown files (default: {' '.join(DOCS)})")
    args = parser.parse_args(argv)
    import tempfile

    failed = 0
    with tempfile.TemporaryDirectory() as tmp, docs_server(Path(tmp) / "serve.log") as server:
        for path in args.files:
            if args.update:
                for name in update(path, server):
                    print(f"updated {name}")
            for block in blocks(path):
                if block.lang == "python":
                    output, code = server.run_python("\n".join(block.body))
                    if code != 0:
                        failed += 1
                        print(f"{block.name}: the python example failed (exit status {code}):\n{output}")
                    continue
                outcomes = check(block, server)
                if not all(o.ok for o in outcomes):
                    failed += 1
                    print(describe(block, outcomes))
    print(f"{failed} example(s) differ from the docs" if failed else "every example matches the docs")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
