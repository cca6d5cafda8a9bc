"""The docs' runnable examples: their blocks, as `tests/e2e/docs_examples.py` runs them, and how output is compared.

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

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "docs/task-apis.md")
DOCS_SERVER = "127.0.0.1:8001"
DOCS_UNUSED = "127.0.0.1:8999"
DOCS_HTTP = "127.0.0.1:8000"
ANY_LINES = "…"
SKIP = "<!-- docs: not run"
EXIT = re.compile(r"^\[exit status (\d+)(.*)\]$")
NUMBER = re.compile(r"-?\d+\.\d+(?:[eE][-+]?\d+)?")


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
