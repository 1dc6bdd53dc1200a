"""SIP and RTCP to a HOMER collector or sngrep as HEPv3 (``--hep-out``).

An observer: the writer hands it committed batches after their Acks (never delaying
one); :meth:`HepOut.observe` only queues them (at most :data:`MAX_PENDING` batches:
beyond, the oldest are dropped and counted, ``dropped{reason="queue_full"}``), and
the forwarder's own thread does the rest:

* picks the packets whose metadata says ``sip`` or ``rtcp`` (a VoIP hunter's), in
  batch order, and decodes them (:func:`lc.common.decode.decode_packet`);
* SIP over UDP: the datagram's payload, one message (IP fragments put back together
  first, :class:`lc.common.flow.Fragments`); SIP over TCP: each direction's segments
  in sequence order through the SIP stream framer, one HEP message per SIP message
  (a retransmitted segment is skipped, a gap starts the framing afresh; at most
  :data:`MAX_STREAMS` directions, the least recently used forgotten); RTCP: the
  datagram's payload, protocol type 5;
* encodes each with :func:`lc.common.hep.encode_hep3` (the packet's addresses, ports
  and capture time, capture agent id ``--hep-agent-id``, ``--hep-password`` as the
  authentication key, the Call-ID as correlation id) and sends it: ``udp://`` one
  datagram each; ``tcp://`` over one connection, reconnected with backoff (0.5 s
  doubling to 30 s). What cannot be sent is dropped and counted by reason
  (``send_error``, ``not_connected``, ``too_big``, ``malformed``): HEP is a mirror for
  eyes, not a delivery path; the PCAP is the record.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from urllib.parse import urlsplit

from lc.common.decode import decode_packet
from lc.common.errors import ParseError, ValidationError
from lc.common.flow import Fragments
from lc.common.hep import HEP_RTCP, HEP_SIP, encode_hep3
from lc.common.sip import SipStreamFramer
from lc.common.text import log_text
from lc.processor.limits import Throttle
from lc.processor.sinks import Received

__all__ = ["MAX_PENDING", "MAX_STREAMS", "HepOut", "parse_hep_url"]

log = logging.getLogger(__name__)
_throttle = Throttle(log, interval=30.0)

MAX_PENDING = 1024  # committed batches waiting for the forwarder
MAX_STREAMS = 1024  # TCP directions framed at once
_NS = 1_000_000_000
_RAW_IP = 101  # LINKTYPE_RAW: a reassembled datagram
_TCP, _UDP = 6, 17
_SYN, _FIN, _RST = 0x02, 0x01, 0x04
_REASONS = ("queue_full", "send_error", "not_connected", "too_big", "malformed")


def parse_hep_url(url: str) -> tuple[str, str, int]:
    """``udp://HOST:PORT`` or ``tcp://HOST:PORT`` -> (scheme, host, port).

    Raises:
        ValidationError: another scheme, or no host or port.
    """
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError:
        port = None
        u = None
    if u is None or u.scheme not in ("udp", "tcp") or not u.hostname or not port:
        raise ValidationError(f"--hep-out must be udp://HOST:PORT or tcp://HOST:PORT, got {url!r}")
    return u.scheme, u.hostname, port


class _Direction:
    __slots__ = ("buf", "framer", "next_seq")

    def __init__(self, seq: int) -> None:
        self.framer = SipStreamFramer()
        self.next_seq = seq
        self.buf = bytearray()  # bytes fed to the framer and not yet part of a message


class HepOut:
    """The HEP forwarder (see the module docstring)."""

    name = "hep"

    def __init__(self, url: str, agent_id: int = 0, password: str | None = None) -> None:
        self.scheme, self.host, self.port = parse_hep_url(url)
        if not 0 <= agent_id <= 0xFFFFFFFF:
            raise ValidationError("--hep-agent-id must be 0 to 4294967295")
        self.url = url
        self.agent_id = agent_id
        self.key = (password or "").encode()
        self.sent = 0  # HEP messages sent
        self.sent_bytes = 0
        self.dropped = dict.fromkeys(_REASONS, 0)
        self._pending: deque[Sequence[Received]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._addr: tuple | None = None
        self._retry_at = 0.0
        self._backoff = 0.5
        self._streams: OrderedDict[tuple, _Direction] = OrderedDict()
        self._frags = Fragments()

    # -- observer --------------------------------------------------------------------------
    def observe(self, batches: Sequence[Received]) -> None:
        """Queue committed batches (never waits)."""
        with self._cond:
            if len(self._pending) >= MAX_PENDING:
                self._pending.popleft()
                self.dropped["queue_full"] += 1
            self._pending.append(batches)
            self._cond.notify()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lc-hep", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (for up to ``timeout`` seconds), then stop."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._sock is not None:
            self._sock.close()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait(1.0)
                if not self._pending:
                    return
                item = self._pending.popleft()
            try:
                for b in item:
                    self._batch(b)
            except Exception:  # a bug: never the end of the forwarder
                log.exception("hep: a batch could not be forwarded")

    # -- packets -----------------------------------------------------------------------------
    def _batch(self, b: Received) -> None:
        cols = b.cols
        metas = cols.packet_meta()
        if not any(m is not None and m.protocol in ("sip", "rtcp") for m in metas):
            return
        records = memoryview(cols.records)
        iface = cols.iface
        ifaces = cols.interfaces
        off = 0
        for i, (m, caplen) in enumerate(zip(metas, cols.caplen, strict=True)):
            start = off
            off += 16 + caplen
            if m is None or m.protocol not in ("sip", "rtcp"):
                continue
            sec, ns = (
                int.from_bytes(records[start : start + 4], "little"),
                int.from_bytes(records[start + 4 : start + 8], "little"),
            )
            linktype = ifaces[iface[i] if iface is not None else 0][1]
            self._packet(
                linktype,
                bytes(records[start + 16 : off]),
                sec * _NS + ns,
                HEP_SIP if m.protocol == "sip" else HEP_RTCP,
                m.session_id.encode("utf-8", "surrogateescape")[:1024],
            )

    def _packet(self, linktype: int, data: bytes, ts: int, kind: int, call_id: bytes) -> None:
        try:
            d = decode_packet(linktype, data)
        except ParseError:
            self.dropped["malformed"] += 1
            return
        if d.ip_version == 0:
            self.dropped["malformed"] += 1
            return
        if d.is_fragment:
            got = self._frags.feed(ts, None, linktype, memoryview(data), d)
            if got is None:
                return
            whole, _ = got
            try:
                d = decode_packet(_RAW_IP, whole)
            except ParseError:
                self.dropped["malformed"] += 1
                return
            data = whole
        payload = data[d.payload_offset : d.payload_offset + d.payload_len]
        if d.proto == _UDP:
            if payload.strip(b"\r\n"):  # not a keep-alive
                self._send(d.src, d.dst, d.sport, d.dport, ts, payload, _UDP, kind, call_id)
        elif d.proto == _TCP and kind == HEP_SIP:
            self._segment(d, ts, payload, call_id)

    def _segment(self, d, ts: int, payload: bytes, call_id: bytes) -> None:
        key = (d.src, d.sport, d.dst, d.dport)
        flags = d.tcp_flags
        st = self._streams.get(key)
        seq = d.tcp_seq
        if st is None or flags & _SYN:
            st = _Direction((seq + 1) & 0xFFFFFFFF if flags & _SYN else seq)
            self._streams[key] = st
            if len(self._streams) > MAX_STREAMS:
                self._streams.popitem(last=False)
        else:
            self._streams.move_to_end(key)
        if payload:
            ahead = (seq - st.next_seq) & 0xFFFFFFFF
            if ahead >= 0x80000000:  # starts before what was framed: a retransmission
                behind = 0x100000000 - ahead
                payload = payload[behind:]
                seq = st.next_seq
            elif ahead:  # a gap: frame afresh from here
                st.framer = SipStreamFramer()
                st.buf = bytearray()
            if payload:
                st.next_seq = (seq + len(payload)) & 0xFFFFFFFF
                # st.buf holds exactly the bytes the framer holds (its stream offsets
                # buf_start onwards), so a message's bytes are cut out of it.
                buf_start = st.framer.offset - len(st.buf)
                st.buf += payload
                for s, e, _msg in st.framer.feed(payload):
                    msg = bytes(st.buf[s - buf_start : e - buf_start])
                    self._send(d.src, d.dst, d.sport, d.dport, ts, msg, _TCP, HEP_SIP, call_id)
                extra = len(st.buf) - st.framer.buffered
                if extra > 0:
                    del st.buf[:extra]
        if flags & (_FIN | _RST):
            self._streams.pop(key, None)

    # -- sending -----------------------------------------------------------------------------
    def _send(self, src, dst, sport, dport, ts, payload, proto, kind, call_id) -> None:
        try:
            msg = encode_hep3(
                src, dst, sport, dport, ts, bytes(payload),
                ip_proto=proto, proto_type=kind, agent_id=self.agent_id,
                correlation_id=call_id, auth_key=self.key,
            )  # fmt: skip
        except ValueError:
            self.dropped["too_big"] += 1
            return
        sock = self._socket()
        if sock is None:
            self.dropped["not_connected"] += 1
            return
        try:
            if self.scheme == "udp":
                sock.sendto(msg, self._addr)  # type: ignore[arg-type]
            else:
                sock.sendall(msg)
        except OSError as e:
            self.dropped["send_error"] += 1
            _throttle.warning("send", f"hep: cannot send to {log_text(self.url)}: {e}")
            if self.scheme == "tcp":
                self._drop_socket()
            return
        self.sent += 1
        self.sent_bytes += len(msg)

    def _socket(self) -> socket.socket | None:
        if self._sock is not None:
            return self._sock
        now = time.monotonic()
        if now < self._retry_at:
            return None
        try:
            info = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_DGRAM if self.scheme == "udp" else
                socket.SOCK_STREAM,
            )[0]  # fmt: skip
            sock = socket.socket(info[0], info[1])
            if self.scheme == "tcp":
                sock.settimeout(5)
                sock.connect(info[4])
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._addr = info[4]
        except OSError as e:
            self._retry_at = now + self._backoff
            self._backoff = min(self._backoff * 2, 30.0)
            _throttle.warning("connect", f"hep: cannot reach {log_text(self.url)}: {e}")
            return None
        self._sock = sock
        self._backoff = 0.5
        return sock

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, 30.0)

    # -- figures -----------------------------------------------------------------------------
    def figures(self) -> list[tuple[str, str, str, float]]:
        out = [
            ("lc_processor_hep_messages_sent", "counter", "HEP messages sent.", self.sent),
            ("lc_processor_hep_bytes_sent", "counter", "Bytes of HEP messages sent.",
             self.sent_bytes),
        ]  # fmt: skip
        for reason, n in self.dropped.items():
            out.append(
                (f"lc_processor_hep_dropped_{reason}", "counter",
                 f"SIP/RTCP not sent as HEP: {reason}.", n)
            )  # fmt: skip
        return out
