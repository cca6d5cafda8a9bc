"""The TLS certificate files both ports serve (`--tls-cert-file`, `--tls-key-file`, `--tls-client-ca-file`), watched
while the server runs so that a certificate manager can rotate them in place without a restart.

One `CertificateFiles` per server, shared by the gRPC port (`service/grpc/tls.py`) and the HTTP port
(`service/http/tls.py`). Each port asks `refresh()` before every TLS handshake on a new connection; `refresh`
compares the files' stat (device, inode, size, modification and change times) with what it saw last, so a handshake
costs a few `stat` calls, and only when they differ are the files read and checked again. A complete, consistent set
becomes `current` for every connection opened from then on, on both ports; connections already open keep theirs. A
set that does not check out (half-written, key not matching, unreadable) is logged once as a warning and the last good
certificate stays in use, so a rotation in progress never leaves a port serving nothing.

At start-up the same checks raise `ConfigError`s that name the flag. The checks use the standard `ssl` module
(OpenSSL): a certificate that parses, a private key that parses and matches it (loaded into the `ssl.SSLContext` the
HTTP port serves), and a client CA bundle holding at least one CA certificate.
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

from service.errors import ConfigError
from service.files import Signature, signature

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Certificates:
    """One checked set of the files' contents (PEM), and an `ssl.SSLContext` serving it: the certificate chain and
    key loaded, TLS 1.2 or newer, and under mutual TLS a client certificate signed by `client_ca` required."""

    cert: bytes
    key: bytes
    client_ca: bytes | None
    context: ssl.SSLContext = field(compare=False, repr=False)


class _Changing(Exception):
    """The files changed while they were read: try again at the next handshake."""


class _EncryptedKey(Exception):
    pass


class CertificateFiles:
    """The PEM files behind both ports' TLS. `current` is the set served to new connections; `refresh()` looks at the
    files first. Thread-safe: gRPC core calls it from its own threads, the HTTP port from the event loop."""

    def __init__(self, cert_file: Path, key_file: Path, client_ca_file: Path | None = None) -> None:
        self.files: list[tuple[str, Path]] = [("--tls-cert-file", cert_file), ("--tls-key-file", key_file)]
        if client_ca_file is not None:
            self.files.append(("--tls-client-ca-file", client_ca_file))
        self.mutual = client_ca_file is not None
        self._lock = threading.Lock()
        self._seen = self._stat()
        try:
            self.current = self._read()
        except _Changing as err:
            raise ConfigError(f"TLS files changed while they were read at start-up ({err}); try again") from None
        self.reloads = 0
        """New certificate sets taken since start-up."""

    def refresh(self) -> Certificates:
        """The set to serve a new connection: a new one when the files changed and check out, else `current`."""
        with self._lock:
            seen = self._stat()
            if seen != self._seen:
                self._reload(seen)
            return self.current

    def _reload(self, seen: tuple[Signature | None, ...]) -> None:
        try:
            certificates = self._read()
        except _Changing:
            return  # mid-write: look again at the next handshake
        except ConfigError as err:
            self._seen = seen  # warn once per state of the files, not once per handshake
            log.warning(
                "TLS files changed but cannot be used; still serving the previous certificate",
                extra={"problem": str(err)},
            )
            return
        self._seen = seen
        if certificates != self.current:
            self.current = certificates
            self.reloads += 1
            log.info("TLS certificate reloaded; new connections get it", extra={"reloads": self.reloads})

    def _stat(self) -> tuple[Signature | None, ...]:
        return tuple(signature(path) for _, path in self.files)

    def _read(self) -> Certificates:
        """The files' contents, checked; `ConfigError` naming the flag when they do not check out."""
        contents = [_read(flag, path) for flag, path in self.files]
        cert_flag, cert_path = self.files[0]
        _check_certificates(cert_flag, cert_path, contents[0], need_ca=False)
        context = _server_context(self.files[1][1], cert_path)
        client_ca = None
        if self.mutual:
            client_ca = contents[2]
            _check_certificates(*self.files[2], client_ca, need_ca=True)
            context.load_verify_locations(cadata=client_ca.decode("ascii"))
            context.verify_mode = ssl.CERT_REQUIRED
        if [_read(flag, path) for flag, path in self.files] != contents:
            raise _Changing("contents differ between two reads")
        return Certificates(contents[0], contents[1], client_ca, context)


def _read(flag: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{flag}: cannot read {path}: {err.strerror or err}") from None


def _check_certificates(flag: str, path: Path, pem: bytes, need_ca: bool) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cadata=pem.decode("ascii"))
    except (ssl.SSLError, ValueError, UnicodeDecodeError):
        raise ConfigError(f"{flag}: {path} holds no PEM certificate (or a damaged one)") from None
    if need_ca and context.cert_store_stats()["x509_ca"] == 0:
        raise ConfigError(f"{flag}: {path} holds no CA certificate (basicConstraints CA:TRUE)")


def _server_context(key_path: Path, cert_path: Path) -> ssl.SSLContext:
    """A server context with the certificate chain and its key loaded (which checks that they match), TLS >= 1.2
    (as gRPC core negotiates)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_path, key_path, password=_refuse_password)
    except _EncryptedKey:
        raise ConfigError(f"--tls-key-file: {key_path} is encrypted; give the key without a passphrase") from None
    except ssl.SSLError as err:
        if err.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"--tls-key-file: the private key in {key_path} does not match the certificate in {cert_path}"
            ) from None
        raise ConfigError(f"--tls-key-file: {key_path} holds no PEM private key (or a damaged one)") from None
    except OSError as err:  # the file went away between two reads
        raise ConfigError(f"cannot read {err.filename}: {err.strerror or err}") from None
    return context


def _refuse_password() -> bytes:
    """OpenSSL would otherwise prompt on the terminal for an encrypted key's passphrase."""
    raise _EncryptedKey
