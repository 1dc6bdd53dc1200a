"""lc.common.tls, .quic and .fingerprint against independent oracles, on the public corpus.

Every TLS capture in ``../shared/corpus/`` (tls/, and the TLS in mixed/, smtp/, imap/,
pop3/) is read with :func:`lc.common.decode.decode_packet`; TCP payloads go through
:class:`lc.common.tcpstream.TcpReassembler` into one :class:`TlsStream` per direction
(started at the first bytes that look like TLS, so STARTTLS works), UDP port 443
datagrams into one :class:`QuicHandshake` per connection. What comes out is compared
with:

* tshark 4.0 (``.expected*.tsv``): the frames that complete a hello (both ways), and
  per frame: ports, handshake types, legacy version, supported_versions, SNI, ALPN,
  cipher suites, extension types, supported groups, signature algorithms, JA3 and
  JA3S (string and MD5). This covers the QUIC hellos too (tshark decrypts Initials).
* FoxIO's reference tools: the Python JSON (JA4, JA4_r, JA4_o, JA4_ro, JA4S, JA4S_r
  per TCP flow) and the Rust snapshot (JA4 and JA4S of the first hellos per TCP and
  QUIC flow);
* Arkime (JA3, JA3 string, JA3S, JA3S string, JA4, JA4_r per session);
* Suricata's test expectations (``tls.ja4``, ``quic.ja4``);
* ``ja4plus`` from PyPI (a separate implementation), when installed, on every hello.

Where lc departs from an oracle on purpose, the exception is named next to the
comparison it affects, and the test checks that the exception still applies.
"""

from __future__ import annotations

import functools
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from lc.common import fingerprint as fp
from lc.common.decode import IPPROTO_TCP, IPPROTO_UDP, decode_packet
from lc.common.pcapfile import open_capture
from lc.common.quic import QuicHandshake, looks_like_initial
from lc.common.tcpstream import TcpReassembler
from lc.common.tls import ClientHello, HandshakeMessage, ServerHello, TlsStream, looks_like_tls

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
IN_CI = os.environ.get("CI", "").lower() == "true"

# (capture, tshark oracle). A fixed list, so that a missing file fails in CI instead of
# silently dropping out.
TSHARK_FILES = [
    ("tls/arkime_badcurveball-uppercase-alpn.pcap", "expected.tsv"),
    ("tls/arkime_curl-enabled-tls13.pcap", "expected.tsv"),
    ("tls/arkime_openssl-tls1_2.pcap", "expected.tsv"),
    ("tls/arkime_tls-split-client-hello.pcap", "expected.tsv"),
    ("tls/arkime_tls13.pcap", "expected.tsv"),
    ("tls/ja4_badcurveball.pcap", "expected.tsv"),
    ("tls/ja4_https3-301-get.pcap", "expected.tsv"),
    ("tls/ja4_tls-alpn-h2-ipv6.pcap", "expected.tsv"),
    ("tls/ja4_tls-handshake.pcapng", "expected.tsv"),
    ("tls/ja4_tls-non-ascii-alpn.pcapng", "expected.tsv"),
    ("tls/ja4_tls-sni.pcapng", "expected.tsv"),
    ("tls/ja4_tls12.pcap", "expected.tsv"),
    ("tls/suricata_ja4-tls-quic.pcap", "expected.tsv"),
    ("tls/suricata_ja4-tls.pcap", "expected.tsv"),
    ("tls/zeek_chrome-1250-tls-x25519-kyber.pcap", "expected.tsv"),
    # lc's TCP reassembly holds out-of-order segments, as tshark does with
    # tcp.reassemble_out_of_order; that oracle finds the real ServerHello that arrives
    # after a capture gap (see MANIFEST.md and test_hrr_default_oracle_is_a_prefix).
    ("tls/zeek_tls-hrr.pcap", "expected-ooo.tsv"),
    ("mixed/ja4_latest.pcapng", "expected-tls.tsv"),
    ("smtp/arkime_smtp-starttls.pcap", "expected-tls.tsv"),
    ("imap/zeek_imap-starttls.pcap", "expected-tls.tsv"),
    ("pop3/zeek_pop3-starttls.pcap", "expected-tls.tsv"),
]
FOXIO_FILES = [
    "tls/ja4_badcurveball.pcap",
    "tls/ja4_https3-301-get.pcap",
    "tls/ja4_tls-alpn-h2-ipv6.pcap",
    "tls/ja4_tls-handshake.pcapng",
    "tls/ja4_tls-non-ascii-alpn.pcapng",
    "tls/ja4_tls-sni.pcapng",
    "tls/ja4_tls12.pcap",
    "mixed/ja4_latest.pcapng",
]
ARKIME_FILES = [
    "tls/arkime_badcurveball-uppercase-alpn.pcap",
    "tls/arkime_curl-enabled-tls13.pcap",
    "tls/arkime_openssl-tls1_2.pcap",
    "tls/arkime_tls-split-client-hello.pcap",
    "tls/arkime_tls13.pcap",
    "tls/ja4_https3-301-get.pcap",
    "tls/ja4_tls-alpn-h2-ipv6.pcap",
    "smtp/arkime_smtp-starttls.pcap",
]
SURICATA_FILES = ["tls/suricata_ja4-tls.pcap", "tls/suricata_ja4-tls-quic.pcap"]

