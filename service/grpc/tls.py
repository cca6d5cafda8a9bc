"""TLS for the gRPC port: server credentials from the server's `CertificateFiles` (`service/tls.py`), rotated without
a restart.

gRPC core asks `DynamicCredentials.fetch` for a certificate configuration before every TLS handshake on a new
connection (`grpc.dynamic_ssl_server_credentials`); `fetch` answers a new one only when the files' current set is not
the one gRPC core already serves. gRPC core negotiates TLS 1.2 or 1.3 only.
"""

from __future__ import annotations

import grpc

from service.tls import CertificateFiles, Certificates


def _configuration(certificates: Certificates) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(certificates.key, certificates.cert)], root_certificates=certificates.client_ca
    )


class DynamicCredentials:
    """`credentials()` for `add_secure_port`; `fetch()` for gRPC core (called holding the GIL, off the event loop)."""

    def __init__(self, files: CertificateFiles) -> None:
        self.files = files
        self._served = files.current

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            _configuration(self._served), self.fetch, require_client_authentication=self.files.mutual
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration when the files changed and check out, else None (keep serving the current one)."""
        current = self.files.refresh()
        if current == self._served:
            return None
        self._served = current
        return _configuration(current)


def server_credentials(files: CertificateFiles) -> grpc.ServerCredentials:
    """Credentials for `add_secure_port` that follow the files."""
    return DynamicCredentials(files).credentials()
