"""Accepting packet batches: deduplicate, write, acknowledge.

Pure of gRPC: the DataService hands every batch to :meth:`Ingest.accept` and sends
back the Ack it returns. A batch is acknowledged only after its packets are written
and flushed to the OS, so an Ack means "safe in the output file".

Deduplication is by (hunter id, epoch, sequence): a hunter resends what was not
acknowledged after a reconnect, and anything at or below the highest sequence
already written for that (hunter, epoch) is acknowledged again without being
written twice. Batches of one epoch arrive in sequence order on a stream.
"""

from __future__ import annotations

import threading

from lc.common.pcapfile import PcapSink
from lc.common.wire import BatchRecords, unpack_batch
from lc.proto import lc_pb2

__all__ = ["Ingest", "flow_to_announce"]

# Flow control from the depth of the write queue (batches waiting for the writer).
SLOW_DEPTH = 8
PAUSE_DEPTH = 32
RESUME_DEPTH = 2


class Ingest:
    def __init__(self, sink: PcapSink) -> None:
        self.sink = sink
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._written: dict[tuple[str, int], int] = {}  # (hunter, epoch) -> highest sequence
        self._waiting = 0
        self._flow = lc_pb2.FLOW_CONTINUE
        self.packets = 0
        self.bytes = 0
        self.batches = 0
        self.duplicates = 0
        self.filter_matches: dict[str, int] = {}

    def accept(self, batch: lc_pb2.PacketBatch) -> tuple[lc_pb2.Ack, int, int]:
        """Write ``batch`` unless it is a duplicate; return (ack, packets, bytes) written.

        Raises:
            ParseError: the batch's columns are inconsistent (nothing is written).
        """
        key = (batch.hunter_id, batch.epoch)
        seq = batch.sequence
        with self._state_lock:
            self._waiting += 1
            self._update_flow()
        try:
            cols = unpack_batch(batch)
            with self._lock:
                if seq <= self._written.get(key, 0):
                    self.duplicates += 1
                    return lc_pb2.Ack(epoch=batch.epoch, sequence=seq, duplicate=True), 0, 0
                self._write(cols)
                self.sink.flush()
                self._written[key] = seq
                fm = self.filter_matches
                for m in cols.meta:
                    for fid in m.filter_ids:
                        fm[fid] = fm.get(fid, 0) + 1
                self.packets += len(cols)
                self.bytes += len(cols.records) - 16 * len(cols)
                self.batches += 1
            return (
                lc_pb2.Ack(epoch=batch.epoch, sequence=seq, packets=len(cols)),
                len(cols),
                len(cols.records) - 16 * len(cols),
            )
        finally:
            with self._state_lock:
                self._waiting -= 1
                self._update_flow()

    def _write(self, batch: BatchRecords) -> None:
        # Records of several link types in one batch go to one file per link type.
        for linktype, records, count in batch.linktype_groups():
            self.sink.write_records(linktype, records, count)

    def _update_flow(self) -> None:
        # Hysteresis: SLOW/PAUSE hold until the queue is nearly empty again.
        w = self._waiting
        if w >= PAUSE_DEPTH:
            self._flow = lc_pb2.FLOW_PAUSE
        elif w >= SLOW_DEPTH and self._flow != lc_pb2.FLOW_PAUSE:
            self._flow = lc_pb2.FLOW_SLOW
        elif w <= RESUME_DEPTH:
            self._flow = lc_pb2.FLOW_CONTINUE

    @property
    def flow(self) -> int:
        """CONTINUE, SLOW or PAUSE; each stream turns a return to CONTINUE into RESUME."""
        return self._flow

    def close(self) -> None:
        with self._lock:
            self.sink.flush()
            self.sink.fsync()
            self.sink.close()


def flow_to_announce(announced: int, state: int) -> int | None:
    """What a stream tells its hunter now, given what it said last; None for nothing.

    A return to CONTINUE after SLOW or PAUSE is announced as RESUME, unprompted, so
    a paused hunter (which sends nothing) is never left waiting.
    """
    if state == lc_pb2.FLOW_CONTINUE:
        if announced in (lc_pb2.FLOW_SLOW, lc_pb2.FLOW_PAUSE):
            return lc_pb2.FLOW_RESUME
        return None
    return None if state == announced else state
