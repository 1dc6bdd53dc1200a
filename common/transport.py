"""gRPC channel and server settings shared by hunters, processors and the admin CLI.

Every option lives in one commented list so that both ends agree. TLS material is
read from PEM files; with ``insecure`` the caller has chosen plaintext explicitly.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass

import grpc

from lc.common.credentials import check_tls_files
from lc.common.errors import (
    LcError,
    NotFound,
    PermissionDenied,
    Unreachable,
    ValidationError,
)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "TlsFailure",
    "TlsFiles",
    "channel_options",
    "error_from_rpc",
    "open_channel",
    "probe",
    "server_credentials",
    "server_options",
    "wait_ready",
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

    def checked(self) -> tuple[bytes, bytes, bytes]:
        """Read (cert, key, ca) and check them before use (see ``check_tls_files``).

        Certificates expiring within 30 days are logged as a warning (once per message).

        Raises:
            NotFound: a file does not exist.
            ValidationError: a file is unreadable or not PEM, the key does not match the
                certificate, the certificate has expired, is not yet valid or is not signed
                by the CA, or the CA has expired. The message names the file.
        """
        cert, key, ca = self.read()
        for warning in check_tls_files(
            cert, key, ca, cert_name=self.cert, key_name=self.key, ca_name=self.ca
        ):
            _warn_once(warning)
        return cert, key, ca


_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(message: str) -> None:
    with _warned_lock:
        if message in _warned or len(_warned) > 1000:
            return
        _warned.add(message)
    log.warning("%s", message)


class TlsFailure(Unreachable):
    """The processor answered, but the TLS handshake failed; the message says why."""


def open_channel(target: str, tls: TlsFiles | None) -> grpc.Channel:
    """A channel to ``target`` (HOST:PORT): mutual TLS with ``tls``, plaintext when None."""
    if tls is None:
        return grpc.insecure_channel(target, options=channel_options())
    cert, key, ca = tls.checked()
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
    cert, key, ca = tls.checked()
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
                cert, key, ca = self.tls.checked()
            except LcError as e:
                log.warning("TLS files changed but cannot be used (keeping the old ones): %s", e)
                return None
            self._stamp = stamp
            self.reloads += 1
            log.info("TLS certificate reloaded from %s", self.tls.cert)
            return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)


def _host_port(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host.strip("[]") or "localhost", int(port)


_VERIFY_HINTS = {
    2: "is not signed by the CA in {ca}",
    9: "is not valid yet (check the clocks)",
    10: "has expired",
    18: "is self-signed, not signed by the CA in {ca}",
    19: "is not signed by the CA in {ca}",
    20: "is not signed by the CA in {ca}",
    21: "is not signed by the CA in {ca}",
    62: "is not valid for the host name {host}",
}


_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")


def _rejected(e: ssl.SSLError, tls: TlsFiles) -> str:
    reason = (e.reason or str(e)).upper()
    if "WRONG_VERSION" in reason or "RECORD_LAYER" in reason or "PACKET_LENGTH" in reason:
        return f"the processor does not speak TLS (started with --insecure?) ({e.reason})"
    ours = f"the processor rejected our certificate {tls.cert}"
    if "UNKNOWN_CA" in reason or "BAD_CERTIFICATE" in reason or "DECRYPT" in reason:
        return f"{ours}: it is not signed by the processor's CA ({e.reason})"
    if "EXPIRED" in reason:
        return f"{ours} as expired (check the clocks) ({e.reason})"
    if "CERTIFICATE_REQUIRED" in reason:
        return f"the processor wants a client certificate and got none ({e.reason})"
    return f"{ours} ({e.reason or e})"


def probe(target: str, tls: TlsFiles | None, timeout: float = 3.0) -> tuple[str, bool]:
    """Why a channel to ``target`` does not come up, found by connecting once ourselves.

    Returns (reason, tls_problem): ``tls_problem`` is True when the processor answered but
    the TLS handshake failed (its certificate is not trusted by our CA, or is not valid
    for its host name, or it rejected ours); the reason is "" when nothing was found.
    gRPC reports every one of these as "unavailable"; Python's ssl module tells them apart.
    """
    try:
        host, port = _host_port(target)
    except ValueError:
        return f"bad address {target!r}", False
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as e:
        return f"cannot resolve {host}: {e.strerror}", False
    except ConnectionRefusedError:
        return f"connection refused (is a processor listening on port {port}?)", False
    except TimeoutError:
        return f"no answer within {timeout:g} s", False
    except OSError as e:
        return e.strerror or str(e), False
    if tls is None:
        with sock:  # does it answer HTTP/2 in plaintext, or does it want TLS?
            try:
                sock.settimeout(min(timeout, 2.0))
                sock.sendall(_H2_PREFACE)
                first = sock.recv(16)
            except TimeoutError:
                return "", False
            except OSError:
                first = b""
        if not first or first[:1] == b"\x15":  # hung up, or a TLS alert record
            return "the processor expects TLS, and this client runs with --insecure", True
        return "", False
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=tls.ca)
        ctx.load_cert_chain(tls.cert, tls.key)
        ctx.set_alpn_protocols(["h2"])
    except (OSError, ssl.SSLError, ValueError) as e:
        sock.close()
        return f"cannot load our TLS files: {e}", False
    theirs = "the processor's certificate"
    try:
        with ctx.wrap_socket(sock, server_hostname=host) as tsock:
            tsock.settimeout(min(timeout, 2.0))
            try:  # with TLS 1.3 the server judges our certificate after the handshake
                data = tsock.recv(64)
            except ssl.SSLError as e:
                return _rejected(e, tls), True
            except TimeoutError:
                return "", False
            except OSError:
                data = b""
            if not data:
                return (
                    f"the processor refused our certificate {tls.cert}: it closed the "
                    "connection right after the handshake (is our certificate signed by the "
                    "processor's CA?)",
                    True,
                )
            return "", False
    except ssl.SSLCertVerificationError as e:
        hint = _VERIFY_HINTS.get(e.verify_code, "is not trusted")
        return (
            f"{theirs} {hint.format(ca=tls.ca, host=host)} ({e.verify_message})",
            True,
        )
    except ssl.SSLError as e:
        return _rejected(e, tls), True
    except TimeoutError:
        return f"no TLS answer within {timeout:g} s", True
    except OSError as e:
        return f"the connection broke during the TLS handshake ({e.strerror or e})", True


def wait_ready(
    channel: grpc.Channel,
    target: str,
    tls: TlsFiles | None,
    timeout: float,
    stop: threading.Event | None = None,
) -> None:
    """Wait until ``channel`` is connected, or raise naming the real cause.

    Waits in short steps, so that a set ``stop`` ends the wait at once (Unreachable).

    As soon as gRPC reports a failed connection attempt, one probe (see :func:`probe`)
    looks at why: a TLS problem fails at once (TlsFailure); anything else (nothing
    listening yet, no answer) is waited out until ``timeout`` and then reported
    (Unreachable).
    """
    failed = threading.Event()

    def watch(state: grpc.ChannelConnectivity) -> None:
        if state == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            failed.set()

    channel.subscribe(watch, try_to_connect=True)
    ready = grpc.channel_ready_future(channel)
    deadline = time.monotonic() + timeout
    why = ""
    probed = False
    try:
        while True:
            left = deadline - time.monotonic()
            try:
                ready.result(timeout=max(0.0, min(left, 0.1)))
                return
            except grpc.FutureTimeoutError:
                pass
            if stop is not None and stop.is_set():
                raise Unreachable(f"stopped while connecting to {target}")
            if (failed.is_set() and not probed) or (left <= 0 and not probed):
                probed = True
                why, tls_problem = probe(target, tls, timeout=min(3.0, max(left, 1.0)))
                if tls_problem:
                    raise TlsFailure(f"TLS handshake with the processor at {target} failed: {why}")
            if left <= 0:
                break
    finally:
        ready.cancel()
        channel.unsubscribe(watch)
    raise Unreachable(
        f"cannot reach processor at {target} within {timeout:g} s" + (f": {why}" if why else "")
    )


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
        if "connection refused" in details.lower():
            # gRPC's "failed to connect to all addresses; last error: UNKNOWN:
            # ipv6:%5B::1%5D:55555: Failed to connect to remote host: Connection refused"
            # says what probe() says, less readably
            details = (
                "connection refused (is a processor listening on port "
                f"{target.rpartition(':')[2]}?)"
            )
        return Unreachable(f"cannot reach processor at {target}: {details}")
    if cls is LcError:
        return LcError(f"processor {target}: {code.name}: {details}")
    return cls(details)
