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


def compile_bpf(expr: str, linktype: int = 1, snaplen: int = DEFAULT_SNAPLEN):
    """A compiled program whose ``filter(bytes)`` is non-zero for a matching packet.

    Raises:
        ValidationError: the expression does not compile; the message quotes it.
    """
    try:
        return pcapy.compile(linktype, snaplen, expr, 1, 0)
    except pcapy.PcapError as e:
        raise ValidationError(f"invalid BPF filter {expr!r}: {e}") from None


def check_bpf(expr: str, linktype: int = 1) -> None:
    """Raise ValidationError unless ``expr`` compiles for ``linktype``."""
    compile_bpf(expr, linktype)
