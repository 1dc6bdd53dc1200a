"""Failed TLS handshakes in the processor's log.

gRPC's C core does the handshakes and tells Python nothing when one fails: the client
sees "unavailable", the processor's code sees no call at all. The core does write each
failure to its own log (stderr, INFO level; with the ``handshaker`` tracer, together
with the peer's address). So ``lc process`` turns that log on and reads it through a
pipe (:func:`capture_grpc_log`): every failed handshake becomes one warning naming the
peer and the cause, rate limited (:class:`HandshakeLog`); the rest of the core's output
is dropped (passed through with ``-vv``). Lines that are not the core's (anything else
writing to file descriptor 2) pass through unchanged.

The parsing (:class:`GrpcLogReader`) is sans-IO; only :func:`capture_grpc_log` touches
file descriptors. This module does not import grpc: it must run before grpc is loaded.
"""

from __future__ import annotations

import logging
import os
import re
import select
import sys
import threading
import time
from collections.abc import Callable

from lc.common.text import log_text

__all__ = ["GrpcLogReader", "HandshakeLog", "capture_grpc_log", "explain"]

log = logging.getLogger("lc.processor.tls")

# glog-style prefix of the core's lines: "I1207 01:18:27.940905   10752 handshaker.cc:155] ..."
_HEAD = re.compile(rb"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ ([\w.-]+):\d+\] ?(.*)$")
_PEER = re.compile(rb"endpoint_peer_address=(?:ipv4:|ipv6:)?([^,}\s]+)")
_FAILED = b"CallNextHandshakerLocked: error="
# A handshake of this process's own client channels (an edge processor's uplink to its
# upstream): its failures are the uplink's to report, not a client's of ours.
_CLIENT = b"grpc.client_channel_factory="
_CONTINUATIONS = (b"=== Source Location Trace", b"src/core/", b" shutdown=")
_MAX_RECORD = 16 * 1024  # a record longer than this is cut (bounded memory)
_MAX_PARTIAL = 64 * 1024  # a "line" without newline longer than this is flushed as is

_CAUSES: list[tuple[tuple[str, ...], str]] = [
    (
        ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "CERTIFICATE_REQUIRED"),
        "the client sent no certificate",
    ),
    (("CERTIFICATE HAS EXPIRED", "CERTIFICATE_EXPIRED"), "the client's certificate has expired"),
    (("NOT YET VALID",), "the client's certificate is not valid yet (check the clocks)"),
    (
        ("UNABLE TO GET LOCAL ISSUER", "SELF SIGNED", "SELF-SIGNED", "UNABLE TO GET ISSUER"),
        "the client's certificate is not signed by our CA",
    ),
    (
        ("ALERT_UNKNOWN_CA", "ALERT_BAD_CERTIFICATE", "ALERT_CERTIFICATE_UNKNOWN"),
        "the client does not trust our certificate (is its --tls-ca our CA?)",
    ),
    (
        ("HTTP_REQUEST", "WRONG_VERSION_NUMBER", "UNEXPECTED_RECORD", "NOT_TLS", "PACKET_LENGTH"),
        "the client does not speak TLS (a plaintext --insecure client?)",
    ),
    (("SOCKET CLOSED", "END OF FILE", "CONNECTION RESET", "EOF"), "the client hung up"),
]


def explain(error: str) -> str:
    """A failed handshake's cause in words, with gRPC's own reason in brackets."""
    detail = error.strip()
    if detail.endswith(": OK"):
        detail = detail[:-4]
    if "OPENSSL_internal:" in detail:
        detail = detail.split("OPENSSL_internal:", 1)[1]
    upper = detail.upper()
    for needles, words in _CAUSES:
        if any(n in upper for n in needles):
            return f"{words} ({detail})"
    return detail


