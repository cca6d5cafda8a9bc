"""A real headless browser for the tests: Debian's `chromium`, driven over the Chrome DevTools Protocol on a pipe
(`--remote-debugging-pipe`: commands on fd 3, answers and events on fd 4, each a JSON text ending in a NUL byte), so
nothing but the standard library is needed on this side.

    with Browser.start(tmp_path) as browser:
        page = browser.open("http://127.0.0.1:8000/docs")
        page.wait_for("document.body.dataset.ready === 'true'")

`CHROMIUM` is None when no browser is installed: the tests that need one skip, except under CI (`CI` set), where
`.ci/run` installs it, so they fail instead of passing unchecked.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from collections import deque
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = next((p for name in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(name))), None)
FLAGS = [
    "--headless=new",
    "--remote-debugging-pipe",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--metrics-recording-only",
    "--mute-audio",
    "--no-sandbox",
]
# --no-sandbox: the tests run as root in CI containers, where Chromium's sandbox cannot start.


def require_browser() -> str:
    if CHROMIUM is None:
        message = "no headless browser: install Debian's chromium (apt-get install chromium); .ci/run installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


class BrowserError(RuntimeError):
    pass


class Browser:
    def __init__(self, proc: subprocess.Popen[bytes], to_browser: int, from_browser: int, log: Path) -> None:
        self.proc, self.to_browser, self.from_browser, self.log = proc, to_browser, from_browser, log
        self._next_id = 0
        self._buffer = b""
        self._events: deque[dict[str, Any]] = deque()

    @classmethod
    def start(cls, workdir: Path, attempts: int = 3) -> Browser:
        """A running browser that has answered a first command. Chromium sometimes exits while starting (seen once
        in a CI run: the first command met a closed pipe), which is no fault of the page under test: it is
        started again, up to `attempts` times, each with its own profile and log."""
        binary = require_browser()
        for attempt in range(1, attempts + 1):
            browser = cls._launch(binary, workdir / f"attempt{attempt}")
            try:
                browser.send("Browser.getVersion", timeout=30)
                return browser
            except (OSError, BrowserError, TimeoutError) as err:
                browser.close()
                failure = f"{type(err).__name__}: {err}; exit code {browser.proc.returncode}"
        log = browser.log.read_text(errors="replace")[-2000:]
        raise BrowserError(f"the browser did not start in {attempts} attempts ({failure}); its last log: {log}")

    @classmethod
    def _launch(cls, binary: str, workdir: Path) -> Browser:
        workdir.mkdir(parents=True, exist_ok=True)
        commands_r, commands_w = os.pipe()
        answers_r, answers_w = os.pipe()

        def to_fds_3_and_4() -> None:  # in the child, before exec: the pipe ends Chromium expects
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands_r, answers_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        log = workdir / "chromium.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [binary, *FLAGS, f"--user-data-dir={workdir / 'profile'}", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=(3, 4),
                preexec_fn=to_fds_3_and_4,
            )
        os.close(commands_r)
        os.close(answers_w)
        return cls(proc, commands_w, answers_r, log)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("Browser.close", timeout=5)
            except (BrowserError, OSError, TimeoutError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for fd in (self.to_browser, self.from_browser):
            try:
                os.close(fd)
            except OSError:
                pass

    # ---- the protocol ------------------------------------------------------------------------------------
    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        """Send one command and wait for its answer; events that arrive meanwhile are kept for `events`."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            if "method" in answer:
                self._events.append(answer)

    def _read(self, deadline: float) -> dict[str, Any]:

        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the browser did not answer in time")
            ready, _, _ = select.select([self.from_browser], [], [], left)
            if ready:
                chunk = os.read(self.from_browser, 1 << 16)
                if not chunk:
                    raise BrowserError(f"the browser exited; its log: {self.log.read_text()[-2000:]}")
                self._buffer += chunk
        text, _, self._buffer = self._buffer.partition(b"\0")
        return dict(json.loads(text))

    def open(self, url: str) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        page.send("Page.enable")
        page.send("Runtime.enable")
        page.send("Network.enable")
        page.send("Page.navigate", {"url": url})
        return page

    def events(self, session: str) -> list[dict[str, Any]]:
        """The events of one page received so far (and forgets them)."""
        mine = [e for e in self._events if e.get("sessionId") == session]
        self._events = deque(e for e in self._events if e.get("sessionId") != session)
        return mine


class Page:
    def __init__(self, browser: Browser, session: str) -> None:
        self.browser, self.session = browser, session
        self.seen: list[dict[str, Any]] = []
        """Every event of this page so far (network requests, console messages, exceptions)."""

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        result = self.browser.send(method, params, self.session, timeout)
        self.seen += self.browser.events(self.session)
        return result

    def evaluate(self, expression: str, timeout: float = 30) -> Any:
        """The value of a JavaScript expression (awaited if it is a promise)."""
        result = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}, timeout
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30, interval: float = 0.02) -> Any:
        """Poll until the expression is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout} s: {expression}; page errors: {self.errors()}")
            time.sleep(interval)

    def set_files(self, selector: str, paths: list[Path]) -> None:
        """Choose files in an `<input type=file>`, as a user picking them would."""
        found = self.send("Runtime.evaluate", {"expression": f"document.querySelector({json.dumps(selector)})"})
        object_id = found["result"].get("objectId")
        if object_id is None:
            raise BrowserError(f"no element {selector}")
        self.send("DOM.setFileInputFiles", {"files": [str(p.resolve()) for p in paths], "objectId": object_id})

    def click(self, selector: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")

    def type(self, selector: str, text: str) -> None:
        """Replace an input's value and fire `input`, as typing would."""
        self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.value = {json.dumps(text)}; "
            "e.dispatchEvent(new Event('input', {bubbles: true})); })()"
        )

    def screenshot(self, path: Path) -> None:

        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.write_bytes(base64.b64decode(data))

    def errors(self) -> list[str]:
        """Uncaught exceptions and console errors the page has had."""
        out = []
        for event in self.seen:
            if event["method"] == "Runtime.exceptionThrown":
                out.append(str(event["params"]["exceptionDetails"].get("exception", {}).get("description")))
            elif event["method"] == "Runtime.consoleAPICalled" and event["params"]["type"] == "error":
                out.append(" ".join(str(a.get("value", a.get("description"))) for a in event["params"]["args"]))
        return out

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.seen if e["method"] == "Network.requestWillBeSent"]
