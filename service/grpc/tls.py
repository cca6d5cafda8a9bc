"""TLS for the gRPC port: server credentials read from PEM files, and rotated without a restart.

gRPC core asks `CertificateFiles.fetch` for a certificate configuration before every TLS handshake on a new
connection (`grpc.dynamic_ssl_server_credentials`). `fetch` compares the files' stat (device, inode, size,
modification and change times) with what it saw last, so a handshake costs a few `stat` calls; only when
they differ are the files read and checked again. A complete, consistent set replaces the served
certificate for every connection opened from then on; connections already open keep theirs. A set that
does not check out (half-written, key not matching, unreadable) is logged once as a warning and the last
good certificate stays in use, so a rotation in progress never leaves the port serving nothing.

At start-up the same checks raise `ConfigError`s that name the flag. The checks use the standard `ssl`
module (OpenSSL): a certificate that parses, a private key that parses and matches it, and a client CA
bundle holding at least one CA certificate. gRPC core negotiates TLS 1.2 or 1.3 only.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from service.config import ServerSettings
from service.errors import ConfigError
from service.files import Signature, signature

log = logging.getLogger(__name__)

"""(device, inode, size, mtime_ns, ctime_ns) of one file; None when it cannot be stat'ed."""


@dataclass(frozen=True)
class _Pems:
    cert: bytes
    key: bytes
    client_ca: bytes | None

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(self.key, self.cert)], root_certificates=self.client_ca)


class _Changing(Exception):
    """The files changed while they were read: try again at the next handshake."""


class _EncryptedKey(Exception):
    pass


class CertificateFiles:
    """The PEM files behind the gRPC port's TLS: `credentials()` for the server, `fetch()` for gRPC core."""

    def __init__(self, cert_file: Path, key_file: Path, client_ca_file: Path | None = None) -> None:
        self.files: list[tuple[str, Path]] = [("--tls-cert-file", cert_file), ("--tls-key-file", key_file)]
        if client_ca_file is not None:
            self.files.append(("--tls-client-ca-file", client_ca_file))
        self.mutual = client_ca_file is not None
        self._seen = self._stat()
        try:
            self._current = self._read()
        except _Changing as err:
            raise ConfigError(f"TLS files changed while they were read at start-up ({err}); try again") from None
        self.reloads = 0
        """Certificate configurations handed to gRPC core since start-up."""

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._current.configuration(), self.fetch, require_client_authentication=self.mutual
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC core (holding the GIL, off the event loop) before each new connection's handshake:
        a new configuration when the files changed and check out, else None (keep serving the current one)."""
        seen = self._stat()
        if seen == self._seen:
            return None
        try:
            pems = self._read()
        except _Changing:
            return None  # mid-write: look again at the next handshake
        except ConfigError as err:
            self._seen = seen  # warn once per state of the files, not once per handshake
            log.warning(
                "TLS files changed but cannot be used; still serving the previous certificate",
                extra={"problem": str(err)},
            )
            return None
        self._seen = seen
        if pems == self._current:
            return None
        self._current = pems
        self.reloads += 1
        log.info("TLS certificate reloaded; new connections get it", extra={"reloads": self.reloads})
        return pems.configuration()

    def _stat(self) -> tuple[Signature | None, ...]:
        return tuple(signature(path) for _, path in self.files)

    def _read(self) -> _Pems:
        """The files' contents, checked; `ConfigError` naming the flag when they do not check out."""
        contents = [_read(flag, path) for flag, path in self.files]
        cert_flag, cert_path = self.files[0]
        _check_certificates(cert_flag, cert_path, contents[0], need_ca=False)
        _check_key(self.files[1][1], cert_path)
        if self.mutual:
            _check_certificates(*self.files[2], contents[2], need_ca=True)
        if [_read(flag, path) for flag, path in self.files] != contents:
            raise _Changing("contents differ between two reads")
        return _Pems(contents[0], contents[1], contents[2] if self.mutual else None)


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials:
    """Credentials for `add_secure_port` from the settings' TLS files (`settings.tls` must be true)."""
    assert settings.tls_cert_file is not None and settings.tls_key_file is not None
    files = CertificateFiles(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
    return files.credentials()


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


def _check_key(key_path: Path, cert_path: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
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


def _refuse_password() -> bytes:
    """OpenSSL would otherwise prompt on the terminal for an encrypted key's passphrase."""
    raise _EncryptedKey
