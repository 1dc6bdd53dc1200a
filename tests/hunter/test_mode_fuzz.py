"""No byte sequence stops a hunter: mutated frames through every registered mode, then
the batcher, the wire codec (sent and spooled forms) and protobuf serialisation, and
back through the processor's unpacking (issue 9, item 2: one hostile SIP packet ended
a VoIP hunter with UnicodeEncodeError at the protobuf step).

Seeds are real frames: the public SIP/RTP captures of the corpus when present, and
synthetic calls (UDP and TCP SIP with SDP, RTP) always.
"""

from __future__ import annotations

from array import array
from functools import cache
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lc.common.filters import Filter, compile_filters
from lc.common.pcapfile import frame_records, open_capture
from lc.common.wire import encode_batch, encode_extras, unpack_batch
from lc.hunter import modes
from lc.hunter.batcher import Batcher
from lc.hunter.capture import Chunk
from lc.hunter.modes.base import ModeContext
from lc.proto import lc_pb2
from tests.hunter.test_voip import CORPUS, T0, call_frames, invite, need_corpus, tcp_frame

SEED_FILES = [
    "sip/heplify_sip_ipv4_tcp.pcap",
    "sip/sipnab_register-invite-reinvite-bye.pcap",
    "sip/zeek_sip-wireshark.pcap",
    "rtp/sipnab_sip-rtp-g711.pcap",
    "mixed/suricata_sip-method.pcap",
]

# A filter of every type each mode applies, so that every matcher sees hostile values.
FILTERS = [
    Filter(id="ip", type="ip_address", pattern="10.0.0.0/8"),
    Filter(id="bpf", type="bpf", pattern="udp"),
    Filter(id="user", type="sip_user", pattern="*a*"),
    Filter(id="phone", type="phone_number", pattern="+49 30 1234567"),
    Filter(id="uri", type="sip_uri", pattern="sip:*"),
    Filter(id="cid", type="call_id", pattern="*@*"),
    Filter(id="codec", type="codec", pattern="pcm*"),
    Filter(id="kw", type="keyword", pattern="invite"),
]

TOKENS = [b"\xff\xfe", b"\xc3(", b"\x00", b"\r\n", b"\r\n\r\n", b"Call-ID: \xed\xa0\x80",
          b"From: <sip:\xff@x>", b"Content-Length: 99999", b"v=0\r\nc=IN IP4 \xff\r\n",
          b"m=audio 0 RTP/AVP \xff", b"SIP/2.0 ", b"INVITE "]  # fmt: skip


@cache
def sip_seeds() -> tuple[bytes, ...]:
    """The seeds that carry SIP (most of the interesting strings)."""
    return tuple(f for f in seeds() if b"SIP/2.0" in f)


@cache
def seeds() -> tuple[bytes, ...]:
    out: list[bytes] = []
    for name in SEED_FILES:
        path = CORPUS / name
        if not path.exists():
            continue
        with open_capture(Path(path)) as r:
            for _ts, ifx, data, _ in r.records():
                if len(out) < 4000 and r.interfaces[ifx].linktype == 1:  # Ethernet
                    out.append(bytes(data))
    out += [b for _, b in call_frames("fuzz-call", "alice", 20000, 4, T0)]
    out.append(tcp_frame("10.0.0.1", "10.0.0.2", 40000, 5060, 1, invite("tcp-c", "bob", 20100)))
    return tuple(out)


# Places where a hostile byte keeps a message parseable but its strings undecodable.
MARKERS = [b"sip:", b"Call-ID: ", b"From: ", b"To: ", b"a=rtpmap:8 ", b"c=IN IP4 ", b"INVITE "]
HOSTILE = [b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\x1b[2J", b"\x00"]


@st.composite
def mutated(draw) -> bytes:
    pool = sip_seeds() if draw(st.integers(0, 9)) < 7 else seeds()
    frame = bytearray(draw(st.sampled_from(pool)))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "token", "insert", "inplace", "inplace"]))
        pos = draw(st.integers(0, max(0, len(frame) - 1)))
        if kind == "inplace":  # same length: the IP and UDP lengths stay right
            at = frame.find(draw(st.sampled_from(MARKERS)))
            if at >= 0:
                bad = draw(st.sampled_from(HOSTILE))
                at += draw(st.integers(0, 12))
                frame[at : at + len(bad)] = bad[: max(0, len(frame) - at)]
        elif kind == "flip" and frame:
            frame[pos] = draw(st.integers(0, 255))
        elif kind == "cut":
            del frame[pos:]
        elif kind == "token":
            tok = draw(st.sampled_from(TOKENS))
            frame[pos : pos + len(tok)] = tok
        else:
            frame[pos:pos] = draw(st.binary(max_size=40))
    return bytes(frame)


def chunk_of(frames: list[bytes], t0: int) -> Chunk:
    ts = array("q", [t0 + k * 1000 for k in range(len(frames))])
    caps = array("I", [len(b) for b in frames])
    return Chunk(ts, caps, array("I", caps), frame_records(ts, caps, caps, b"".join(frames)), 0)


