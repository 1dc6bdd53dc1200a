"""lc.common.bpf: compiling BPF expressions for a capture's link type."""

from __future__ import annotations

import struct

from lc.common.bpf import check_bpf, compile_bpf


def test_a_raw_ip_file_link_type_compiles_and_matches():
    # A raw-IP capture file says LINKTYPE_RAW (101); libpcap's compiler wants DLT_RAW
    # and refused 101 ("unknown data link type 101"), so `lc hunt -r raw.pcap -f tcp`
    # exited 3 and every bpf filter failed on such a file.
    check_bpf("tcp", 101)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, bytes([10, 0, 0, 1]),
                     bytes([10, 0, 0, 2])) + bytes(20)  # fmt: skip
    assert compile_bpf("tcp and host 10.0.0.2", 101).filter(ip)
    assert not compile_bpf("udp", 101).filter(ip)
    assert compile_bpf("tcp", 12).filter(ip)  # a live handle's DLT_RAW, as before
    assert compile_bpf("tcp", 14).filter(ip)  # OpenBSD's DLT_RAW in an old file
