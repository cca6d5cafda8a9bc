"""Plain HTTP calls for the KServe V2 REST tests: any method, the status, headers and body back (errors too)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request


def call(
    url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://{url}{path}", data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def post_json(url: str, path: str, doc: object, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    status, _, body = call(
        url, "POST", path, json.dumps(doc).encode(), {"Content-Type": "application/json", **(headers or {})}
    )
    return status, json.loads(body)
