"""Capture files: the one import for reading, record framing and writing.

The code lives in three modules, each easy to find on its own:

* :mod:`lc.common.pcapreader`: pcap and pcapng reading (:func:`open_capture`);
* :mod:`lc.common.pcaprecord`: nanosecond pcap records, the framing shared by the
  wire, the reader and the writer (:func:`frame_records`, :func:`record_lengths`);
* :mod:`lc.common.pcapwriter`: :class:`PcapWriter` and the processor's
  :class:`PcapSink`.

``lc.common.pcapfile`` re-exports all of them, so existing imports keep working.
"""

from __future__ import annotations

from .pcapreader import CaptureReader, Columns, Interface, Records, open_capture
from .pcaprecord import (
    MAX_RECORD,
    PcapFormatError,
    frame_records,
    linktype_name,
    record_lengths,
)
from .pcapwriter import PcapSink, PcapWriter, SinkFile

__all__ = [
    "MAX_RECORD",
    "CaptureReader",
    "Columns",
    "Interface",
    "PcapFormatError",
    "PcapSink",
    "PcapWriter",
    "Records",
    "SinkFile",
    "frame_records",
    "linktype_name",
    "open_capture",
    "record_lengths",
]
