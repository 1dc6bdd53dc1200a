"""Following a TLS key log file (``--tls-keylog``): new lines go to the processor.

Clients write an NSS key log (``SSLKEYLOGFILE``: curl, browsers, OpenSSL) by appending
lines such as ``CLIENT_RANDOM <64 hex> <96 hex>`` or TLS 1.3's
``CLIENT_HANDSHAKE_TRAFFIC_SECRET <64 hex> <hex>``. :class:`KeylogFollower` reads what
was appended since the last :meth:`~KeylogFollower.poll` (whole lines only; a
truncated or replaced file is read again from its start) and keeps the lines of that
format; comments and blank lines are skipped, anything else is counted (``malformed``)
and skipped, lines longer than :data:`MAX_LINE` too. The hunter attaches the lines to
its batches (``PacketBatch.tls_keylog``), so they travel only over the mTLS link and are
spooled and acknowledged like packets; they are never logged (secrets).
"""

from __future__ import annotations

import os
import re
import threading

__all__ = ["MAX_LINE", "KeylogFollower"]

MAX_LINE = 1024
_MAX_READ = 1 << 20  # bytes read per poll
_LINE_RE = re.compile(rb"[A-Z][A-Z0-9_]{2,63} [0-9a-fA-F]{16,128} [0-9a-fA-F]{16,256}")


class KeylogFollower:
    """Reads the lines appended to one key log file (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._offset = 0
        self._ident: tuple[int, int] | None = None
        self._partial = b""
        self._lock = threading.Lock()
        self.counters = {"lines": 0, "malformed": 0, "read_errors": 0, "restarts": 0}

    def poll(self) -> list[bytes]:
        """The valid lines appended since the last call (no newline), in order."""
        with self._lock:
            try:
                with open(self.path, "rb") as f:
                    st = os.fstat(f.fileno())
                    ident = (st.st_dev, st.st_ino)
                    if ident != self._ident or st.st_size < self._offset:
                        if self._ident is not None:
                            self.counters["restarts"] += 1
                        self._ident, self._offset, self._partial = ident, 0, b""
                    if st.st_size == self._offset:
                        return []
                    f.seek(self._offset)
                    data = f.read(_MAX_READ)
            except FileNotFoundError:
                return []  # not written yet: curl creates it at its first handshake
            except OSError:
                self.counters["read_errors"] += 1
                return []
            self._offset += len(data)
            data = self._partial + data
            *lines, self._partial = data.split(b"\n")
            if len(self._partial) > MAX_LINE:
                self._partial = b""
                self.counters["malformed"] += 1
            out = []
            for raw in lines:
                line = raw.strip()
                if not line or line.startswith(b"#"):
                    continue
                if len(line) > MAX_LINE or _LINE_RE.fullmatch(line) is None:
                    self.counters["malformed"] += 1
                    continue
                out.append(line)
            self.counters["lines"] += len(out)
            return out
