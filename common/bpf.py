"""Compiling BPF expressions with libpcap, without opening any capture.

Used to validate filters where they are accepted (the processor refuses a ``bpf``
filter that does not compile) and to evaluate one in user space (replayed files,
and naming the filters a packet matched).
"""

from __future__ import annotations

import pcapy

from lc.common.errors import ValidationError

__all__ = ["check_bpf", "compile_bpf"]

DEFAULT_SNAPLEN = 262144

# libpcap compiles for a DLT_ value; a capture file names its link type with a LINKTYPE_
# value, the same number except for these (libpcap's pcap-common.c): a raw-IP file
# (LINKTYPE_RAW, 101) is DLT_RAW to the compiler, which knows no link type 101; so is
# 14, OpenBSD's DLT_RAW, found in old files (lc.common.decode reads it as raw IP too).
_DLT_OF_LINKTYPE = {14: pcapy.DLT_RAW, 100: pcapy.DLT_ATM_RFC1483, 101: pcapy.DLT_RAW}


def compile_bpf(expr: str, linktype: int = 1, snaplen: int = DEFAULT_SNAPLEN):
    """A compiled program whose ``filter(bytes)`` is non-zero for a matching packet.
    ``linktype``: a LINKTYPE_ (a file's) or DLT_ (a live handle's) value.

    Raises:
        ValidationError: the expression does not compile; the message quotes it.
    """
    try:
        return pcapy.compile(_DLT_OF_LINKTYPE.get(linktype, linktype), snaplen, expr, 1, 0)
    except pcapy.PcapError as e:
        raise ValidationError(f"invalid BPF filter {expr!r}: {e}") from None


def check_bpf(expr: str, linktype: int = 1) -> None:
    """Raise ValidationError unless ``expr`` compiles for ``linktype``."""
    compile_bpf(expr, linktype)
