"""The HTTP and metrics ports run on uvicorn's httptools protocol (a dependency; chosen by measurement, see
docs/performance.md), with the idle timeout added to it."""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.http.listener import HTTP_PROTOCOL, _IdleClosing


def test_the_http_protocol_is_httptools_with_the_idle_timeout() -> None:
    assert issubclass(HTTP_PROTOCOL, HttpToolsProtocol)
    assert issubclass(HTTP_PROTOCOL, _IdleClosing)
