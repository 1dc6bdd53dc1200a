"""Who may hold the processor's long-lived streams, and how many there may be.

Data streams run on the server's event loop (see :mod:`lc.processor.aioserve`); the
management RPCs run their synchronous code on a thread pool, where a filter subscription
holds its thread for its whole life. Without bounds, one client certificate opening
hundreds of subscriptions would take every thread (registrations, heartbeats and admin
commands would then wait until it left), and hundreds of data streams would each hold
buffers and a reader. :class:`StreamGate` keeps three rules:

* **A budget.** At most ``max_streams`` streams (StreamPackets and SubscribeFilters)
  are open at once; the pool has more threads than that, and the rest are kept for
  the short calls (registration, heartbeats, admin commands). A stream beyond the
  budget is refused with RESOURCE_EXHAUSTED.
* **One of each per hunter.** A hunter id holds at most one data stream and one filter
  subscription. A new one from the connection that registered the hunter replaces the
  old one, which ends with ABORTED (a hunter that reconnects gets through at once, even
  while its old connection is half dead). The operator is told in the log (rate
  limited).
* **One run per hunter id.** A hunter registers with the epoch of its run. While that
  run is *live* (a stream of it is open and it was heard from, by a batch, heartbeat or
  registration, within ``takeover_after`` seconds), another run with the same id
  (another epoch), and any stream from a connection that did not register, is refused
  with ALREADY_EXISTS naming the connection that holds the id. A restarted hunter whose
  old process died gets through at once (its streams closed with its connection); if
  the old connection is only half dead, the new run gets through once the old one has
  been silent for ``takeover_after`` seconds, and the old streams are ended then.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lc.common.text import log_text

__all__ = ["Refused", "StreamGate", "Throttle", "Ticket"]

log = logging.getLogger(__name__)

DATA = "data stream"
FILTERS = "filter subscription"


class Refused(Exception):
    """A stream or registration the gate turns down: ``code`` is a grpc.StatusCode name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(eq=False)
class Ticket:
    """One open stream: its kind, peer and (once known) hunter id."""

    kind: str
    peer: str
    cancel: Callable[[str], None]
    hunter_id: str | None = None
    closed: bool = False  # ended, or replaced (then ``cancel`` was called)
    released: bool = False  # counted out of the budget


@dataclass
class _Hunter:
    peer: str = ""  # the connection that registered the current run
    epoch: int = 0
    streams: dict[str, Ticket] = field(default_factory=dict)  # kind -> holder


