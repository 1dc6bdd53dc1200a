"""VoIP per-call capture on the processor: the call files and the call index.

Split in two modules: :mod:`lc.processor.callfiles` (one pcap file per call, the
:class:`CallWriter`) and :mod:`lc.processor.callindex` (the SQLite index behind
``lc list calls``); the call states are :mod:`lc.common.sipcall`'s. This module
re-exports them for existing imports.
"""

from __future__ import annotations

from lc.common.sipcall import STATES, SipSummary, next_state
from lc.processor.callfiles import DEFAULT_PATTERN, TOKENS, CallWriter
from lc.processor.callindex import CallIndex

__all__ = [
    "DEFAULT_PATTERN",
    "STATES",
    "TOKENS",
    "CallIndex",
    "CallWriter",
    "SipSummary",
    "next_state",
]