# The one place where lc follows the JA4 specification rather than FoxIO's published
# outputs (see lc.common.fingerprint): the first ALPN value of this capture is the two
# bytes ba ad; the tools print "99", the specification's hex rule gives "bd".
SPEC_OVER_REFERENCE = {"tls/ja4_tls-non-ascii-alpn.pcapng": ("t13d151699", "t13d1516bd")}


def need(rel: str) -> Path:
    path = CORPUS / rel
    if not path.is_file():
        reason = f"capture corpus file not found: {path}"
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: the corpus is required)")
        pytest.skip(reason)
    return path


@dataclass
class Seen:
    """One hello, with the frame tshark reports it at (see ``run_capture``)."""

    frame: int
    quic: bool
    client: tuple[str, int]
    server: tuple[str, int]
    msg: ClientHello | ServerHello


@dataclass
class Run:
    hellos: list[Seen]
    other_types: dict[int, list[int]]  # frame -> other handshake message types (TCP)
    errors: list[str]


class _Direction:
    """One TCP direction from its first TLS byte: the stream, and what the test needs
    to say which frame completed each record (tshark reports a handshake message at
    the frame that completes its record; lc emits it as soon as its bytes are in)."""

    def __init__(self) -> None:
        self.stream = TlsStream()
        self.data = bytearray()
        self.chunk_ends: list[tuple[int, int]] = []  # (stream offset after, frame)
        self.events: list[tuple[int, object]] = []  # (offset of the event's last byte + 1, ev)

    def feed(self, frame: int, chunk: bytes) -> None:
        # Byte by byte: every split point of real traffic, and the exact end of each event.
        base = len(self.data)
        self.data += chunk
        self.chunk_ends.append((len(self.data), frame))
        feed = self.stream.feed
        for i in range(len(chunk)):
            for ev in feed(chunk[i : i + 1]):
                self.events.append((base + i + 1, ev))

    def frame_of(self, end: int) -> int:
        """The frame that completed the record holding stream offset ``end - 1``."""
        off = 0
        data = self.data
        while off + 5 <= len(data):
            rec_end = off + 5 + int.from_bytes(data[off + 3 : off + 5], "big")
            if rec_end >= end:
                break
            off = rec_end
        else:
            raise AssertionError("an event beyond the records")
        for chunk_end, frame in self.chunk_ends:
            if chunk_end >= rec_end:
                return frame
        raise AssertionError("a record that never completed")