class HandshakeLog:
    """Logs failed handshakes: the first at once, then at most one line per ``interval``
    seconds, which counts the ones in between and names the last."""

    def __init__(
        self,
        logger: logging.Logger = log,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last_logged = float("-inf")
        self._held = 0
        self._held_last = ""
        self.failures = 0

    def failed(self, peer: str | None, error: str) -> None:
        who, why = log_text(peer or "a client"), log_text(explain(error), 300)
        line = f"TLS handshake from {who} failed: {why}"
        with self._lock:
            self.failures += 1
            now = self._clock()
            if now - self._last_logged >= self.interval:
                held, self._held = self._held, 0
                self._last_logged = now
            else:
                self._held += 1
                self._held_last = line
                return
        if held:
            line += f" ({held} more failed handshakes before this one were not logged)"
        self.logger.warning("%s", line)

    def tick(self) -> None:
        """Log the summary of held-back failures once their interval is over."""
        with self._lock:
            if not self._held or self._clock() - self._last_logged < self.interval:
                return
            held, last = self._held, self._held_last
            self._held = 0
            self._last_logged = self._clock()
        self.logger.warning(
            "%d more TLS handshakes failed in the last %g s; the last: %s",
            held,
            self.interval,
            last,
        )


class GrpcLogReader:
    """Splits gRPC's log output into records (a prefixed line and its continuation lines)
    and reports failed handshakes; sans-IO: feed it bytes, it calls back."""

    def __init__(
        self,
        on_failure: Callable[[str | None, str], None],
        passthrough: Callable[[bytes], None],
        show_grpc: bool = False,
    ) -> None:
        self.on_failure = on_failure
        self.passthrough = passthrough
        self.show_grpc = show_grpc
        self._partial = b""
        self._record: list[bytes] = []
        self._record_len = 0
        self._record_t = 0.0
        self._pending_ssl: bytes | None = None  # a failure seen without its peer yet
        self._pending_t = 0.0
        self._now = 0.0

    def feed(self, data: bytes, now: float = 0.0) -> None:
        """Take what the core wrote; ``now`` (monotonic seconds) dates new records."""
        self._now = now
        buf = self._partial + data
        *lines, self._partial = buf.split(b"\n")
        if len(self._partial) > _MAX_PARTIAL:
            lines.append(self._partial)
            self._partial = b""
        for line in lines:
            self._line(line + b"\n")

    def flush(self, now: float = float("inf"), max_age: float = 2.0) -> None:
        """The writer went quiet: finish a record (and report an unpaired failure) begun
        ``max_age`` seconds before ``now`` or earlier (a busy core may pause mid-record)."""
        if self._record and now - self._record_t >= max_age:
            self._end_record()
        if self._pending_ssl is not None and now - self._pending_t >= max_age:
            reason, self._pending_ssl = self._pending_ssl, None
            self.on_failure(None, reason.decode("utf-8", "replace"))

    def _line(self, line: bytes) -> None:
        if _HEAD.match(line):
            self._end_record()
            self._record = [line]
            self._record_len = len(line)
            self._record_t = self._now
        elif self._record:
            if self._record_len < _MAX_RECORD:
                self._record.append(line)
                self._record_len += len(line)
        elif line.startswith(_CONTINUATIONS):  # the tail of a record already ended
            if self.show_grpc:
                self.passthrough(line)
        else:
            self.passthrough(line)  # not gRPC's: someone else's output

    def _end_record(self) -> None:
        if not self._record:
            return
        text = b"".join(self._record)
        self._record = []
        self._record_len = 0
        m = _HEAD.match(text.split(b"\n", 1)[0])
        source, message = (m.group(1), m.group(2)) if m else (b"", b"")
        if source == b"handshaker.cc" and message.startswith(_FAILED):
            error = message[len(_FAILED) :]
            if _CLIENT in text:  # our own outgoing connection (and its SSL failure, if any)
                if not error.startswith(b"OK "):
                    self._pending_ssl = None
            elif not error.startswith(b"OK "):
                peer = _PEER.search(text)
                self._pending_ssl = None
                self.on_failure(
                    peer.group(1).decode("ascii", "replace") if peer else None,
                    error.split(b" shutdown=", 1)[0].decode("utf-8", "replace"),
                )
        elif source.startswith(b"ssl_transport_security") and message.startswith(
            b"Handshake failed"
        ):
            if self._pending_ssl is not None:  # two without a handshaker record: report one
                self.on_failure(None, self._pending_ssl.decode("utf-8", "replace"))
            self._pending_ssl = message.split(b"with error", 1)[-1].strip()
            self._pending_t = self._record_t
        if self.show_grpc:
            self.passthrough(text)


def capture_grpc_log(show_grpc: bool = False) -> HandshakeLog:
    """Turn on gRPC's handshake log and route it through a reader thread.

    Must run before grpc is imported (it reads GRPC_VERBOSITY and GRPC_TRACE once).
    File descriptor 2 becomes a pipe read by a daemon thread; Python's ``sys.stderr``
    is pointed at the real stderr, so lc's own output does not take the detour.
    """
    os.environ["GRPC_VERBOSITY"] = "INFO"
    os.environ["GRPC_TRACE"] = "handshaker"
    sys.stderr.flush()
    real = os.dup(2)
    r, w = os.pipe()
    os.dup2(w, 2)
    os.close(w)
    sys.stderr = open(  # noqa: SIM115 (lives as long as the process)
        real, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False
    )
    handshakes = HandshakeLog()

    def write(data: bytes) -> None:
        try:
            os.write(real, data)
        except OSError:
            pass

    reader = GrpcLogReader(handshakes.failed, write, show_grpc=show_grpc)

    def run() -> None:
        last = 0.0
        while True:
            try:
                ready, _, _ = select.select([r], [], [], 0.5)
                now = time.monotonic()
                if ready:
                    data = os.read(r, 65536)
                    if not data:
                        return
                    reader.feed(data, now)
                if not ready or now - last >= 1.0:
                    last = now
                    reader.flush(now)
                    handshakes.tick()
            except Exception:  # never let a parsing bug block the core's writes to fd 2
                try:
                    data = os.read(r, 65536)
                    write(data)
                except OSError:
                    return

    threading.Thread(target=run, name="lc-grpc-log", daemon=True).start()
    return handshakes