def through_the_wire(fwd, interfaces, seq: int) -> int:
    """Batch, encode (sent and spooled forms), serialise and unpack what a mode gave."""
    b = Batcher(batch_size=16)
    c = fwd.chunk
    sealed = b.add_chunk(c.ts_ns, c.caplen, c.origlen, c.records, c.iface, 0, False, fwd.meta)
    b.add_events(fwd.events, 0)
    if b.pending:
        sealed.append(b.seal())
    sent = 0
    for sb in sealed:
        batch = encode_batch("h1", 1, seq, interfaces, sb.records, sb.count, sb.iface, sb.meta,
                             sb.events)  # fmt: skip
        wire = batch.SerializeToString()
        extras = encode_extras(sb.meta, sb.count, sb.events)
        again = encode_batch("h1", 1, seq, interfaces, sb.records, sb.count, sb.iface,
                             extras=extras)  # fmt: skip
        assert again.SerializeToString() == wire
        got = lc_pb2.PacketBatch.FromString(wire)
        assert len(unpack_batch(got)) == sb.count
        for ev in got.events:
            ev.SerializeToString()
        sent += sb.count
    return sent


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated(), min_size=1, max_size=40), st.sampled_from(["allow", "filters"]))
def test_hostile_frames_through_every_mode_and_the_wire(frames, how):
    interfaces = [("eth0", 1)]
    for name in modes.names():
        spec = modes.get(name)
        assert spec is not None
        policy = "allow" if how == "allow" else "deny"
        mode = spec.factory(ModeContext(interfaces, policy, events="all"), spec.config())
        kept = [f for f in FILTERS if f.type in spec.filter_types] if how == "filters" else []
        mode.apply(compile_filters(kept, "h1", spec.filter_types))
        half = len(frames) // 2
        sent = through_the_wire(mode.process(chunk_of(frames[:half], T0)), interfaces, 1)
        sent += through_the_wire(mode.process(chunk_of(frames[half:], T0 + 10**9)), interfaces, 2)
        sent += through_the_wire(mode.tick(T0 + 400 * 10**9), interfaces, 3)
        sent += through_the_wire(mode.finish(), interfaces, 4)
        c = mode.counters()
        assert all(isinstance(v, int) and v >= 0 for v in c.figures.values())
        assert all(isinstance(v, int) and v >= 0 for v in c.dropped.values())
        assert "filtered" in c.dropped
        c.summary.encode("utf-8")
        assert sent <= len(frames), name  # nothing forwarded twice


# --- Protocol sessions --------------------------------------------------------------------
# The test above feeds mostly SIP. This one feeds each protocol mode windows of its own
# corpus captures (handshakes, requests, mail dialogues, DNS transactions), some frames
# mutated, reordered or repeated, under filters of every type the mode applies, with
# the events made into the processor's JSON documents. (Run for hours outside the suite,
# this found a Date header of year 200 ending the email mode: ValueError at an int64
# event field; a few hundred examples per run keep the net in place.)

PROTOCOL_DIRS = {
    "dns": ("dns", "mixed"),
    "http": ("http", "mixed"),
    "tls": ("tls", "mixed"),
    "email": ("smtp", "imap", "pop3"),
}
PATTERNS = {
    "bpf": ["tcp", "udp port 53"],
    "ip_address": ["10.0.0.0/8", "::/0"],
    "dns_domain": ["*.com", "*a*"],
    "tls_sni": ["*.com", "*a*"],
    "tls_ja3": ["0" * 32],
    "tls_ja3s": ["0" * 32],
    "tls_ja4": ["t13d*", "t*"],
    "tls_ja4s": ["t*"],
    "http_host": ["*a*", "*.com"],
    "http_ja4h": ["ge*"],
    "http_method": ["GET", "POST"],
    "http_status": ["2xx", "404"],
    "http_url": ["*a*", "/i*"],
    "http_user_agent": ["*e*"],
    "keyword": ["the", "password"],
    "email_address": ["*a*", "*.com"],
    "email_command": ["MAIL", "RETR", "FETCH"],
    "email_mailbox": ["*a*", "INBOX"],
    "email_subject": ["*e*"],
}
PROTOCOL_TOKENS = [
    b"\xff\xfe", b"\xc3(", b"\x00", b"\r\n", b"\r\n\r\n", b"\xed\xa0\x80", b"\x1b[2J",
    b"Host: \xff\r\n", b"Content-Length: 99999999999999999999\r\n",
    b"Transfer-Encoding: chunked\r\n", b"ffffffffffffffff\r\n", b"HTTP/1.1 101 Switching\r\n",
    b"CONNECT ", b"MAIL FROM:<\xff@\x00>\r\n", b"DATA\r\n", b".\r\n",
    b"Date: Mon, 1 Jan 0200 00:00:00 +0000\r\n", b"Subject: =?utf-8?b?/w==?=\r\n",
    b"Subject: =?x-bad?q?=ff?=\r\n", b"* 1 FETCH (BODY[] {99999}\r\n", b"a1 LOGIN \"\xff\" x\r\n",
    b"RETR 1\r\n", b"STARTTLS\r\n", b"\x16\x03\x01\xff\xff",
    b"\x16\x03\x03\x00\x05\x01\x00\x00\x01",
    b"\xc0\x0c", b"\xc0\x00", b"\x3f" + b"a" * 63, b"\x00\x10\x00\x01", b"\x00\x05",
]  # fmt: skip


