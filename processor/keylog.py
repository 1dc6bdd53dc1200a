"""The TLS key log sink: key lines hunters followed (``lc hunt http --tls-keylog``)
appended to ``DATA_DIR/keys/sslkeylog.txt`` (mode 0600, directory 0700), the file
Wireshark reads with ``-o tls.keylog_file:PATH`` to decrypt the captured HTTPS.

A sink (:mod:`lc.processor.sinks`): a batch's lines are written with the batch, taken
back with it, and handed to the OS before it is acknowledged. The file holds no ledger
state: after a crash it may hold lines of batches that were not acknowledged, which
the hunter sends again; a key log line said twice means the same, so duplicates are
harmless. Lines are checked again here (printable ASCII, no newline, at most 1024
bytes); others are counted (``malformed``) and skipped. Key material is never logged.
"""

from __future__ import annotations

import os
import threading

from lc.processor.sinks import Received, Statements

__all__ = ["KeyLog"]

_MAX_LINE = 1024


def _ok(line: bytes) -> bool:
    return 0 < len(line) <= _MAX_LINE and line.isascii() and all(32 <= b < 127 for b in line)


class KeyLog:
    """The key log sink (see the module docstring)."""

    name = "keys"

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, "sslkeylog.txt")
        self._f = None
        self._opened_at = 0
        self._lock = threading.Lock()
        self.lines = 0  # lines written (this run)
        self.malformed = 0

    def _file(self):
        if self._f is None:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.fchmod(fd, 0o600)
            self._f = os.fdopen(fd, "ab")
            self._opened_at = self._f.tell()  # an earlier run's keys end here
        return self._f

    def mark(self) -> object:
        # None: not open yet (no line this run); taken back to the size the file had
        # when it was opened, which keeps an earlier run's keys (no stat per batch).
        return (self._f.tell() if self._f is not None else None, self.lines)

    def write(self, batch: Received) -> None:
        lines = batch.cols.keylog
        if not lines:
            return
        good = [x for x in lines if _ok(x)]
        self.malformed += len(lines) - len(good)
        if good:
            self._file().write(b"".join(x + b"\n" for x in good))
            with self._lock:
                self.lines += len(good)

    def rollback(self, mark: object) -> None:
        size, lines = mark  # type: ignore[misc]
        if self._f is not None:
            self._f.flush()
            self._f.truncate(self._opened_at if size is None else size)
            self._f.seek(0, os.SEEK_END)
        self.lines = lines

    def prepare(self) -> Statements:
        if self._f is not None:
            self._f.flush()
            os.fsync(self._f.fileno())
        return ()

    def committed(self) -> None:
        pass

    def close(self) -> Statements:
        if self._f is not None:
            self.prepare()
            self._f.close()
            self._f = None
        return ()
