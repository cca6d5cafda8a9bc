"""Executable documentation: the command examples in the docs run against a real server on the committed models.

In the Markdown files of `DOCS`, every fenced ```` ```console ```` block is a transcript: lines starting with `$ `
are commands (run with bash from the repository root, the virtual environment's `bin/` first on PATH), and the
lines below each command are what it prints, standard output and standard error together, followed by
`[exit status N]` (optionally `[exit status N: why]`) when it exits with N other than 0. In the expected output
a line that is just `…` stands for any number of lines and a `…` within a line for any text (output that
differs from run to run or machine to machine), and numbers may differ from the printed ones in their last
digits (other CPUs round differently). Every ```` ```python ````
block runs too and must exit 0; its output is not compared. An HTML comment `<!-- docs: not run ... -->` on the
line before a block leaves it out (timings, machines that are not there).

The docs show the server at `127.0.0.1:8001` (HTTP: `127.0.0.1:8000`) and an unused port `127.0.0.1:8999`; the
runner starts `deepserve serve --model-repository models --device cpu` on free ports, substitutes the addresses in the
commands (and `DEEPSERVE_SERVER` for commands that use the default), and maps them back in the output.

`tests/e2e/test_docs.py` checks every block; `make docs` (`python -m tests.e2e.docs_examples --update`)
rewrites the outputs in place after a change to the models or the commands, to be reviewed with `git diff`.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "docs/task-apis.md")
DOCS_SERVER = "127.0.0.1:8001"
DOCS_UNUSED = "127.0.0.1:8999"
DOCS_HTTP = "127.0.0.1:8000"
ANY_LINES = "…"
SKIP = "<!-- docs: not run"
EXIT = re.compile(r"^\[exit status (\d+)(.*)\]$")
NUMBER = re.compile(r"-?\d+\.\d+(?:[eE][-+]?\d+)?")
COMMAND_TIMEOUT_S = 120


@dataclass
class Command:
    text: str
    expected: list[str] = field(default_factory=list)
    exit_code: int = 0
    exit_note: str = ""


@dataclass
class Block:
    path: str
    line: int
    """1-based line of the opening fence."""
    lang: str
    body: list[str]
    """The lines between the fences."""
    end: int
    """0-based index of the closing fence."""

    @property
    def name(self) -> str:
        return f"{self.path}:{self.line}"

    def commands(self) -> list[Command]:
        commands: list[Command] = []
        for line in self.body:
            if line.startswith("$ "):
                commands.append(Command(line[2:]))
            elif not commands:
                raise ValueError(f"{self.name}: output before the first `$ ` command")
            elif m := EXIT.match(line):
                commands[-1].exit_code, commands[-1].exit_note = int(m[1]), m[2]
            else:
                commands[-1].expected.append(line)
        return commands


def blocks(path: str) -> list[Block]:
    """The console and python blocks of one Markdown file (relative to the repository root), in order."""
    lines = (ROOT / path).read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = lines[i]
        if not fence.startswith("```") or fence == "```":
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j] == "```")
        lang = fence[3:].strip()
        skipped = i > 0 and lines[i - 1].startswith(SKIP)
        if lang in ("console", "python") and not skipped:
            found.append(Block(path, i + 1, lang, lines[i + 1 : end], end))
        i = end + 1
    return found


def all_blocks() -> list[Block]:
    return [b for path in DOCS for b in blocks(path)]


# ---- matching ---------------------------------------------------------------------------------------------


def same_line(expected: str, actual: str) -> bool:
    """Equal, or equal but for numbers that agree to about 5 significant digits; `…` matches any text."""
    if expected == actual:
        return True
    if ANY_LINES in expected:
        return re.fullmatch(".*".join(map(re.escape, expected.split(ANY_LINES))), actual) is not None
    if NUMBER.sub("#", expected) != NUMBER.sub("#", actual):
        return False
    pairs = zip(NUMBER.findall(expected), NUMBER.findall(actual), strict=True)
    return all(math.isclose(float(e), float(a), rel_tol=1e-5, abs_tol=1e-6) for e, a in pairs)


def matches(expected: list[str], actual: list[str]) -> bool:
    """`expected` describes `actual`: line by line, where a line `…` stands for any number of lines."""
    if not expected:
        return not actual
    if expected[0] == ANY_LINES:
        return any(matches(expected[1:], actual[k:]) for k in range(len(actual) + 1))
    return bool(actual) and same_line(expected[0], actual[0]) and matches(expected[1:], actual[1:])


# ---- running ----------------------------------------------------------------------------------------------


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
        args = ["serve", "--model-repository", "models", "--device", "cpu", "--host", "127.0.0.1", "--port", port,
                "--metrics-port", "0", "--http-port", http_port, "--log-level", "warning"]  # fmt: skip
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
