"""Clients for the TLS tests: gRPC channels with chosen trust and client certificates, and a raw TLS
handshake that returns the certificate the server presents (gRPC's Python API does not expose it)."""

from __future__ import annotations

import socket
import ssl
import warnings
from pathlib import Path

import grpc
from cryptography import x509
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.security.certs import Issued


def channel(address: str, ca: bytes | None = None, client: Issued | None = None) -> grpc.Channel:
    """A channel with its own subchannel pool, so each one opens a new connection. Plaintext if `ca` is None."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    if ca is None:
        return grpc.insecure_channel(address, options=options)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=client.key if client else None,
        certificate_chain=client.cert if client else None,
    )
    return grpc.secure_channel(address, credentials, options=options)


def server_live(ch: grpc.Channel) -> bool:
    """V2 ServerLive; raises `grpc.RpcError` when the call (or the handshake) fails."""
    stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
    return stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10).live


def refused(address: str, ca: bytes | None = None, client: Issued | None = None) -> grpc.StatusCode | None:
    """The status of a ServerLive call over a new connection; None when it succeeded."""
    with channel(address, ca, client) as ch:
        try:
            server_live(ch)
        except grpc.RpcError as err:
            return err.code()
    return None


def presented_certificate(
    port: int, client: tuple[Path, Path] | None = None, alpn: str = "h2", server_name: str | None = "localhost"
) -> x509.Certificate:
    """Completes a TLS handshake (ALPN `alpn`, trusting anything) on a new connection and returns the server's
    certificate. `client`: (cert, key) files to present under mutual TLS; `server_name`: SNI (None: none sent)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols([alpn])
    if client is not None:
        context.load_cert_chain(*client)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def handshake(port: int, version: ssl.TLSVersion, alpn: list[str] | None = None) -> str:
    """The TLS version a handshake at exactly `version` ends with (raises if the server refuses it). The client
    offers every cipher, so a server that should refuse an old version cannot be let off by the cipher list."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 on purpose
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = context.maximum_version = version
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that the client offers what the server must refuse
    if alpn:
        context.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw) as tls:
        return str(tls.version())