class Throttle:
    """At most one log line per key every ``interval`` seconds; the next one says how
    many were held back. Bounded: past ``max_keys`` keys, the oldest are forgotten."""

    def __init__(
        self,
        logger: logging.Logger = log,
        interval: float = 10.0,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[object, tuple[float, int]] = {}

    def warning(self, key: object, message: str) -> None:
        now = self._clock()
        with self._lock:
            last, held = self._keys.get(key, (float("-inf"), 0))
            if now - last < self.interval:
                self._keys[key] = (last, held + 1)
                return
            self._keys.pop(key, None)
            if len(self._keys) >= self.max_keys:
                del self._keys[next(iter(self._keys))]
            self._keys[key] = (now, 0)
        if held:
            message += f" ({held} more like this in the last {self.interval:g} s)"
        self.logger.warning("%s", message)


class StreamGate:
    """The rules in the module doc. ``heard`` gives the seconds since a hunter was last
    heard from (None when unknown): the registry's clock."""

    def __init__(
        self,
        max_streams: int,
        heard: Callable[[str], float | None],
        takeover_after: float = 15.0,
        throttle: Throttle | None = None,
    ) -> None:
        self.max_streams = max_streams
        self.takeover_after = takeover_after
        self._heard = heard
        self._throttle = throttle or Throttle()
        self._lock = threading.Lock()
        self._open = 0
        self._hunters: dict[str, _Hunter] = {}
        self.refused = {"budget": 0, "duplicate": 0}
        self.replaced = 0

    @property
    def open_streams(self) -> int:
        with self._lock:
            return self._open

    # -- registration ----------------------------------------------------------------
    def register(self, hunter_id: str, epoch: int, peer: str) -> None:
        """Bind ``hunter_id`` to the run ``epoch`` on connection ``peer``.

        Raises:
            Refused: ALREADY_EXISTS while another run of this id is live.
        """
        with self._lock:
            h = self._hunters.setdefault(hunter_id, _Hunter())
            if h.epoch and epoch != h.epoch and self._live(hunter_id, h):
                why = self._held_by(hunter_id, h, f"another run (epoch {epoch}) is refused")
                self.refused["duplicate"] += 1
                self._throttle.warning(("dup", hunter_id), f"refused a registration: {why}")
                raise Refused("ALREADY_EXISTS", why)
            stale = [t for t in h.streams.values() if t.peer != peer]
            for t in stale:
                del h.streams[t.kind]
                t.closed = True
            old_peer, old_epoch = h.peer, h.epoch
            h.peer, h.epoch = peer, epoch
        if stale:
            self.replaced += len(stale)
            kinds = " and ".join(t.kind for t in stale)
            why = (
                f"hunter {hunter_id} registered again from {peer} (epoch {epoch}); its "
                f"{kinds} from {old_peer} (epoch {old_epoch}) ended"
            )
            self._throttle.warning(("replaced", hunter_id), log_text(why, 400))
            for t in stale:
                t.cancel(f"replaced: hunter {hunter_id} registered again from {peer}")

    # -- streams ---------------------------------------------------------------------
    def open(self, kind: str, peer: str, cancel: Callable[[str], None]) -> Ticket:
        """Admit one more stream, or raise Refused (RESOURCE_EXHAUSTED) past the budget."""
        with self._lock:
            if self._open >= self.max_streams:
                self.refused["budget"] += 1
                full = True
            else:
                self._open += 1
                full = False
        if full:
            msg = (
                f"the processor holds its maximum of {self.max_streams} streams; "
                f"{kind} from {peer} refused"
            )
            self._throttle.warning("budget", log_text(msg, 400))
            raise Refused("RESOURCE_EXHAUSTED", msg)
        return Ticket(kind, peer, cancel)

    def claim(self, ticket: Ticket, hunter_id: str) -> None:
        """Make ``ticket`` hunter ``hunter_id``'s stream of its kind, replacing the one it
        had, or raise Refused (ALREADY_EXISTS) when a live run from another connection
        holds the id."""
        with self._lock:
            if ticket.closed:
                raise Refused("ABORTED", f"{ticket.kind} of hunter {hunter_id} was replaced")
            h = self._hunters.setdefault(hunter_id, _Hunter())
            if h.peer and ticket.peer != h.peer and self._live(hunter_id, h):
                why = self._held_by(
                    hunter_id, h, f"a {ticket.kind} from {ticket.peer}, which did not register "
                    "it, is refused"
                )  # fmt: skip
                self.refused["duplicate"] += 1
                dup = True
            else:
                dup = False
                h.peer = ticket.peer
                old = h.streams.get(ticket.kind)
                h.streams[ticket.kind] = ticket
                ticket.hunter_id = hunter_id
                if old is not None:
                    old.closed = True
        if dup:
            self._throttle.warning(("dup", hunter_id), log_text(why, 400))
            raise Refused("ALREADY_EXISTS", why)
        if old is not None:
            self.replaced += 1
            self._throttle.warning(
                ("replaced", hunter_id),
                log_text(
                    f"hunter {hunter_id}: a new {ticket.kind} from {ticket.peer} replaces "
                    f"the one from {old.peer}",
                    400,
                ),
            )
            old.cancel(f"replaced by a newer {ticket.kind} of hunter {hunter_id}")

    def close(self, ticket: Ticket) -> None:
        """The stream ended (idempotent)."""
        with self._lock:
            if ticket.released:
                return
            ticket.released = True
            self._open -= 1
            ticket.closed = True
            hid = ticket.hunter_id
            h = self._hunters.get(hid) if hid is not None else None
            if h is not None and h.streams.get(ticket.kind) is ticket:
                del h.streams[ticket.kind]

    def forget(self, hunter_id: str) -> None:
        with self._lock:
            h = self._hunters.get(hunter_id)
            if h is not None and not h.streams:
                del self._hunters[hunter_id]

    # -- helpers (under the lock) ------------------------------------------------------
    def _live(self, hunter_id: str, h: _Hunter) -> bool:
        if not any(t.peer == h.peer for t in h.streams.values()):
            return False
        age = self._heard(hunter_id)
        return age is not None and age < self.takeover_after

    def _held_by(self, hunter_id: str, h: _Hunter, what: str) -> str:
        age = self._heard(hunter_id) or 0.0
        return (
            f"hunter {hunter_id} is already connected from {h.peer} (epoch {h.epoch}, heard "
            f"from {age:.0f} s ago): {what}. Give each hunter its own id; if that hunter is "
            f"gone, this one is accepted once it has been silent for {self.takeover_after:g} s"
        )