@functools.cache
def run_capture(rel: str) -> Run:
    """Every hello of a capture, as lc's parsers see it (cached per file)."""
    path = need(rel)
    reasm = TcpReassembler()
    directions: dict[tuple, _Direction] = {}
    quic: dict[tuple, QuicHandshake] = {}
    found: list[tuple[int, Seen]] = []  # (order key, hello)
    others: dict[int, list[int]] = defaultdict(list)
    errors: list[str] = []
    with open_capture(path) as cap:
        for frame, (ts, ifc, data, _orig) in enumerate(cap, 1):
            d = decode_packet(cap.interfaces[ifc].linktype, data)
            if d.ip_version == 0 or d.is_fragment:
                continue
            src = (d.src_text, d.sport)
            dst = (d.dst_text, d.dport)
            payload = data[d.payload_offset : d.payload_offset + d.payload_len]
            if d.proto == IPPROTO_TCP:
                key = (src, dst)
                delivery = reasm.feed(ts, key, d.tcp_seq, d.tcp_flags, payload)
                for _off, chunk in delivery.chunks:
                    direction = directions.get(key)
                    if direction is None:
                        if not looks_like_tls(chunk):
                            continue  # STARTTLS: the plaintext part
                        direction = directions[key] = _Direction()
                    try:
                        direction.feed(frame, chunk)
                    except ValueError as exc:
                        errors.append(f"frame {frame}: {exc}")
            elif d.proto == IPPROTO_UDP and 443 in (d.sport, d.dport):
                from_client = d.dport == 443
                key = (src, dst) if from_client else (dst, src)
                q = quic.get(key)
                if q is None:
                    if not from_client or not looks_like_initial(payload):
                        continue
                    q = quic[key] = QuicHandshake()
                try:
                    hellos = q.feed(payload, from_client)
                except ValueError as exc:
                    errors.append(f"frame {frame}: {exc}")
                    continue
                for h in hellos:
                    found.append((frame, Seen(frame, True, key[0], key[1], h)))
    for (src, dst), direction in directions.items():
        for end, ev in direction.events:
            frame = direction.frame_of(end)
            if isinstance(ev, ClientHello):
                found.append((frame, Seen(frame, False, src, dst, ev)))
            elif isinstance(ev, ServerHello):
                found.append((frame, Seen(frame, False, dst, src, ev)))
            elif isinstance(ev, HandshakeMessage):
                others[frame].append(ev.msg_type)
    found.sort(key=lambda item: item[0])  # stable: a frame's hellos keep their order
    return Run([s for _, s in found], dict(others), errors)


def read_tsv(path: Path) -> list[dict[str, str]]:
    lines = path.read_text("utf-8", errors="surrogateescape").split("\n")
    assert lines[0].startswith("# oracle="), path
    header = lines[1].split("\t")
    return [dict(zip(header, ln.split("\t"), strict=True)) for ln in lines[2:] if ln]


def _hexes(values) -> list[str]:
    return [f"0x{v:04x}" for v in values]


