"""Events to a Redis stream (``--events-redis``), from the event log on disk.

Packetbeat and Suricata users feed Redis; lc appends each event to the stream
``lc:events`` with ``XADD lc:events MAXLEN ~ N * id <event.id> dataset <dataset>
json <the event's JSON line>``. ``id`` is the event log's ``event.id``
(``hunter:epoch:sequence:n``), stable across resends: a consumer deduplicates by it.

**The event log is the queue.** The writer never talks to Redis: it writes the event
log as before (inside the ledger's transaction), and this forwarder, on its own thread,
reads the log's files up to what is committed (:attr:`EventLog.committed_at`; files
named before the current one are complete) and sends what it has not sent yet. Its
position (file name and byte offset) is kept in ``DATA_DIR/redis-cursor.json``, written
(atomically, fsync'd) after each round Redis accepted. So:

* a down or slow Redis delays only this thread; PCAP, the event log and the Acks go on,
  and the events wait in the log files (as long as those are kept) and go out, in order,
  when Redis is back (reconnect with backoff, 0.5 s doubling to 30 s);
* delivery is at least once: a crash or a Redis failure between an XADD and the cursor
  write sends those events again (same ``id``);
* a processor started with ``--events-redis`` for the first time (no cursor) starts at
  the end of what the log holds then: earlier events are not sent.

After a crash that lost the last commits (power failure) the log's current file is cut
back to the committed size; a cursor past it is moved back to it, so the events written
there again are sent (duplicates of those sent before, by ``id``).

The client is redis-py (``redis`` on PyPI): URL parsing (``redis://``, ``rediss://``
for TLS, ``unix://``; database number; user and password), timeouts and reconnection
are its, and pipelining makes a round one round trip.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import orjson

from lc.common.errors import ValidationError
from lc.common.text import log_text
from lc.processor.eventlog import EventLog
from lc.processor.limits import Throttle
from lc.processor.sinks import Received

__all__ = ["STREAM", "RedisEvents", "check_redis_url"]

log = logging.getLogger(__name__)
_throttle = Throttle(log, interval=30.0)

STREAM = "lc:events"
ROUND = 500  # events per pipeline round (and cursor write)
_BACKOFF_MIN, _BACKOFF_MAX = 0.5, 30.0


def check_redis_url(url: str) -> Any:
    """A redis-py client for ``url`` (nothing connects yet).

    Raises:
        ValidationError: not a redis://, rediss:// or unix:// URL redis-py accepts.
    """
    import redis

    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValidationError(f"--events-redis must be redis://HOST:PORT/N, got {url!r}")
    try:
        return redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=3, health_check_interval=30
        )
    except ValueError as e:
        raise ValidationError(f"--events-redis: {e}") from None


class RedisEvents:
    """The forwarder (see the module docstring); also an observer, woken by commits."""

    name = "redis"

    def __init__(
        self, url: str, maxlen: int, events: EventLog, state_dir: str, stream: str = STREAM
    ) -> None:
        if maxlen < 1:
            raise ValidationError("--events-redis-maxlen must be at least 1")
        self.client = check_redis_url(url)
        self.url = url
        self.maxlen = maxlen
        self.events = events
        self.stream = stream
        self.directory = events.directory
        self.cursor_path = os.path.join(state_dir, "redis-cursor.json")
        self.sent = 0  # events Redis accepted (this run)
        self.errors = 0  # rounds that failed (Redis down, refused, timed out)
        self.skipped = 0  # lines that were not an event (not JSON): skipped
        self.files_missing = 0  # log files gone before they were sent (removed by hand)
        self.connected = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.file, self.offset = self._load_cursor()

    # -- cursor ---------------------------------------------------------------------------
    def _load_cursor(self) -> tuple[str, int]:
        try:
            with open(self.cursor_path, "rb") as f:
                c = orjson.loads(f.read())
            name, offset = str(c["file"]), int(c["offset"])
            if os.sep in name or not name.startswith("events-") or offset < 0:
                raise ValueError(name)
            return name, offset
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, orjson.JSONDecodeError) as e:
            log.error(
                "redis: unreadable cursor %s (%s): starting at the log's end", self.cursor_path, e
            )
        path, size = self.events.committed_at
        name = os.path.basename(path)
        self._save_cursor(name, size)
        return name, size

    def _save_cursor(self, name: str, offset: int) -> None:
        tmp = self.cursor_path + ".tmp"
        data = orjson.dumps({"file": name, "offset": offset, "stream": self.stream})
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.cursor_path)

    # -- observer ---------------------------------------------------------------------------
    def observe(self, batches: Sequence[Received]) -> None:
        """A group was committed: there may be events to send (never waits)."""
        self._wake.set()

    # -- thread -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lc-redis", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Send what the log holds, for up to ``timeout`` seconds, then stop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout + 1)
        try:
            self.client.close()
        except Exception:
            pass

    def _run(self) -> None:
        import redis

        backoff = _BACKOFF_MIN
        while True:
            stopping = self._stop.is_set()
            try:
                self._drain()
                if not self.connected:
                    log.info("redis: sending events to %s", log_text(self.url))
                self.connected = True
                backoff = _BACKOFF_MIN
            except (redis.RedisError, OSError) as e:
                self.errors += 1
                self.connected = False
                _throttle.warning(
                    "down",
                    f"redis: cannot send events to {log_text(self.url)}: {log_text(e)}; "
                    f"they wait in the event log (retrying in {backoff:g} s)",
                )
                if stopping:
                    return
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            if stopping:
                return
            self._wake.wait(1.0)
            self._wake.clear()

    def _next_file(self, name: str) -> str | None:
        """The log file after ``name`` (names sort by day, then counter)."""
        later = sorted(
            n
            for n in os.listdir(self.directory)
            if n.startswith("events-") and n.endswith(".jsonl") and n > name
        )
        return later[0] if later else None

    def _drain(self) -> None:
        """Send everything committed since the cursor, a round at a time."""
        while True:
            cur_path, cur_size = self.events.committed_at
            current = os.path.basename(cur_path)
            name, offset = self.file, self.offset
            path = os.path.join(self.directory, name)
            if name == current:
                limit = cur_size
                if offset > limit:  # the file was cut back to its committed size
                    offset = self.offset = limit
            elif name > current:  # cannot happen (the cursor is never ahead of the log)
                return
            else:
                try:
                    limit = os.path.getsize(path)
                except FileNotFoundError:
                    limit = -1
            if offset < limit:
                lines, end = _read_lines(path, offset, limit, ROUND)
                if end == offset:  # not a whole line: cannot happen below a committed size
                    return
                offset = end
                self._send(lines)
                self.file, self.offset = name, offset
                self._save_cursor(name, offset)
                continue
            if name == current:
                return
            nxt = self._next_file(name)
            if nxt is None:
                return
            if limit < 0:
                self.files_missing += 1
                log.error("redis: event log file %s is gone; its unsent events are lost", path)
            self.file, self.offset = nxt, 0
            self._save_cursor(nxt, 0)

    def _send(self, lines: list[bytes]) -> None:
        pipe = self.client.pipeline(transaction=False)
        n = 0
        for line in lines:
            try:
                doc = orjson.loads(line)
                event = doc["event"]
                fields = {"id": event["id"], "dataset": event["dataset"], "json": line}
            except (orjson.JSONDecodeError, KeyError, TypeError):
                self.skipped += 1
                continue
            pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
            n += 1
        if n:
            pipe.execute()
        self.sent += n

    # -- figures ----------------------------------------------------------------------------
    def figures(self) -> list[tuple[str, str, str, float]]:
        """(metric name, counter|gauge, help, value) for the processor's metrics."""
        return [
            ("lc_processor_redis_events_sent", "counter", "Events Redis accepted (XADD).",
             self.sent),
            ("lc_processor_redis_errors", "counter", "Rounds of XADDs that failed.", self.errors),
            ("lc_processor_redis_connected", "gauge", "1 while the last round succeeded.",
             int(self.connected)),
            ("lc_processor_redis_backlog_bytes", "gauge",
             "Bytes of the event log's current file not yet sent to Redis (0 when behind "
             "by a whole file: see the cursor).", self.backlog()),
        ]  # fmt: skip

    def backlog(self) -> int:
        path, size = self.events.committed_at
        if os.path.basename(path) != self.file:
            return 0
        return max(0, size - self.offset)


def _read_lines(path: str, offset: int, limit: int, most: int) -> tuple[list[bytes], int]:
    """Up to ``most`` whole lines of ``path`` from ``offset``, not past ``limit``; the
    lines (newline stripped) and the offset after them."""
    lines: list[bytes] = []
    with open(path, "rb") as f:
        f.seek(offset)
        while offset < limit and len(lines) < most:
            line = f.readline(limit - offset)
            if not line.endswith(b"\n"):
                break  # cannot happen below a committed size (groups end with a newline)
            offset += len(line)
            lines.append(line[:-1])
    return lines, offset
