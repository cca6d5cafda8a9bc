"""The `/docs` page in a real headless browser (Debian's chromium, `tests/browser.py`) against a server on the committed
models: it renders every operation of `/openapi.json`, loads nothing from anywhere but the server, and its forms
work as a user would use them: an image chosen in the file picker is classified, typed sentences are analyzed, and a
streamed generation shows its text piece by piece as the events arrive, ending with what the server says it
generated."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import Browser, Page, require_browser
from tests.conftest import FREE_PORT, RunningServer, start_server

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DIGIT = ROOT / "docs/examples/digit.png"
PROMPT = "import os"


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    require_browser()
    running = start_server(ROOT / "models", http_port=FREE_PORT, device="cpu")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def page(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    with Browser.start(tmp_path_factory.mktemp("browser")) as browser:
        page = browser.open(f"http://127.0.0.1:{server.app.http_port}/docs")
        assert page.wait_for("document.body && document.body.dataset.ready") == "true", page.errors()
        yield page


def get(server: RunningServer, path: str, body: dict | None = None) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", server.app.http_port, timeout=60)
    try:
        conn.request("POST" if body is not None else "GET", path, None if body is None else json.dumps(body))
        response = conn.getresponse()
        assert response.status == 200
        return dict(json.loads(response.read()))
    finally:
        conn.close()


def test_the_page_renders_every_operation_and_loads_only_from_the_server(server: RunningServer, page: Page) -> None:
    spec = get(server, "/openapi.json")
    ids = {op["operationId"] for methods in spec["paths"].values() for op in methods.values()}
    shown = page.evaluate("Array.from(document.querySelectorAll('[data-operation]'), e => e.dataset.operation)")
    assert sorted(shown) == sorted(ids)
    schemas = page.evaluate("Array.from(document.querySelectorAll('[id^=schema-]'), e => e.id.slice(7))")
    assert sorted(schemas) == sorted(spec["components"]["schemas"])
    assert page.evaluate("document.querySelector('#op-generate h3').textContent").startswith("POST/v1/generate")
    origin = f"http://127.0.0.1:{server.app.http_port}/"
    assert all(u.startswith(origin) for u in page.requested_urls()), page.requested_urls()
    assert page.errors() == []


def test_classify_an_uploaded_image(page: Page) -> None:
    page.set_files("[data-try=classify] input[type=file]", [DIGIT])
    page.click("[data-try=classify] button")
    state = page.wait_for(
        "(s => s === 'done' || s === 'error' ? s : '')(document.querySelector('[data-result=classify]').dataset.state)"
    )
    text = page.evaluate("document.querySelector('[data-result=classify]').innerText")
    assert state == "done", text
    labels = page.evaluate("Array.from(document.querySelectorAll('[data-result=classify] li'), e => e.dataset.label)")
    assert labels[0] == "7" and len(labels) == 3  # the form's top_k
    assert "digit.png" in text and "digits_cnn" in text and "100.0%" in text


def test_analyze_typed_sentences(page: Page) -> None:
    page.type("[data-try=sentiment] textarea", "What a wonderful day\nAwful.")
    page.click("[data-try=sentiment] button")
    page.wait_for("document.querySelector('[data-result=sentiment]').dataset.state === 'done'")
    rows = page.evaluate(
        "Array.from(document.querySelectorAll('[data-result=sentiment] tr[data-label]'), "
        "e => [e.cells[0].textContent, e.dataset.label])"
    )
    assert rows == [["What a wonderful day", "positive"], ["Awful.", "negative"]]


def test_generated_text_streams_in_piece_by_piece(server: RunningServer, page: Page) -> None:
    tokens = 160  # long enough that the events arrive over many reads, not in one, on a busy machine too
    whole = get(server, "/v1/generate", {"prompt": PROMPT, "max_new_tokens": tokens, "seed": 7})
    page.type("[data-try=generate] textarea", PROMPT)
    page.type("[data-try=generate] input[name=max_new_tokens]", str(tokens))
    page.type("[data-try=generate] input[name=seed]", "7")
    assert page.evaluate("document.querySelector('[data-try=generate] input[name=stream]').checked")
    # Record what the page shows each time the completion changes, from before the click on.
    page.evaluate(
        "window.snapshots = []; new MutationObserver(() => { const c = document.querySelector("
        "'[data-result=generate] .completion'); if (c) window.snapshots.push(c.textContent); })"
        ".observe(document.querySelector('[data-result=generate]'), "
        "{subtree: true, childList: true, characterData: true})"
    )
    page.click("[data-try=generate] button[type=submit]")
    page.wait_for("document.querySelector('[data-result=generate]').dataset.state === 'done'", timeout=60)
    shown = page.evaluate("document.querySelector('[data-result=generate] .completion').textContent")
    status = page.evaluate("document.querySelector('[data-result=generate] .status').textContent")
    deltas = int(page.evaluate("document.querySelector('[data-result=generate] .completion').dataset.deltas"))
    snapshots = page.evaluate("window.snapshots")
    assert shown == whole["text"]  # the same seed and parameters give the same text, streamed or not
    assert f"finished: {whole['finish_reason']} · {whole['generated_tokens']} tokens generated" in status
    assert deltas > 1
    partial = {s for s in snapshots if s and s != shown}
    assert partial and all(shown.startswith(s) for s in partial), snapshots  # it grew in place, piece by piece
    assert page.errors() == []
