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
from array import array

from lc.common.pcapfile import PcapSink
from lc.common.wire import BatchColumns, unpack_batch
from lc.proto import lc_pb2

__all__ = ["Ingest"]

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
                self.packets += len(cols)
                self.bytes += len(cols.blob)
                self.batches += 1
            return (
                lc_pb2.Ack(epoch=batch.epoch, sequence=seq, packets=len(cols)),
                len(cols),
                len(cols.blob),
            )
        finally:
            with self._state_lock:
                self._waiting -= 1
                self._update_flow()

    def _write(self, cols: BatchColumns) -> None:
        groups = cols.linktype_groups()
        if len(groups) == 1:
            self.sink.write_columns(groups[0][0], cols.ts_ns, cols.caplen, cols.origlen, cols.blob)
            return
        # Packets of several link types in one batch: each goes to its own file, in order.
        offsets = array("Q", [0]) * (len(cols) + 1)
        acc = 0
        for i, c in enumerate(cols.caplen):
            offsets[i] = acc
            acc += c
        mv = memoryview(cols.blob)
        for linktype, idx in groups:
            assert idx is not None
            ts = array("q", (cols.ts_ns[i] for i in idx))
            cl = array("I", (cols.caplen[i] for i in idx))
            ol = array("I", (cols.origlen[i] for i in idx))
            blob = b"".join(mv[offsets[i] : offsets[i] + cols.caplen[i]] for i in idx)
            self.sink.write_columns(linktype, ts, cl, ol, blob)

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
