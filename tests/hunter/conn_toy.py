"""A toy TCP line protocol mode for the connection-capture tests: one message per text
line (each direction framed on its own), a connection captured whole when a line holds
a keyword filter's bytes, settled (rejected) at a ``DONE`` line. What a real
connection mode (TLS, HTTP, email) supplies, in a few lines."""

from __future__ import annotations

import struct
from array import array

from lc.common.pcapfile import frame_records
from lc.hunter.capture import Chunk
from lc.hunter.modes.base import ModeContext
from lc.hunter.modes.sessions import Dissector, SessionMode
from lc.hunter.session import Session, SessionLimits
from lc.proto import lc_pb2

PORT = 7070


class LineFramer:
    """Lines of one direction: (start, end, line without its newline)."""

    def __init__(self, max_line: int = 4096) -> None:
        self.offset = 0
        self._buf = b""
        self._start = 0
        self.max_line = max_line
        self.counters = {"oversized": 0}

    def feed(self, data: bytes) -> list[tuple[int, int, object]]:
        self.offset += len(data)
        buf = self._buf + bytes(data)
        out = []
        while True:
            i = buf.find(b"\n")
            if i < 0:
                break
            out.append((self._start, self._start + i + 1, buf[:i].rstrip(b"\r")))
            self._start += i + 1
            buf = buf[i + 1 :]
        if len(buf) > self.max_line:  # bounded: the long line is skipped
            self.counters["oversized"] += 1
            self._start += len(buf)
            buf = b""
        self._buf = buf
        return out


class LineDissector(Dissector):
    protocol = "line"
    tags = ("line",)
    message_tag = 0
    noun = ("connection", "connections")
    capture_unit = "connection"
    session_events = False

    def __init__(self, port: int = PORT, udp_flows: bool = False) -> None:
        self.ports = frozenset({port})
        self.udp_flows = udp_flows
        self.seen: list[bytes] = []

    def new_framer(self) -> LineFramer:
        return LineFramer()

    def parse(self, payload) -> bytes:
        return bytes(payload).rstrip(b"\r\n")

    def on_message(self, s: Session, msg: bytes, flow: tuple, ts: int) -> object:
        self.seen.append(msg)
        if msg == b"IGNORE":
            self.ignore_rest(s)
        return None

    def filter_values(self, msg: bytes, ctx: object) -> tuple[dict[str, object], list]:
        return {"keyword": [msg]}, []

    def settled(self, s: Session, msg: bytes) -> bool:
        return msg == b"DONE"

    def summary(self, msg: bytes) -> bytes:
        return msg

    def meta(self, s: Session, tag: int, summary: object) -> lc_pb2.PacketMeta:
        proto = "line" if summary is None else "line:" + summary.decode(errors="replace")
        return lc_pb2.PacketMeta(protocol=proto, session_id=s.name, filter_ids=s.ids)

    def message_event(self, s: Session, msg: bytes, flow: tuple, ts: int) -> lc_pb2.Event:
        return lc_pb2.Event()  # the engine fills in the rest


def line_mode(
    limits: SessionLimits | None = None,
    policy: str = "deny",
    events: str = "captured",
    port: int = PORT,
    udp_flows: bool = False,
) -> SessionMode:
    ctx = ModeContext([("eth0", 1)], policy, events)
    return SessionMode(ctx, LineDissector(port, udp_flows), limits or SessionLimits())


# -- frames ------------------------------------------------------------------------------

_TCP = struct.Struct("!HHIIBBHHH")
SYN, ACK, PSH, FIN, RST = 0x02, 0x10, 0x08, 0x01, 0x04


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip4(n: int) -> bytes:
    return bytes([10, 0, n // 256, n % 256])


def ether_ip(src: bytes, dst: bytes, proto: int, l4: bytes) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0x4000, 64, proto, 0, src, dst)
    hdr = hdr[:10] + _csum(hdr).to_bytes(2, "big") + hdr[12:]
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + hdr + l4


def tcp(src: bytes, sport: int, dst: bytes, dport: int, seq: int, ack: int, flags: int,
        payload: bytes = b"") -> bytes:  # fmt: skip
    seg = _TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0)
    seg += payload
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(seg))
    c = _csum(pseudo + seg)
    return ether_ip(src, dst, 6, seg[:16] + c.to_bytes(2, "big") + seg[18:])


def udp(src: bytes, sport: int, dst: bytes, dport: int, payload: bytes) -> bytes:
    return ether_ip(src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)


class Conn:
    """One TCP connection's frames, client ``ip4(n)``:``40000+n`` to 10.0.1.1:PORT."""

    def __init__(self, n: int, port: int = PORT) -> None:
        self.c, self.cp = ip4(n), 40000 + n
        self.s, self.sp = ip4(257), port
        self.cseq, self.sseq = 1000 * n, 500000 + n

    def _c(self, flags: int, payload: bytes = b"") -> bytes:
        f = tcp(self.c, self.cp, self.s, self.sp, self.cseq, self.sseq, flags, payload)
        self.cseq += len(payload) + (1 if flags & (SYN | FIN) else 0)
        return f

    def _s(self, flags: int, payload: bytes = b"") -> bytes:
        f = tcp(self.s, self.sp, self.c, self.cp, self.sseq, self.cseq, flags, payload)
        self.sseq += len(payload) + (1 if flags & (SYN | FIN) else 0)
        return f

    def handshake(self) -> list[bytes]:
        return [self._c(SYN), self._s(SYN | ACK), self._c(ACK)]

    def client(self, data: bytes) -> bytes:
        return self._c(PSH | ACK, data)

    def server(self, data: bytes) -> bytes:
        return self._s(PSH | ACK, data)

    def client_ack(self) -> bytes:
        return self._c(ACK)

    def server_ack(self) -> bytes:
        return self._s(ACK)

    def close(self) -> list[bytes]:
        return [self._c(FIN | ACK), self._s(FIN | ACK), self._c(ACK)]

    def reset(self) -> bytes:
        return self._c(RST | ACK)


def chunk(frames: list[bytes], t0: int, step: int = 1000) -> Chunk:
    ts = array("q", [t0 + k * step for k in range(len(frames))])
    caps = array("I", [len(b) for b in frames])
    return Chunk(ts, caps, array("I", caps), frame_records(ts, caps, caps, b"".join(frames)), 0)


def records(fwd) -> list[bytes]:
    """The frames a Forward carries (without their pcap headers)."""
    c = fwd.chunk
    out, off = [], 0
    for cap in c.caplen:
        out.append(bytes(c.records[off + 16 : off + 16 + cap]))
        off += 16 + cap
    return out
