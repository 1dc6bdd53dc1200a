"""TLS mode (lc.hunter.modes.tls) on the public corpus, against independent oracles,
and its decisions.

Oracles: FoxIO's Rust tool (``.ja4-rust.snap.yaml``: per connection the first
ClientHello's JA4 and SNI and the JA4S, QUIC included) and tshark (``.expected.tsv``:
JA3 and JA3S per TCP stream). The mode's events (one per connection) must agree.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lc.common.filters import Filter, compile_filters
from lc.common.pcapfile import open_capture
from lc.hunter.capture import FileSource
from lc.hunter.modes.base import ModeContext
from lc.hunter.modes.tls import TLS_FILTER_TYPES, TlsConfig, TlsFramer, tls_mode

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
# lc follows the JA4 specification for a non-alphanumeric ALPN (lc.common.fingerprint).
SPEC_OVER_REFERENCE = {"tls/ja4_tls-non-ascii-alpn.pcapng": ("t13d151699", "t13d1516bd")}


def need(rel: str) -> Path:
    path = CORPUS / rel
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"corpus file missing: {path}")
        pytest.skip(f"corpus file missing: {path}")
    return path


class Run:
    """A capture through the mode: forwarded frame numbers, metadata, events."""

    def __init__(self, path: Path, filters: list[Filter], policy: str = "deny", **cfg) -> None:
        ifs: list = []
        self.mode = tls_mode(ModeContext(ifs, policy=policy, events="all"), TlsConfig(**cfg))
        self.mode.apply(compile_filters(filters, "h", TLS_FILTER_TYPES))
        numbers: dict[tuple[int, bytes], int] = {}
        with open_capture(path) as r:
            for n, (ts, _, data, _) in enumerate(r.records(), 1):
                numbers.setdefault((ts, bytes(data)), n)
        self.forwarded: list[tuple[int, object]] = []
        self.events: list = []
        src = FileSource(str(path), None)
        while (ch := src.read(64)) is not None:
            ifs[:] = src.interfaces
            self._take(self.mode.process(ch), numbers)
        self._take(self.mode.finish(), numbers)
        self.figures = self.mode.counters().figures

    def _take(self, fwd, numbers) -> None:
        self.events += fwd.events
        o = fwd.chunk
        off = 0
        for i in range(len(o.caplen)):
            rec = bytes(o.records[off + 16 : off + 16 + o.caplen[i]])
            off += 16 + o.caplen[i]
            self.forwarded.append((numbers[(o.ts_ns[i], rec)], fwd.meta[i]))

    def by_flow(self) -> dict[tuple, object]:
        """Events by (client ip, client port, server ip, server port, transport)."""
        import ipaddress

        out = {}
        for ev in self.events:
            f = ev.flow
            key = (
                str(ipaddress.ip_address(f.src_ip)),
                f.src_port,
                str(ipaddress.ip_address(f.dst_ip)),
                f.dst_port,
                "quic" if ev.tls.quic else "tcp",
            )
            out.setdefault(key, ev)  # the first connection of a 5-tuple
        return out


RUST = [
    "tls/ja4_badcurveball.pcap",
    "tls/ja4_https3-301-get.pcap",
    "tls/ja4_tls-alpn-h2-ipv6.pcap",
    "tls/ja4_tls-handshake.pcapng",
    "tls/ja4_tls-non-ascii-alpn.pcapng",
    "tls/ja4_tls-sni.pcapng",
    "tls/ja4_tls12.pcap",
]


@pytest.mark.parametrize("rel", RUST)
def test_events_agree_with_foxio_rust(rel: str) -> None:
    path = need(rel)
    ref = yaml.safe_load(Path(str(path) + ".ja4-rust.snap.yaml").read_text().split("---", 2)[2])
    ports = frozenset(int(e["dst_port"]) for e in ref if "dst_port" in e)
    run = Run(path, [], policy="allow", tls_ports=ports)
    events = run.by_flow()
    checked = 0
    for entry in ref:
        if "ja4" not in entry and "ja4s" not in entry:
            continue
        key = (
            entry["src"],
            int(entry["src_port"]),
            entry["dst"],
            int(entry["dst_port"]),
            "quic" if entry["transport"] == "udp" else "tcp",
        )
        ev = events.get(key)
        assert ev is not None, f"{rel}: no event for {key}"
        t = ev.tls
        if "ja4" in entry:
            want = entry["ja4"]
            if rel in SPEC_OVER_REFERENCE:
                ref_a, ours_a = SPEC_OVER_REFERENCE[rel]
                want = want.replace(ref_a, ours_a)
            assert t.ja4 == want, key
        if "ja4s" in entry:
            assert t.ja4s == entry["ja4s"], key
        if "tls_server_name" in entry:
            assert t.server_name == entry["tls_server_name"], key
        checked += 1
    assert checked


def _tsv(path: Path) -> list[dict[str, str]]:
    lines = path.read_text("utf-8", errors="surrogateescape").split("\n")
    header = lines[1].split("\t")
    return [dict(zip(header, ln.split("\t"), strict=False)) for ln in lines[2:] if ln]


TSHARK = [
    "tls/ja4_badcurveball.pcap",
    "tls/ja4_https3-301-get.pcap",
    "tls/ja4_tls-alpn-h2-ipv6.pcap",
    "tls/ja4_tls-handshake.pcapng",
    "tls/arkime_tls-split-client-hello.pcap",
    "tls/arkime_openssl-tls1_2.pcap",
    "tls/arkime_curl-enabled-tls13.pcap",
    "tls/suricata_ja4-tls.pcap",
    "tls/zeek_tls-hrr.pcap",
]


@pytest.mark.parametrize("rel", TSHARK)
def test_ja3_sni_alpn_agree_with_tshark(rel: str) -> None:
    path = need(rel)
    ooo = Path(str(path) + ".expected-ooo.tsv")  # tshark with out-of-order reassembly
    rows = _tsv(ooo if ooo.exists() else Path(str(path) + ".expected.tsv"))
    ports = frozenset(
        int(r["tcp.dstport"]) for r in rows if r["tcp.dstport"] and r["tls.handshake.type"] == "1"
    )
    run = Run(path, [], policy="allow", tls_ports=ports)
    events = run.by_flow()
    checked = 0
    first: dict[tuple, dict] = {}
    for r in rows:
        if not r.get("tcp.stream"):
            continue
        src = r["ip.src"] or r["ipv6.src"]
        dst = r["ip.dst"] or r["ipv6.dst"]
        sp, dp = int(r["tcp.srcport"]), int(r["tcp.dstport"])
        types = r["tls.handshake.type"].split("|")
        if "1" in types:
            key = (src, sp, dst, dp, "tcp")
            c = first.setdefault(key, {})
            c.setdefault("ja3", r["tls.handshake.ja3"].split("|")[0])
            c.setdefault("sni", r["tls.handshake.extensions_server_name"].split("|")[0])
            c.setdefault("alpn", r["tls.handshake.extensions_alpn_str"])
        if "2" in types:
            key = (dst, dp, src, sp, "tcp")
            c = first.setdefault(key, {})
            ja3s = [v for v in r["tls.handshake.ja3s"].split("|") if v]
            if ja3s:
                c["ja3s"] = ja3s[-1]  # after a HelloRetryRequest, the real ServerHello
    for key, want in first.items():
        ev = events.get(key)
        assert ev is not None, f"{rel}: no event for {key}"
        t = ev.tls
        if "ja3" in want:
            assert t.ja3 == want["ja3"], key
            assert t.server_name == want["sni"], key
            alpn = want["alpn"].encode("utf-8", "surrogateescape")
            if alpn.isascii():
                assert "|".join(t.alpn) == want["alpn"], key
        if "ja3s" in want:
            assert t.ja3s == want["ja3s"], key
        checked += 1
    assert checked


def test_sni_filter_captures_exactly_its_connections() -> None:
    path = need("tls/ja4_tls-handshake.pcapng")
    every = Run(path, [], policy="allow")
    conns = {ev.session_id: ev.tls.server_name for ev in every.events}
    want = {sid for sid, name in conns.items() if name.endswith(".googleapis.com")}
    assert 1 < len(want) < len(conns)
    run = Run(path, [Filter(id="g", type="tls_sni", pattern="*.googleapis.com")])
    got = {m.session_id for _, m in run.forwarded}
    assert got == want
    assert all(m.filter_ids == ["g"] and m.tls.server_name for _, m in run.forwarded)
    # Both hellos of each captured TCP connection went out.
    kinds = {m.tls.handshake for _, m in run.forwarded}
    assert {"client_hello", "server_hello"} <= kinds
    captured = {ev.session_id for ev in run.events if ev.captured}
    assert captured == want
    # No ServerHello filter: the others were settled at their ClientHello.
    assert run.figures["connections_rejected"] >= len(conns) - len(want) - 20  # QUIC: no SH
    assert run.figures["buffered_packets"] == 0


def test_ja4s_filter_decides_at_the_server_hello_and_flushes_the_client_hello() -> None:
    path = need("tls/ja4_tls-handshake.pcapng")
    every = Run(path, [], policy="allow")
    ja4s = [ev.tls.ja4s for ev in every.events if ev.tls.ja4s and not ev.tls.quic]
    target = min(set(ja4s), key=ja4s.count)  # the rarest server stack
    want = {ev.session_id for ev in every.events if ev.tls.ja4s == target and not ev.tls.quic}
    run = Run(path, [Filter(id="s", type="tls_ja4s", pattern=target)])
    got = {m.session_id for _, m in run.forwarded}
    assert got == want
    for sid in want:
        kinds = [m.tls.handshake for _, m in run.forwarded if m.session_id == sid]
        assert kinds[0] == "client_hello" and "server_hello" in kinds  # held, then flushed
    frames = [n for n, _ in run.forwarded]
    assert frames == sorted(frames)  # capture order


def test_ja4_wildcard_and_quic_prefix() -> None:
    path = need("tls/ja4_tls-sni.pcapng")
    run = Run(path, [Filter(id="q", type="tls_ja4", pattern="q13*")])
    assert run.forwarded
    assert all(m.tls.quic and m.tls.ja4.startswith("q13") for _, m in run.forwarded)
    assert {ev.session_id for ev in run.events if ev.captured} == {
        m.session_id for _, m in run.forwarded
    }


def test_no_quic_leaves_udp_alone() -> None:
    path = need("tls/ja4_tls-sni.pcapng")
    run = Run(path, [], policy="allow", quic=False)
    assert run.events and not any(ev.tls.quic for ev in run.events)
    assert run.figures["connections_created"] == len(run.events)  # TCP connections only
    assert (
        run.figures["tls_messages"] == run.figures["client_hellos"] + run.figures["server_hellos"]
    )  # no QUIC datagram


def test_ip_address_and_bpf_filters() -> None:
    path = need("tls/ja4_tls-handshake.pcapng")
    run = Run(path, [Filter(id="b", type="bpf", pattern="tcp and host 142.251.16.94")])
    assert run.forwarded
    assert {ev.flow.dst_ip for ev in run.events if ev.captured} == {bytes([142, 251, 16, 94])}
    run = Run(path, [Filter(id="i", type="ip_address", pattern="142.251.16.94")])
    assert {ev.flow.dst_ip for ev in run.events if ev.captured} == {bytes([142, 251, 16, 94])}


TLS_CAPTURES = sorted(
    f"tls/{p.name}" for p in (CORPUS / "tls").glob("*.pcap*") if p.suffix in (".pcap", ".pcapng")
)


def _ja4plus_by_connection(path: Path) -> dict[tuple, set[str]]:
    """ja4plus (PyPI; its own TCP and QUIC reassembly, through scapy) over a capture:
    JA4 (``c``) and JA4S (``s``) by (side, client ip, port, server ip, port)."""
    import ipaddress

    pytest.importorskip("scapy")
    ja4plus = pytest.importorskip("ja4plus")
    from scapy.utils import PcapReader

    client, server = ja4plus.JA4Fingerprinter(), ja4plus.JA4SFingerprinter()
    for pkt in PcapReader(str(path)):
        client.process_packet(pkt)
        server.process_packet(pkt)
    out: dict[tuple, set[str]] = {}
    for side, fp in (("c", client), ("s", server)):
        for e in fp.get_fingerprints():
            src = (str(ipaddress.ip_address(e["src"])), e["srcport"])
            dst = (str(ipaddress.ip_address(e["dst"])), e["dstport"])
            key = (side, *src, *dst) if side == "c" else (side, *dst, *src)
            out.setdefault(key, set()).add(e["fingerprint"])
    return out


@pytest.mark.parametrize("rel", TLS_CAPTURES)
def test_mode_agrees_with_ja4plus_per_connection(rel: str) -> None:
    """Connection by connection, the mode's events carry the JA4 and JA4S that ja4plus
    (an implementation independent of lc and of FoxIO's tools) computes from the same
    capture: the same connections (TCP and QUIC), the same fingerprints, except the
    documented choices."""
    path = need(rel)
    theirs = _ja4plus_by_connection(path)
    ports = frozenset(k[4] for k in theirs)
    run = Run(path, [], policy="allow", tls_ports=ports)
    ours: dict[tuple, set[str]] = {}
    for (cip, cport, sip, sport, _), ev in run.by_flow().items():
        if ev.tls.ja4:
            ours.setdefault(("c", cip, cport, sip, sport), set()).add(ev.tls.ja4)
        if ev.tls.ja4s:
            ours.setdefault(("s", cip, cport, sip, sport), set()).add(ev.tls.ja4s)
    assert set(ours) == set(theirs)
    for key, fps in ours.items():
        (fp,) = fps
        if key[0] == "c" and rel in SPEC_OVER_REFERENCE:
            ref_a, ours_a = SPEC_OVER_REFERENCE[rel]
            fp = fp.replace(ours_a, ref_a)  # lc follows the specification's ALPN rule
        if key[0] == "s" and rel == "tls/arkime_tls13.pcap":
            # ja4plus reads a draft TLS 1.3 ServerHello as a final one (see
            # tests/common/test_tls_corpus.py); tshark and Arkime read it as lc does.
            continue
        assert fp in theirs[key], (key, fp, theirs[key])


# --- the framer: any cut, any tail -------------------------------------------------------
def _client_hello_record() -> bytes:
    path = need("tls/ja4_tls12.pcap")
    with open_capture(path) as r:
        data = bytes(next(iter(r.records()))[2])
    i = data.index(b"\x16\x03")
    return data[i:]


def test_a_client_hello_cut_at_every_offset_is_the_same_hello() -> None:
    rec = _client_hello_record()
    whole = TlsFramer().feed(rec)
    assert len(whole) == 1
    for cut in range(1, len(rec)):
        f = TlsFramer()
        a = f.feed(rec[:cut])
        b = f.feed(rec[cut:])
        assert a == [] and len(b) == 1, cut
        assert b[0][2] == whole[0][2] and b[0][:2] == (0, len(rec))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=0, max_value=600))
def test_random_tails_and_garbage_never_raise(tail: bytes, cut: int) -> None:
    rec = _client_hello_record()
    f = TlsFramer()
    data = rec[: min(cut, len(rec))] + tail
    out = f.feed(data[: len(data) // 2]) + f.feed(data[len(data) // 2 :])
    assert len(out) <= 1
    g = TlsFramer()
    assert g.feed(tail) == [] or all(hasattr(m[2], "ciphers") for m in g.feed(b""))
    rnd = random.Random(cut)
    h = TlsFramer()
    for i in range(0, len(data), max(1, rnd.randint(1, 50))):
        h.feed(data[i : i + 50])


# --- the record layer, by hypothesis --------------------------------------------------------
def _handshake_message() -> bytes:
    rec = _client_hello_record()
    return rec[5 : 5 + int.from_bytes(rec[3:5], "big")]


def _as_records(msg: bytes, cuts: list[int]) -> bytes:
    """``msg`` (one handshake message) over handshake records split at ``cuts``."""
    points = sorted({c for c in cuts if 0 < c < len(msg)})
    out = b""
    for a, b in zip([0, *points], [*points, len(msg)], strict=True):
        out += b"\x16\x03\x01" + (b - a).to_bytes(2, "big") + msg[a:b]
    return out


def _segments(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


_CUTS = st.lists(st.integers(min_value=1, max_value=600), max_size=12)


@settings(max_examples=200, deadline=None)
@given(_CUTS, _CUTS)
def test_a_hello_over_any_records_and_segments_is_the_same_hello(records, segments) -> None:
    """A ClientHello fragmented over handshake records anywhere, the records cut into
    TCP segments anywhere: the framer gives the one hello, from the stream's start to
    the end of the segment that completed it."""
    msg = _handshake_message()
    whole = TlsFramer().feed(b"\x16\x03\x01" + len(msg).to_bytes(2, "big") + msg)[0][2]
    stream = _as_records(msg, records)
    f = TlsFramer()
    got = []
    end = 0
    for seg in _segments(stream, segments):
        end += len(seg)
        for ev in f.feed(seg):
            got.append((ev, end))
    assert len(got) == 1
    (start, stop, hello), at = got[0]
    assert hello == whole and start == 0 and stop == at == len(stream)
    assert not f.counters


@settings(max_examples=40, deadline=None)
@given(_CUTS, _CUTS, st.booleans())
def test_the_mode_captures_the_connection_whatever_the_record_layer(records, segments, match):
    """Through the mode on TCP frames: the fragmented, segmented hello is fingerprinted
    as the whole one and its connection captured whole (SYN to FIN) when a tls_ja4 filter
    names it, not at all when the filter names another stack."""
    from lc.common.fingerprint import ja4
    from lc.common.tls import parse_client_hello
    from tests.hunter.conn_toy import Conn, chunk
    from tests.hunter.conn_toy import records as forwarded

    msg = _handshake_message()
    fp = ja4(parse_client_hello(msg[4:]))
    mode = tls_mode(ModeContext([("eth0", 1)], policy="deny", events="all"), TlsConfig())
    pattern = fp if match else "t13d0000h2_000000000000_000000000000"
    mode.apply(compile_filters([Filter(id="f", type="tls_ja4", pattern=pattern)], "h",
                               TLS_FILTER_TYPES))  # fmt: skip
    c = Conn(1, port=443)
    frames = c.handshake()
    for seg in _segments(_as_records(msg, records), segments):
        frames += [c.client(seg), c.server_ack()]
    frames += c.close()
    t0 = 1_700_000_000 * 10**9
    got, events = [], []
    for k, fr in enumerate(frames):
        fwd = mode.process(chunk([fr], t0 + k * 1000))
        got += forwarded(fwd)
        events += fwd.events
    events += mode.finish().events
    assert got == (frames if match else [])
    (ev,) = events
    assert ev.captured is match and ev.tls.ja4 == fp
    assert ev.tls.server_name == "contile.services.mozilla.com"


def test_new_filters_judge_hellos_afresh() -> None:
    """The mode keeps each hello filter verdict per (SNI, JA3, JA4) for speed; a new
    filter set must not inherit them."""
    path = need("tls/ja4_tls-handshake.pcapng")
    mode = tls_mode(ModeContext([], policy="deny"), TlsConfig())

    def replay(pattern: str) -> set[str]:
        mode.apply(compile_filters([Filter(id="g", type="tls_sni", pattern=pattern)], "h"))
        src = FileSource(str(path), None)
        mode.interfaces[:] = src.interfaces
        got = set()
        for fwd in [*iter(lambda: src.read(64), None)]:
            got |= {m.session_id for m in mode.process(fwd).meta.values()}
        got |= {m.session_id for m in mode.finish().meta.values()}
        return got

    assert replay("*.googleapis.com")
    assert replay("nomatch.invalid") == set()
    assert replay("*.googleapis.com")


def test_a_bpf_filter_that_does_not_compile_for_a_later_link_type_never_raises(tmp_path):
    # The filter set is applied before the file's interfaces are known (compiled for
    # Ethernet); a raw-IP capture then asked the mode to compile `ether host` for link
    # type 101 on the hot path, and the ValidationError escaped process().
    import struct

    src = need("tls/arkime_tls13.pcap")
    raw = tmp_path / "raw.pcap"
    with open_capture(src) as r, open(raw, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))
        for ts, _, data, _ in r.records():
            ip = bytes(data)[14:]
            sec, ns = divmod(ts, 1_000_000_000)
            out.write(struct.pack("<IIII", sec, ns // 1000, len(ip), len(ip)) + ip)
    filters = [
        Filter(id="e", type="bpf", pattern="ether host 00:00:00:00:00:01"),
        Filter(id="s", type="tls_sni", pattern="blog.cloudflare.com"),
    ]
    run = Run(raw, filters)
    captured = [ev for ev in run.events if ev.captured]
    assert len(captured) == 1 and list(captured[0].filter_ids) == ["s"]
    assert run.forwarded


def test_the_summary_line_counts_framing_errors_as_malformed() -> None:
    # Garbage on port 443 is the TLS framer's malformed count; the summary said
    # "0 TLS messages (0 malformed)" beside tcp_framer_malformed 1.
    from tests.hunter.conn_toy import Conn, chunk

    mode = tls_mode(ModeContext([("eth0", 1)], policy="deny"), TlsConfig())
    mode.apply(compile_filters([Filter(id="f", type="tls_sni", pattern="*.example")], "h",
                               TLS_FILTER_TYPES))  # fmt: skip
    c = Conn(1, port=443)
    frames = [*c.handshake(), c.client(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), *c.close()]
    for k, fr in enumerate(frames):
        mode.process(chunk([fr], 1_700_000_000 * 10**9 + k * 1000))
    mode.finish()
    got = mode.counters()
    assert got.figures["tcp_framer_malformed"] >= 1
    assert f"({got.figures['tcp_framer_malformed']} malformed)" in got.summary, got.summary