def our_row(seen: list[Seen]) -> dict[str, str]:
    """tshark's columns for the hellos lc completed in one frame."""
    cols: dict[str, list[str]] = defaultdict(list)
    for s in seen:
        m = s.msg
        is_ch = isinstance(m, ClientHello)
        sender = s.client if is_ch else s.server
        receiver = s.server if is_ch else s.client
        cols["sport"].append(str(sender[1]))
        cols["dport"].append(str(receiver[1]))
        cols["tls.handshake.type"].append("1" if is_ch else "2")
        cols["tls.handshake.version"].append(f"0x{m.legacy_version:04x}")
        cols["tls.handshake.extension.type"] += [str(t) for t in m.extension_types]
        if is_ch:
            cols["tls.handshake.extensions.supported_version"] += _hexes(m.supported_versions)
            if m.server_name:
                cols["tls.handshake.extensions_server_name"].append(m.server_name)
            cols["tls.handshake.extensions_alpn_str"] += [
                a.decode("utf-8", "replace") for a in m.alpn
            ]
            cols["tls.handshake.ciphersuite"] += _hexes(m.ciphers)
            cols["tls.handshake.extensions_supported_group"] += _hexes(m.supported_groups)
            # tshark lists the algorithms of signature_algorithms (13) and also of
            # delegated_credentials (34) and signature_algorithms_cert (50), in wire
            # order; JA4 reads only the first (m.signature_algorithms).
            for etype, edata in m.extensions:
                if etype in (13, 34, 50):
                    n = int.from_bytes(edata[:2], "big")
                    cols["tls.handshake.sig_hash_alg"] += _hexes(
                        int.from_bytes(edata[i : i + 2], "big") for i in range(2, 2 + n, 2)
                    )
                if etype == 13:
                    assert edata[2:] == b"".join(
                        v.to_bytes(2, "big") for v in m.signature_algorithms
                    )
            cols["tls.handshake.ja3"].append(fp.ja3(m))
            cols["tls.handshake.ja3_full"].append(fp.ja3_string(m))
        else:
            if m.selected_version is not None:
                cols["tls.handshake.extensions.supported_version"].append(
                    f"0x{m.selected_version:04x}"
                )
            if m.alpn is not None:
                cols["tls.handshake.extensions_alpn_str"].append(m.alpn.decode("utf-8", "replace"))
            cols["tls.handshake.ciphersuite"].append(f"0x{m.cipher:04x}")
            cols["tls.handshake.ja3s"].append(fp.ja3s(m))
            cols["tls.handshake.ja3s_full"].append(fp.ja3s_string(m))
    return {k: "|".join(v) for k, v in cols.items()}


COMPARED = [
    "tls.handshake.version",
    "tls.handshake.extensions.supported_version",
    "tls.handshake.extensions_server_name",
    "tls.handshake.extensions_alpn_str",
    "tls.handshake.ciphersuite",
    "tls.handshake.extension.type",
    "tls.handshake.extensions_supported_group",
    "tls.handshake.ja3",
    "tls.handshake.ja3_full",
    "tls.handshake.ja3s",
    "tls.handshake.ja3s_full",
]


@pytest.mark.parametrize(("capture", "oracle"), TSHARK_FILES, ids=[f for f, _ in TSHARK_FILES])
def test_hellos_match_tshark(capture: str, oracle: str) -> None:
    run = run_capture(capture)
    assert not run.errors
    rows = {int(r["frame.number"]): r for r in read_tsv(need(f"{capture}.{oracle}"))}
    by_frame: dict[int, list[Seen]] = defaultdict(list)
    for s in run.hellos:
        by_frame[s.frame].append(s)
    assert sorted(by_frame) == sorted(rows)
    assert rows, "an oracle without rows checks nothing"
    for frame, row in rows.items():
        ours = our_row(by_frame[frame])
        where = f"{capture} frame {frame}"
        tcp = bool(row["tcp.srcport"])
        assert ours["sport"] == (row["tcp.srcport"] if tcp else row["udp.srcport"]), where
        assert ours["dport"] == (row["tcp.dstport"] if tcp else row["udp.dstport"]), where
        assert all(s.quic != tcp for s in by_frame[frame]), where
        types = [t for t in row["tls.handshake.type"].split("|") if t in ("1", "2")]
        assert ours["tls.handshake.type"] == "|".join(types), where
        for col in COMPARED:
            assert ours.get(col, "") == row[col], f"{where}: {col}"
        # tshark's sig_hash_alg also holds the algorithms of other messages in the
        # frame (ServerKeyExchange, CertificateRequest): compare where only hellos are.
        if frame not in run.other_types:
            assert ours.get("tls.handshake.sig_hash_alg", "") == row["tls.handshake.sig_hash_alg"]


def test_hrr_default_oracle_is_a_prefix() -> None:
    """With default preferences tshark misses the out-of-order ServerHello; lc finds it."""
    run = run_capture("tls/zeek_tls-hrr.pcap")
    default = read_tsv(need("tls/zeek_tls-hrr.pcap.expected.tsv"))
    frames = [s.frame for s in run.hellos]
    assert frames[: len(default)] == [int(r["frame.number"]) for r in default]
    assert len(frames) == len(default) + 1
    hrr = run.hellos[1].msg
    assert isinstance(hrr, ServerHello) and hrr.is_hrr
    assert not run.hellos[3].msg.is_hrr


