"""The processor's view of its hunters: registration, heartbeats, counters, state.

State is derived when asked, from the clock: ``connected`` while heartbeats are
fresh, ``stale`` after ``stale_after`` seconds without one, ``disconnected`` once the
hunter closed its stream cleanly (a clean stop) and sent nothing since.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from lc.proto import lc_pb2

__all__ = ["HunterRecord", "Registry"]


@dataclass(slots=True)
class HunterRecord:
    hunter_id: str
    hostname: str = ""
    version: str = ""
    mode: str = ""
    interfaces: list[str] = field(default_factory=list)
    capabilities: list[str] = field(default_factory=list)
    local_filters: list = field(default_factory=list)  # lc_pb2.Filter, checked
    peer: str = ""
    epoch: int = 0
    registered_at_ns: int = 0
    last_seen: float = 0.0  # monotonic
    last_heartbeat_ns: int = 0
    counters: lc_pb2.HunterCounters = field(default_factory=lc_pb2.HunterCounters)
    filter_version: int = 0
    packets: int = 0
    bytes: int = 0
    batches: int = 0
    duplicates: int = 0
    streams: int = 0
    closed_cleanly: bool = False


class Registry:
    def __init__(self, stale_after: float = 30.0, clock=time.monotonic) -> None:
        self.stale_after = stale_after
        self._clock = clock
        self._lock = threading.Lock()
        self._hunters: dict[str, HunterRecord] = {}

    def register(self, req: lc_pb2.RegisterRequest, peer: str) -> HunterRecord:
        with self._lock:
            rec = self._hunters.get(req.hunter_id)
            if rec is None:
                rec = self._hunters[req.hunter_id] = HunterRecord(req.hunter_id)
            rec.hostname = req.hostname
            rec.version = req.version
            rec.mode = req.mode
            rec.interfaces = list(req.interfaces)
            rec.capabilities = list(req.capabilities)
            rec.local_filters = list(req.local_filters)
            rec.peer = peer
            rec.epoch = req.epoch
            rec.registered_at_ns = time.time_ns()
            rec.last_seen = self._clock()
            rec.closed_cleanly = False
            return rec

    def heartbeat(self, req: lc_pb2.HeartbeatRequest) -> bool:
        """Record a heartbeat; False when the hunter is unknown, or registered under
        another run (epoch): it has to register (again) first."""
        with self._lock:
            rec = self._hunters.get(req.hunter_id)
            if rec is None or (req.epoch and rec.epoch and req.epoch != rec.epoch):
                return False
            rec.last_seen = self._clock()
            rec.last_heartbeat_ns = time.time_ns()
            rec.counters.CopyFrom(req.counters)
            rec.filter_version = req.filter_version
            return True

    def stream_opened(self, hunter_id: str, peer: str) -> None:
        with self._lock:
            rec = self._hunters.setdefault(hunter_id, HunterRecord(hunter_id))
            rec.streams += 1
            rec.peer = peer
            rec.last_seen = self._clock()
            rec.closed_cleanly = False

    def stream_closed(self, hunter_id: str, clean: bool) -> None:
        with self._lock:
            rec = self._hunters.get(hunter_id)
            if rec is not None:
                rec.streams = max(0, rec.streams - 1)
                rec.closed_cleanly = clean and rec.streams == 0

    def received(self, hunter_id: str, packets: int, nbytes: int, duplicate: bool) -> None:
        with self._lock:
            rec = self._hunters.get(hunter_id)
            if rec is None:
                return
            rec.last_seen = max(rec.last_seen, self._clock())
            if duplicate:
                rec.duplicates += 1
            else:
                rec.batches += 1
                rec.packets += packets
                rec.bytes += nbytes

    def heard(self, hunter_id: str) -> float | None:
        """Seconds since the hunter was last heard from (registration, heartbeat, batch);
        None for a hunter never seen."""
        with self._lock:
            rec = self._hunters.get(hunter_id)
            return None if rec is None else self._clock() - rec.last_seen

    def state(self, rec: HunterRecord) -> str:
        if rec.closed_cleanly:
            return "disconnected"
        if self._clock() - rec.last_seen > self.stale_after:
            return "stale"
        return "connected"

    def state_counts(self) -> dict[str, int]:
        """Hunters per state (connected, stale, disconnected), for the metrics."""
        out = dict.fromkeys(("connected", "stale", "disconnected"), 0)
        with self._lock:
            for r in self._hunters.values():
                st = self.state(r)
                out[st] = out.get(st, 0) + 1
        return out

    def get(self, hunter_id: str) -> lc_pb2.HunterInfo | None:
        with self._lock:
            rec = self._hunters.get(hunter_id)
            return None if rec is None else self._info(rec)

    def all(self) -> list[lc_pb2.HunterInfo]:
        with self._lock:
            return [
                self._info(r) for r in sorted(self._hunters.values(), key=lambda r: r.hunter_id)
            ]

    def _info(self, r: HunterRecord) -> lc_pb2.HunterInfo:
        return lc_pb2.HunterInfo(
            hunter_id=r.hunter_id,
            hostname=r.hostname,
            version=r.version,
            mode=r.mode,
            interfaces=r.interfaces,
            capabilities=r.capabilities,
            local_filters=r.local_filters,
            state=self.state(r),
            peer=r.peer,
            epoch=r.epoch,
            registered_at_ns=r.registered_at_ns,
            last_heartbeat_ns=r.last_heartbeat_ns,
            counters=r.counters,
            packets_received=r.packets,
            bytes_received=r.bytes,
            batches_received=r.batches,
            batches_duplicate=r.duplicates,
            streaming=r.streams > 0,
            filter_version=r.filter_version,
        )
