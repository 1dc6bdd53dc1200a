"""gRPC channel and server settings shared by hunters, processors and the admin CLI.

Every option lives in one commented list so that both ends agree. TLS material is
read from PEM files; with ``insecure`` the caller has chosen plaintext explicitly.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

import grpc

from lc.common.credentials import check_key_pair
from lc.common.errors import (
    LcError,
    NotFound,
    PermissionDenied,
    Unreachable,
    ValidationError,
)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "TlsFiles",
    "channel_options",
    "error_from_rpc",
    "open_channel",
    "server_credentials",
    "server_options",
]

log = logging.getLogger(__name__)

# A batch is capped well below this (see hunter.batcher); the margin keeps a
# maximal batch plus protobuf framing inside one message.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

_COMMON_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Keepalive pings detect a dead link within ~30 s even when no batch is flowing.
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


def channel_options() -> list[tuple[str, int]]:
    """Client-side options: message size caps, keepalives, no transparent retries."""
    return [*_COMMON_OPTIONS, ("grpc.enable_retries", 0)]


def server_options() -> list[tuple[str, int]]:
    """Server-side options: message size caps and accepting the clients' keepalive pings."""
    return [
        *_COMMON_OPTIONS,
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 0),
        # gRPC sets SO_REUSEPORT by default, which would let a second processor bind the
        # same port and silently take half of the hunters.
        ("grpc.so_reuseport", 0),
    ]


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Paths of a party's certificate, its private key and the CA that signs its peers."""

    cert: str
    key: str
    ca: str

    def read(self) -> tuple[bytes, bytes, bytes]:
        """Read (cert, key, ca) PEM bytes.

        Raises:
            NotFound: a file does not exist.
            ValidationError: a file cannot be read or is not PEM.
        """
        out = []
        for what, path in (("certificate", self.cert), ("key", self.key), ("CA", self.ca)):
            if not os.path.exists(path):
                raise NotFound(f"TLS {what} file not found: {path}")
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise ValidationError(f"cannot read TLS {what} file {path}: {e.strerror}") from e
            if b"-----BEGIN" not in data:
                raise ValidationError(f"TLS {what} file {path} is not PEM")
            out.append(data)
        return out[0], out[1], out[2]


def open_channel(target: str, tls: TlsFiles | None) -> grpc.Channel:
    """A channel to ``target`` (HOST:PORT): mutual TLS with ``tls``, plaintext when None."""
    if tls is None:
        return grpc.insecure_channel(target, options=channel_options())
    cert, key, ca = tls.read()
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    return grpc.secure_channel(target, creds, options=channel_options())


def server_credentials(tls: TlsFiles, reload: bool = True) -> grpc.ServerCredentials:
    """Server credentials that require a client certificate signed by ``tls.ca``.

    With ``reload``, the files are looked at again (size and mtime, at most once a
    second) whenever a client connects, and a changed certificate, key or CA is used
    from the next handshake on; connections already open keep theirs. A change that
    does not load (a key that does not match, a half-written file) is logged and the
    previous set stays in use.
    """
    cert, key, ca = tls.read()
    if not reload:
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=True
        )
    watcher = _CertWatcher(tls)
    initial = grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)
    return grpc.dynamic_ssl_server_credentials(
        initial, watcher.fetch, require_client_authentication=True
    )


class _CertWatcher:
    """gRPC's certificate-configuration fetcher over a TlsFiles (see server_credentials)."""

    def __init__(self, tls: TlsFiles) -> None:
        self.tls = tls
        self._stamp = self._stat()
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        self.reloads = 0

    def _stat(self) -> tuple[tuple[int, int], ...]:
        out = []
        for path in (self.tls.cert, self.tls.key, self.tls.ca):
            try:
                st = os.stat(path)
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((0, 0))
        return tuple(out)

    def fetch(self):  # -> grpc.ServerCertificateConfiguration | None
        with self._lock:
            now = time.monotonic()
            if now - self._checked < 1.0:
                return None
            self._checked = now
            stamp = self._stat()
            if stamp == self._stamp:
                return None
            try:
                cert, key, ca = self.tls.read()
                check_key_pair(cert, key, cert_name=self.tls.cert, key_name=self.tls.key)
            except LcError as e:
                log.warning("TLS files changed but cannot be used (keeping the old ones): %s", e)
                return None
            self._stamp = stamp
            self.reloads += 1
            log.info("TLS certificate reloaded from %s", self.tls.cert)
            return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)


_STATUS_ERRORS: dict[grpc.StatusCode, type[LcError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: PermissionDenied,
    grpc.StatusCode.INVALID_ARGUMENT: ValidationError,
    grpc.StatusCode.UNAVAILABLE: Unreachable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unreachable,
}


def error_from_rpc(e: grpc.RpcError, target: str) -> LcError:
    """The LcError (hence the exit code) for a failed call to the processor at ``target``.

    The one mapping from gRPC status codes to lc's errors, for hunters and the CLI alike.
    """
    code = e.code()
    details = e.details() or code.name
    cls = _STATUS_ERRORS.get(code, LcError)
    if cls is Unreachable:
        return Unreachable(f"cannot reach processor at {target}: {details}")
    if cls is LcError:
        return LcError(f"processor {target}: {code.name}: {details}")
    return cls(details)