def _flow_hellos(run: Run, client: tuple[str, int], server: tuple[str, int], quic: bool):
    chs = [
        s.msg
        for s in run.hellos
        if s.quic == quic and s.client == client and s.server == server
        if isinstance(s.msg, ClientHello)
    ]
    shs = [
        s.msg
        for s in run.hellos
        if s.quic == quic and s.client == client and s.server == server
        if isinstance(s.msg, ServerHello)
    ]
    return chs, shs


def _reference(capture: str, value: str) -> str:
    """A reference JA4 value with lc's documented departure applied (checked to apply)."""
    swap = SPEC_OVER_REFERENCE.get(capture)
    if swap is None:
        return value
    assert value.startswith(swap[0]), f"{capture}: the known difference no longer applies"
    return swap[1] + value[len(swap[0]) :]


@pytest.mark.parametrize("capture", FOXIO_FILES)
def test_ja4_matches_foxio_python(capture: str) -> None:
    run = run_capture(capture)
    entries = json.loads(need(f"{capture}.ja4-python.json").read_text())
    checked = 0
    for e in entries:
        chs, shs = _flow_hellos(
            run, (e["src"], int(e["srcport"])), (e["dst"], int(e["dstport"])), quic=False
        )
        n = sum(1 for k in e if k.startswith("JA4.") and k[4:].isdigit())
        if n:
            assert len(chs) == n, e
            if "domain" in e:
                assert chs[0].server_name == e["domain"]
        for i, ch in enumerate(chs[:n], 1):
            assert fp.ja4(ch) == _reference(capture, e[f"JA4.{i}"])
            assert fp.ja4_r(ch) == _reference(capture, e[f"JA4_r.{i}"])
            assert fp.ja4_o(ch) == _reference(capture, e[f"JA4_o.{i}"])
            assert fp.ja4_ro(ch) == _reference(capture, e[f"JA4_ro.{i}"])
            checked += 1
        if "JA4S" in e:
            assert fp.ja4s(shs[0]) == e["JA4S"]
            assert fp.ja4s_r(shs[0]) == e["JA4S_r"]
            checked += 1
    assert checked


@pytest.mark.parametrize("capture", FOXIO_FILES)
def test_ja4_matches_foxio_rust(capture: str) -> None:
    run = run_capture(capture)
    text = need(f"{capture}.ja4-rust.snap.yaml").read_text()
    entries = yaml.safe_load(text.split("\n---\n", 1)[1])
    checked = 0
    for e in entries:
        quic = e["transport"] == "udp"
        chs, shs = _flow_hellos(run, (e["src"], e["src_port"]), (e["dst"], e["dst_port"]), quic)
        if "ja4" in e:
            assert fp.ja4(chs[0], quic) == _reference(capture, e["ja4"])
            assert chs[0].server_name == e.get("tls_server_name", None)
            checked += 1
        if "ja4s" in e:
            assert fp.ja4s(shs[0], quic) == e["ja4s"]
            checked += 1
    assert checked


def test_rust_snapshot_quic_flows_are_all_found() -> None:
    """Each of the 20 QUIC connections of tls-handshake has both hellos decrypted."""
    run = run_capture("tls/ja4_tls-handshake.pcapng")
    quic = [s for s in run.hellos if s.quic]
    assert sum(isinstance(s.msg, ClientHello) for s in quic) == 20
    assert sum(isinstance(s.msg, ServerHello) for s in quic) == 20