@cache
def protocol_seeds(mode: str) -> tuple[tuple[bytes, ...], ...]:
    """Each capture of the mode's corpus folders as its Ethernet frames (at most 3000)."""
    out = []
    for folder in PROTOCOL_DIRS[mode]:
        for path in sorted((CORPUS / folder).glob("*.pcap*")):
            if path.suffix not in (".pcap", ".pcapng"):
                continue
            frames: list[bytes] = []
            with open_capture(path) as r:
                for _ts, ifx, data, _ in r.records():
                    if r.interfaces[ifx].linktype == 1 and len(frames) < 3000:
                        frames.append(bytes(data))
            if frames:
                out.append(tuple(frames))
    return tuple(out)


def hostile_session(rnd, mode: str) -> list[bytes]:
    """A window of one capture of the mode's protocol, about a third of its frames
    mutated, sometimes shuffled or partly repeated."""
    src = rnd.choice(protocol_seeds(mode))
    start = 0 if rnd.random() < 0.3 else rnd.randrange(len(src))
    out = []
    for f in src[start : start + rnd.randint(1, 120)]:
        if rnd.random() < 0.3:
            f = bytearray(f)
            for _ in range(rnd.randint(1, 4)):
                kind = rnd.choice(["flip", "cut", "token", "insert", "payload"])
                pos = rnd.randrange(max(1, len(f)))
                tok = rnd.choice(PROTOCOL_TOKENS)
                if kind == "flip" and f:
                    f[pos] = rnd.randrange(256)
                elif kind == "cut":
                    del f[max(pos, 14) :]
                elif kind == "token":
                    f[pos : pos + len(tok)] = tok
                elif kind == "payload":  # same length: headers' lengths stay right
                    at = rnd.randint(min(54, len(f)), max(min(54, len(f)), len(f) - 1))
                    line = f.find(b"\r\n", at)
                    if line >= 0 and rnd.random() < 0.7:  # at a line's start
                        at = line + 2
                    f[at : at + len(tok)] = tok[: max(0, len(f) - at)]
                else:
                    f[pos:pos] = rnd.randbytes(rnd.randint(1, 40))
            f = bytes(f)
        out.append(f)
    if rnd.random() < 0.2:
        rnd.shuffle(out)
    if rnd.random() < 0.2:
        out += out[: rnd.randint(0, len(out))]
    return out


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.sampled_from(sorted(PROTOCOL_DIRS)))
def test_hostile_protocol_sessions_through_their_mode_the_wire_and_the_event_log(rnd, name):
    import orjson

    from lc.common.wire import event_problem
    from lc.processor.eventlog import event_document

    need_corpus()
    frames = hostile_session(rnd, name)
    spec = modes.get(name)
    assert spec is not None
    how = rnd.choice(["allow", "all", "some"])
    interfaces = [("eth0", 1)]
    events = rnd.choice(["all", "captured"])
    ctx = ModeContext(interfaces, "allow" if how == "allow" else "deny", events=events)
    mode = spec.factory(ctx, spec.config())
    kept = [
        Filter(id=f"{t}{i}", type=t, pattern=p)
        for t in spec.filter_types
        for i, p in enumerate(PATTERNS[t])
        if how == "all" or (how == "some" and rnd.random() < 0.4)
    ]
    mode.apply(compile_filters(kept, "h1", spec.filter_types))
    cut = rnd.randint(0, len(frames))
    outputs = [mode.process(chunk_of(frames[:cut], T0))]
    outputs.append(mode.process(chunk_of(frames[cut:], T0 + 10**9)))
    if rnd.random() < 0.5:  # filters pushed mid-session
        mode.apply(compile_filters(kept[::2], "h1", spec.filter_types))
    outputs += [mode.tick(T0 + 400 * 10**9), mode.finish()]
    sent = 0
    for seq, fwd in enumerate(outputs, 1):
        for ev in fwd.events:
            got = lc_pb2.Event.FromString(ev.SerializeToString())
            if event_problem(got) is None:
                orjson.dumps(event_document(got, "h1", "h1:1:1:0"))
        sent += through_the_wire(fwd, interfaces, seq)
    c = mode.counters()
    assert all(isinstance(v, int) and v >= 0 for v in c.figures.values())
    assert all(isinstance(v, int) and v >= 0 for v in c.dropped.values())
    c.summary.encode("utf-8")
    assert sent <= len(frames), name  # nothing forwarded twice
