"""HTTPS for the HTTP port: the server's `CertificateFiles` (`service/tls.py`, the gRPC port's too), rotated without a
restart.

uvicorn listens with one `ssl.SSLContext`, whose `sni_callback` OpenSSL calls on every ClientHello (with or without a
server name), before the server picks its certificate. The callback asks the files for their current set (a few `stat`
calls unless they changed) and moves the connection onto that set's context (`SSLObject.context`, OpenSSL's
`SSL_set_SSL_CTX`): the certificate, key and client CA bundle of the files as they are now. Connections already open
keep theirs.
"""

from __future__ import annotations

import ssl

from service.tls import CertificateFiles


def server_context(files: CertificateFiles) -> ssl.SSLContext:
    """The context the HTTP port listens with: the files' set at start-up, each handshake moved to the current one."""
    listening = files.current.context

    def current(connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        latest = files.refresh().context
        if latest is not context:
            connection.context = latest
        return None

    listening.sni_callback = current
    return listening