@pytest.mark.parametrize("capture", ARKIME_FILES)
def test_fingerprints_match_arkime(capture: str) -> None:
    run = run_capture(capture)
    sessions = json.loads(need(f"{capture}.arkime.json").read_text())["sessions3"]
    checked = 0
    for s in sessions:
        body = s["body"]
        tls = body.get("tls")
        if not tls:
            continue
        client = (body["source"]["ip"], body["source"]["port"])
        server = (body["destination"]["ip"], body["destination"]["port"])
        chs, shs = _flow_hellos(run, client, server, quic=False)
        assert sorted({fp.ja3(c) for c in chs}) == sorted(tls["ja3"])
        assert sorted({fp.ja3_string(c) for c in chs}) == sorted(tls["ja3string"])
        assert sorted({fp.ja4(c) for c in chs}) == sorted(tls["ja4"])
        assert sorted({fp.ja4_r(c) for c in chs}) == sorted(tls["ja4_r"])
        assert sorted({fp.ja3s(h) for h in shs}) == sorted(tls["ja3s"])
        assert sorted({fp.ja3s_string(h) for h in shs}) == sorted(tls["ja3sstring"])
        checked += 1
    assert checked


@pytest.mark.parametrize("capture", SURICATA_FILES)
def test_ja4_matches_suricata(capture: str) -> None:
    run = run_capture(capture)
    spec = yaml.safe_load(need(f"{capture}.suricata-verify.test.yaml").read_text())
    ours = {
        "tls.ja4": {
            fp.ja4(s.msg) for s in run.hellos if not s.quic and s.msg.__class__ is ClientHello
        },
        "quic.ja4": {
            fp.ja4(s.msg, True) for s in run.hellos if s.quic and isinstance(s.msg, ClientHello)
        },
    }
    checked = 0
    for check in spec["checks"]:
        for field, value in check.get("filter", {}).get("match", {}).items():
            if field in ours:
                assert value in ours[field], field
                checked += 1
    assert checked


def test_uppercase_alpn_keeps_its_case() -> None:
    """Arkime's one-byte edit of badcurveball (h2 -> H2) changes JA4_a and nothing else."""
    a = next(s.msg for s in run_capture("tls/ja4_badcurveball.pcap").hellos)
    b = next(s.msg for s in run_capture("tls/arkime_badcurveball-uppercase-alpn.pcap").hellos)
    assert fp.ja4(a) == "t13d1615h2_46e7e9700bed_45f260be83e2"
    assert fp.ja4(b) == "t13d1615H2_46e7e9700bed_45f260be83e2"


ALL_FILES = sorted({f for f, _ in TSHARK_FILES})


@pytest.mark.parametrize("capture", ALL_FILES)
def test_ja4plus_cross_check(capture: str) -> None:
    """ja4plus (PyPI), an implementation independent of FoxIO's and lc's, agrees on
    every hello of the corpus, except the documented ALPN rule."""
    tls_utils = pytest.importorskip("ja4plus.utils.tls_utils")
    ja4_mod = pytest.importorskip("ja4plus.fingerprinters.ja4")
    ja4s_mod = pytest.importorskip("ja4plus.fingerprinters.ja4s")
    run = run_capture(capture)
    checked = 0
    for s in run.hellos:
        m = s.msg
        body = m.raw
        kind = 1 if isinstance(m, ClientHello) else 2
        msg = bytes((kind,)) + len(body).to_bytes(3, "big") + body
        record = b"\x16\x03\x01" + len(msg).to_bytes(2, "big") + msg
        info = tls_utils.parse_tls_handshake(record)
        assert info is not None
        if kind == 2 and 0x7F00 <= m.legacy_version <= 0x7F15:
            # ja4plus reads a draft TLS 1.3 ServerHello as a final one (with a session
            # id); tshark and Arkime read it as lc does (cipher 0x1301, extension 40).
            assert capture == "tls/arkime_tls13.pcap"
            continue
        if s.quic:
            info["is_quic"] = True
        if kind == 1:
            theirs = ja4_mod.generate_ja4(info)
            ours = fp.ja4(m, s.quic)
            if capture in SPEC_OVER_REFERENCE and theirs != ours:
                theirs = _reference(capture, theirs)
        else:
            theirs = ja4s_mod._generate_ja4s_from_tls_info(info)
            ours = fp.ja4s(m, s.quic)
        assert ours == theirs, f"{capture} frame {s.frame}"
        checked += 1
    assert checked
