"""`/openapi.json` and `/docs`: the document is valid OpenAPI 3.1 (openapi-spec-validator), describes exactly the
routes the app serves, with the scopes of the auth table and the statuses of the error table; the request schemas
name the fields the handlers accept; and real answers of a server on the tiny task models, successes and errors,
validate against the schemas the document gives for their status and content type."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from service.errors import ErrorCode
from service.http import openapi
from service.http.auth import SCOPES
from service.http.errors import STATUS
from service.http.routes import OPERATIONS
from service.http.schemas import SCHEMAS
from service.http.tasks import GENERATE_FIELDS, SENTIMENT_FIELDS
from tests.conftest import FREE_PORT, RunningServer, start_server
from tests.http_tokens import TOKEN, tokens_file
from tests.integration.tasks.calls import IMAGE, events, multipart


@pytest.fixture(scope="module")
def server(http_task_server: RunningServer) -> RunningServer:
    return http_task_server


def call(
    server: RunningServer, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str, bytes, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", server.app.http_port, timeout=30)
    try:
        conn.request(method, path, body, headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, response.headers.get("content-type", "").split(";")[0], data, response
    finally:
        conn.close()


def check(doc: dict[str, Any], schema: dict[str, Any], value: object) -> None:
    """Validate a value against a schema of the document (its `$ref`s resolved within the document)."""
    jsonschema.Draft202012Validator({**schema, "components": doc["components"]}).validate(value)


def response_schema(doc: dict[str, Any], template: str, method: str, status: int, content_type: str) -> dict:
    responses = doc["paths"][template][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {template} answered {status}, which is not documented"
    content = responses[str(status)]["content"]
    assert content_type in content, f"{method.upper()} {template} {status}: {content_type} is not documented"
    return dict(content[content_type]["schema"])


# ---- the document ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("auth", [False, True])
def test_the_document_is_valid_openapi_3_1(auth: bool) -> None:
    doc = openapi.document(auth)
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_the_document_describes_exactly_the_routes_the_app_serves(server: RunningServer) -> None:
    assert server.app.http is not None
    app = server.app.http.app.app  # the Starlette app, inside the layer that answers requests cut by the drain
    served = {(r.path, m.lower()) for r in app.routes if isinstance(r, Route) for m in r.methods or () if m != "HEAD"}
    documented = {(p, m) for p, methods in openapi.document(False)["paths"].items() for m in methods}
    assert served - documented == {("/openapi.json", "get"), ("/docs", "get"), ("/docs/{asset}", "get")}
    assert documented <= served


def test_scopes_and_statuses_come_from_the_auth_and_error_tables() -> None:
    plain, with_tokens = openapi.document(False), openapi.document(True)
    statuses = {str(int(s)) for s in STATUS.values()}
    for op in OPERATIONS:
        assert op.handler in SCOPES, op.handler
        scope = SCOPES[op.handler]
        described = with_tokens["paths"][op.path][op.method]
        assert described["security"] == ([] if scope is None else [{"bearer": [scope.value]}])
        errors = {s for s in described["responses"] if s != "200"}
        assert errors <= statuses
        assert ({"401", "403", "429"} <= errors) == (scope is not None)
        assert "security" not in plain["paths"][op.path][op.method]
        token_statuses = {"401", "429"} if ErrorCode.NOT_ENABLED in op.errors else {"401", "403", "429"}
        assert not token_statuses & set(plain["paths"][op.path][op.method]["responses"])
    assert "securitySchemes" not in plain["components"]
    assert set(openapi.ERROR_MEANING) == set(ErrorCode)


def test_request_schemas_name_the_fields_the_handlers_take() -> None:
    schemas = SCHEMAS
    assert tuple(schemas["GenerateRequest"]["properties"]) == GENERATE_FIELDS
    assert tuple(schemas["SentimentRequest"]["properties"]) == SENTIMENT_FIELDS


# ---- the real answers ---------------------------------------------------------------------------------------
JSON = {"Content-Type": "application/json"}
CASES: list[tuple[str, str, str, bytes | None, dict[str, str], int]] = [
    # (route template, method, path, body, headers, expected status)
    ("/v2", "get", "/v2", None, {}, 200),
    ("/v2/health/live", "get", "/v2/health/live", None, {}, 200),
    ("/v2/health/ready", "get", "/v2/health/ready", None, {}, 200),
    ("/v2/models/{name}", "get", "/v2/models/quadrants", None, {}, 200),
    ("/v2/models/{name}", "get", "/v2/models/nope", None, {}, 404),
    ("/v2/models/{name}/versions/{version}", "get", "/v2/models/quadrants/versions/1", None, {}, 200),
    ("/v2/models/{name}/ready", "get", "/v2/models/quadrants/ready", None, {}, 200),
    ("/v2/models/{name}/config", "get", "/v2/models/quadrants/config", None, {}, 200),
    ("/v2/models/{name}/versions/{version}/config", "get", "/v2/models/quadrants/versions/1/config", None, {}, 200),
    ("/v2/models/{name}/versions/{version}/config", "get", "/v2/models/quadrants/versions/7/config", None, {}, 404),
    ("/v2/models/{name}/versions/{version}/ready", "get", "/v2/models/quadrants/versions/7/ready", None, {}, 404),
    (
        "/v2/models/{name}/infer",
        "post",
        "/v2/models/quadrants/infer",
        json.dumps(
            {
                "id": "a",
                "inputs": [{"name": "image", "shape": [1, 32, 32, 1], "datatype": "FP32", "data": [0.0] * 1024}],
            }
        ).encode(),
        JSON,
        200,
    ),
    (
        "/v2/models/{name}/versions/{version}/infer",
        "post",
        "/v2/models/quadrants/versions/1/infer",
        json.dumps({"inputs": [{"name": "image", "shape": [1, 2], "datatype": "FP32", "data": [0, 1]}]}).encode(),
        JSON,
        400,
    ),
    ("/v2/models/{name}/infer", "post", "/v2/models/quadrants/infer", b"\0" * (300 * 1024), JSON, 413),
    ("/v1/classify", "post", "/v1/classify?top_k=2", IMAGE, {"Content-Type": "image/png"}, 200),
    ("/v1/classify", "post", "/v1/classify", b"not an image", {"Content-Type": "image/png"}, 400),
    ("/v1/sentiment", "post", "/v1/sentiment", json.dumps({"texts": ["good", "bad"]}).encode(), JSON, 200),
    ("/v1/sentiment", "post", "/v1/sentiment", json.dumps({"texts": ["x"], "model": "nope"}).encode(), JSON, 404),
    (
        "/v1/generate",
        "post",
        "/v1/generate",
        json.dumps({"prompt": "The", "max_new_tokens": 3, "seed": 1}).encode(),
        JSON,
        200,
    ),
    ("/v1/generate", "post", "/v1/generate", json.dumps({"prompt": "The", "top_p": 2}).encode(), JSON, 400),
]


@pytest.mark.parametrize(
    ("template", "method", "path", "body", "headers", "status"),
    CASES,
    ids=[f"{c[1]} {c[2][:40]} {c[5]}" for c in CASES],
)
def test_real_answers_match_their_schemas(
    server: RunningServer,
    template: str,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
    status: int,
) -> None:
    doc = openapi.document(False)
    got, content_type, data, _ = call(server, method.upper(), path, body, headers)
    assert got == status, data[:300]
    check(doc, response_schema(doc, template, method, got, content_type), json.loads(data))


def test_multipart_classify_and_binary_infer_are_documented(server: RunningServer) -> None:
    doc = openapi.document(False)
    form, content_type = multipart([IMAGE, IMAGE], {"top_k": "1"})
    assert "multipart/form-data" in doc["paths"]["/v1/classify"]["post"]["requestBody"]["content"]
    got, answer_type, data, _ = call(server, "POST", "/v1/classify", form, {"Content-Type": content_type})
    assert got == 200
    check(doc, response_schema(doc, "/v1/classify", "post", got, answer_type), json.loads(data))
    header = json.dumps(
        {
            "inputs": [
                {"name": "image", "shape": [1, 32, 32, 1], "datatype": "FP32", "parameters": {"binary_data_size": 4096}}
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    got, answer_type, data, response = call(
        server,
        "POST",
        "/v2/models/quadrants/infer",
        header.encode() + b"\0" * 4096,
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))},
    )
    assert got == 200 and answer_type == "application/octet-stream"
    response_schema(doc, "/v2/models/{name}/infer", "post", got, answer_type)
    length = int(response.headers["inference-header-content-length"])
    check(
        doc, response_schema(doc, "/v2/models/{name}/infer", "post", got, "application/json"), json.loads(data[:length])
    )


def test_stream_events_match_their_schemas(server: RunningServer) -> None:
    doc = openapi.document(False)
    conn = http.client.HTTPConnection("127.0.0.1", server.app.http_port, timeout=30)
    try:
        conn.request("POST", "/v1/generate", json.dumps({"prompt": "The", "max_new_tokens": 4, "stream": True}))
        response = conn.getresponse()
        assert response.status == 200
        media = doc["paths"]["/v1/generate"]["post"]["responses"]["200"]["content"]["text/event-stream"]
        seen = []
        for name, data in events(response):
            check(doc, media["x-events"][name], data)
            seen.append(name)
        assert seen[-1] == "finished" and set(seen[:-1]) <= {"delta"}
    finally:
        conn.close()


def test_openapi_and_docs_are_served_open_and_the_page_only_loads_from_the_server(
    task_repo: Path, tmp_path: Path
) -> None:
    running = start_server(task_repo, http_port=FREE_PORT, auth_tokens_file=tokens_file(tmp_path))
    try:
        got, content_type, data, _ = call(running, "GET", "/openapi.json")
        assert (got, content_type) == (200, "application/json")
        doc = json.loads(data)
        assert doc == json.loads(json.dumps(openapi.document(True)))
        assert doc["paths"]["/v1/classify"]["post"]["security"] == [{"bearer": ["infer"]}]
        got, content_type, page, response = call(running, "GET", "/docs")
        assert (got, content_type) == (200, "text/html")
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assert b"docs/docs.js" in page and b"http" not in page.replace(b"http-equiv", b"")
        for asset, kind in [("docs.js", "text/javascript"), ("docs.css", "text/css")]:
            got, content_type, data, _ = call(running, "GET", f"/docs/{asset}")
            assert (got, content_type) == (200, kind) and b"//cdn" not in data and b"https:" not in data
        got, _, data, _ = call(running, "GET", "/docs/../../etc/passwd")
        assert got == 404
        got, _, data, _ = call(running, "GET", "/docs/secret.txt")
        assert got == 404 and json.loads(data) == {"error": "no such file: /docs/secret.txt"}
        got, _, _, _ = call(running, "GET", "/v2")  # the API itself still needs a token
        assert got == 401
        assert call(running, "GET", "/v2", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    finally:
        running.stop()
