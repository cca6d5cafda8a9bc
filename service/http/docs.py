"""`/openapi.json` and the `/docs` page: the OpenAPI document (`openapi.document`) and a small page, shipped in the
package (`static/`: no CDN, deployments are often offline), that renders it and has a form per task endpoint to try
it from the browser (upload images, type sentences, watch generated text stream in).

The page's Content-Security-Policy lets it load and call nothing but this server.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.accounting import Call

ASSETS = {"docs.js": "text/javascript; charset=utf-8", "docs.css": "text/css; charset=utf-8"}
PAGE = "docs.html"
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'",
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",
}


def _read(name: str) -> bytes:
    return resources.files("service.http").joinpath("static", name).read_bytes()


class DocsPages:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = json.dumps(document, indent=1, ensure_ascii=False).encode()
        self.files = {name: _read(name) for name in (PAGE, *ASSETS)}

    async def openapi(self, request: Request, call: Call) -> Response:
        return Response(self.document, media_type="application/json", headers={"cache-control": "no-cache"})

    async def page(self, request: Request, call: Call) -> Response:
        return Response(self.files[PAGE], media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    async def asset(self, request: Request, call: Call) -> Response:
        name = request.path_params["asset"]
        if name not in ASSETS:
            return JSONResponse({"error": f"no such file: /docs/{name[:64]}"}, status_code=404)
        return Response(self.files[name], media_type=ASSETS[name], headers=SECURITY_HEADERS)
