"""The docs' examples, run: every console block of README.md and docs/task-apis.md against `deepserve serve` on the
committed models, compared with the output the docs show; every python block must run. `make docs` rewrites the
outputs after a change (see `tests/e2e/docs_blocks.py` for the block format)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.docs_blocks import Block, all_blocks, matches, same_line
from tests.e2e.docs_examples import DocsServer, check, describe, docs_server

BLOCKS = all_blocks()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocsServer]:
    with docs_server(tmp_path_factory.mktemp("docs") / "serve.log") as running:
        yield running


@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
def test_example_runs_as_documented(block: Block, server: DocsServer) -> None:
    if block.lang == "python":
        output, code = server.run_python("\n".join(block.body))
        assert code == 0, f"{block.name}: the python example failed:\n{output}"
        return
    outcomes = check(block, server)
    assert all(o.ok for o in outcomes), describe(block, outcomes)


def test_the_docs_have_examples_to_run() -> None:
    names = {(b.path, b.lang) for b in BLOCKS}
    assert {("README.md", "console"), ("README.md", "python"), ("docs/task-apis.md", "console")} <= names
    assert sum(len(b.commands()) for b in BLOCKS if b.lang == "console") >= 15


def test_docs_point_at_files_that_exist() -> None:
    """Paths in the commands are relative to the repository root, where the test runs them."""
    root = Path(__file__).resolve().parents[2]
    for block in BLOCKS:
        text = "\n".join(c.text for c in block.commands()) if block.lang == "console" else "\n".join(block.body)
        for path in re.findall(r"docs/[\w./-]+", text):
            assert (root / path).exists(), f"{block.name}: {path} does not exist"


def test_matching_rules() -> None:
    assert same_line("positive\t0.976\tx", "positive\t0.976\tx")
    assert same_line('"probability": 0.97585845', '"probability": 0.97585847')  # last digits of a float32
    assert not same_line('"probability": 0.97585845', '"probability": 0.9759')
    assert not same_line("7 (0.909)", "7 (0.910)")
    assert same_line("no answer in time (…); try", "no answer in time (deadline passed after 12 tokens); try")
    assert not same_line("tokens: 4", "tokens: 5")
    assert matches(["a", "…", "z"], ["a", "z"]) and matches(["a", "…", "z"], ["a", "b", "c", "z"])
    assert not matches(["a", "…", "z"], ["a", "b"])
    assert not matches(["a"], ["a", "b"])


def test_every_http_route_has_a_curl_example_in_the_task_apis_page() -> None:
    """docs/task-apis.md shows every route of the HTTP port (`service/http/openapi.py` lists them), run with curl,
    POST routes with a body, plus /openapi.json and /docs."""
    from service.http.routes import OPERATIONS

    commands = [c.text for b in BLOCKS if b.path == "docs/task-apis.md" and b.lang == "console" for c in b.commands()]
    curls = [c for c in commands if c.startswith("curl ") and "127.0.0.1:8000/" in c]
    routes = [(op.method, op.path) for op in OPERATIONS] + [("get", "/openapi.json"), ("get", "/docs")]
    for method, path in routes:
        pattern = re.compile(r"127\.0\.0\.1:8000" + re.sub(r"\\\{\w+\\\}", r"[^/\\s'?]+", re.escape(path)) + r"[\s'?]")
        shown = [c for c in curls if pattern.search(c + " ")]
        if method == "post":
            shown = [c for c in shown if re.search(r" (-d|--data-binary|-F) ", c)]
        assert shown, f"docs/task-apis.md has no curl example of {method.upper()} {path}"
