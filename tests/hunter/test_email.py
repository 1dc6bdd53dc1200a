"""Email mode (lc.hunter.modes.email) on the public captures, against tshark, and its rules.

Oracles: tshark's per-frame ``smtp``/``imap``/``pop``/``imf`` fields in
``../shared/corpus/{smtp,imap,pop3}/*.expected.tsv`` (see its MANIFEST.md), and tshark
run here for the ``tcp.stream`` of every frame.
"""

from __future__ import annotations

import email.policy
import json
import subprocess
from email.utils import getaddresses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lc.common.errors import ValidationError
from lc.common.filters import Filter, compile_filters
from lc.common.mailmsg import split_headers
from lc.hunter.capture import Chunk
from lc.hunter.modes.base import ModeContext, parse_options
from lc.hunter.modes.email import EMAIL_FILTER_TYPES, EmailConfig, email_mode
from tests.conftest import need
from tests.hunter.test_voip import CORPUS, need_corpus, run_file, tsv


class EmailMode:
    """The mode as run_file drives it; events kept in ``events``."""

    def __init__(self, filters: list, policy: str = "deny", events: str = "captured", **cfg):
        self.interfaces: list = []
        self.mode = email_mode(
            ModeContext(self.interfaces, policy=policy, events=events), EmailConfig(**cfg)
        )
        self.mode.apply(compile_filters(filters, "h", EMAIL_FILTER_TYPES))
        self.events: list = []

    def process(self, chunk):
        fwd = self.mode.process(chunk)
        self.events += fwd.events
        return fwd.chunk, fwd.meta

    def finish(self):
        self.events += self.mode.finish().events


def run(name: str, filters: list, **kw) -> tuple[EmailMode, list]:
    need_corpus()
    m = EmailMode(filters, **kw)
    return m, run_file(CORPUS / name, m, m.interfaces)


def streams(name: str) -> dict[int, int]:
    """tcp.stream by frame number (tshark) of every frame of a TCP connection: handshakes,
    pure ACKs, retransmitted and out-of-order copies, and ICMP errors quoting one of its
    segments (smtp/zeek_smtp.pcap frames 26, 28-30), which tshark puts in its stream."""
    need("tshark")
    r = subprocess.run(
        ["tshark", "-n", "-r", str(CORPUS / name), "-T", "fields", "-e", "frame.number",
         "-e", "tcp.stream"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = {}
    for line in r.stdout.splitlines():
        num, stream = [*line.split("\t"), ""][:2]
        if stream:
            out[int(num)] = int(stream)
    return out


HEADER_FACTORY = email.policy.default.header_factory
CASES = [
    "smtp/zeek_smtp.pcap",
    "smtp/zeek_smtp-multi-addr.pcap",
    "smtp/arkime_smtp-subject-8859-b.pcap",
    "smtp/suricata_smtp-attachment-md5.pcap",
    "imap/arkime_imap.pcap",
    "pop3/zeek_pop3.pcap",
    "pop3/suricata_pop3-02-bug-7709.pcap",
    "pop3/suricata_pop3.pcap",
]


def oracle_messages(name: str) -> tuple[set[str], dict[str, int]]:
    """tshark's Message-IDs (without <>) and the tcp.stream each was seen in."""
    ids: set[str] = set()
    where: dict[str, int] = {}
    for r in tsv(CORPUS / (name + ".expected.tsv")):
        for mid in r.get("imf.message_id", "").split("|"):
            mid = mid.strip().strip("<>")
            if mid:
                ids.add(mid)
                where[mid] = int(r["tcp.stream"])
    return ids, where


def _unfold(cell: str) -> str:
    """A tshark imf cell as the header's unfolded value: tshark prints line breaks and
    tabs as the text "\\r\\n" and "\\t"; unfolding removes the line breaks (RFC 5322
    2.2.3)."""
    return cell.replace("\\r\\n", "").replace("\\t", "\t")


def _addresses(cell: str) -> set[str]:
    """The addresses of tshark's imf.from/imf.to cells (``|`` between occurrences)."""
    return {a.lower() for _, a in getaddresses(_unfold(cell).split("|")) if a}


@pytest.mark.parametrize("name", CASES)
def test_every_message_tshark_sees_is_one_event_with_its_headers(name):
    """Per message (by Message-ID): one event, in the tcp.stream tshark puts it, with
    the Subject as a mail reader decodes tshark's raw imf.subject, and the From and To
    addresses of tshark's imf.from/imf.to."""
    m, fwd = run(name, [], policy="allow", capture_body=True)
    ids, where = oracle_messages(name)
    assert ids, f"{name}: no message in the oracle"
    events = {e.email.message_id: e for e in m.events if e.email.message_id}
    assert set(events) == ids
    assert fwd and all(e.captured for e in m.events)
    by_frame = streams(name)
    frames_of = {}
    for n, meta in fwd:
        frames_of.setdefault(meta.session_id, set()).add(by_frame.get(n))
    checked = 0
    for r in tsv(CORPUS / (name + ".expected.tsv")):
        mids = [x.strip().strip("<>") for x in r.get("imf.message_id", "").split("|") if x]
        if len(mids) != 1:
            continue
        e = events[mids[0]].email
        assert frames_of[events[mids[0]].session_id] == {where[mids[0]]}
        # (tshark may show a message's header fields over two frames: what it shows
        # in the frame of the Message-ID is compared.)
        if r.get("imf.subject"):
            raw = _unfold(r["imf.subject"])
            assert e.subject == str(HEADER_FACTORY("subject", raw)).strip()
            checked += 1
        if r.get("imf.from"):
            assert {a.lower() for a in e.from_address} == _addresses(r["imf.from"])
            checked += 1
        if r.get("imf.to"):
            assert {a.lower() for a in e.to_address} == _addresses(r["imf.to"]), (name, r)
            checked += 1
    assert checked


@pytest.mark.parametrize("name", CASES)
def test_an_address_filter_selects_exactly_the_stream_of_its_message(name):
    _, where = oracle_messages(name)
    probe, _ = run(name, [], policy="allow")
    # The first message with a From: filter on that address.
    ev = next(e for e in probe.events if e.email.from_address and e.email.message_id in where)
    addr = ev.email.from_address[0]
    wanted = {
        where[e.email.message_id]
        for e in probe.events
        if addr in e.email.from_address and e.email.message_id in where
    }
    m, fwd = run(name, [Filter("a", "email_address", addr)])
    by_frame = streams(name)
    got_streams = {by_frame[n] for n, _ in fwd if n in by_frame}
    assert got_streams == wanted
    # Every frame of those streams, nothing else.
    want_frames = {n for n, s in by_frame.items() if s in wanted}
    got_frames = [n for n, _ in fwd]
    assert got_frames == sorted(want_frames), sorted(want_frames ^ set(got_frames))[:10]
    assert all(meta.filter_ids == ["a"] for _, meta in fwd)
    assert all(e.filter_ids == ["a"] and e.captured for e in m.events)


def test_subject_filters_match_the_decoded_subject_in_any_charset():
    # =?iso-8859-1?B?dGVzdCDlIOkg7iD4IPw=?= and =?GB2312?B?...?= as a mail reader shows them.
    m, fwd = run("smtp/arkime_smtp-subject-8859-b.pcap", [Filter("s", "email_subject", "test å*")])
    assert fwd and [e.email.subject for e in m.events] == ["test å é î ø ü"]
    m, fwd = run("pop3/suricata_pop3-02-bug-7709.pcap", [Filter("s", "email_subject", "*测试1下")])
    assert fwd and [e.email.subject for e in m.events] == ["回复: 回复: 测试1下"]
    m, fwd = run("smtp/arkime_smtp-subject-8859-b.pcap", [Filter("s", "email_subject", "test")])
    assert not fwd and not m.events


def test_mailbox_command_and_keyword_filters():
    m, fwd = run("imap/arkime_imap.pcap", [Filter("mb", "email_mailbox", "inbox")])
    assert fwd and m.events and all(e.email.mailbox.lower() == "inbox" for e in m.events)
    m, fwd = run("imap/arkime_imap.pcap", [Filter("mb", "email_mailbox", "Sent")])
    assert not fwd
    m, fwd = run("pop3/zeek_pop3.pcap", [Filter("c", "email_command", "RETR")])
    assert len(m.events) == 3 and {e.email.command for e in m.events} == {"RETR"}
    m, fwd = run("pop3/zeek_pop3.pcap", [Filter("c", "email_command", "APPEND")])
    assert not fwd
    # A keyword is looked for in the decoded text body (here quoted in the reply's body).
    m, fwd = run("smtp/zeek_smtp.pcap", [Filter("k", "keyword", "bro smtp cc header")])
    assert fwd and [e.email.subject for e in m.events] == ["Re: Bro SMTP CC Header"]
    # The From address is no body text.
    m, fwd = run("smtp/zeek_smtp.pcap", [Filter("k", "keyword", "gurpartap@")])
    assert not fwd
    m, fwd = run("smtp/zeek_smtp.pcap", [Filter("k", "keyword", "zzzqqqxxx")])
    assert not fwd


def test_ip_address_filters_select_whole_connections():
    # ip_address (either end of the connection) decides at the connection's first frame.
    name = "pop3/zeek_pop3.pcap"
    by_frame = streams(name)
    m, fwd = run(name, [Filter("ip", "ip_address", "212.227.15.171")])  # stream 1's server
    assert [n for n, _ in fwd] == sorted(n for n, s in by_frame.items() if s == 1)
    assert all(list(meta.filter_ids) == ["ip"] for _, meta in fwd)
    m, fwd = run(name, [Filter("ip", "ip_address", "212.227.15.166/31")])  # streams 2-6
    assert [n for n, _ in fwd] == sorted(n for n, s in by_frame.items() if s >= 2)
    assert [e.email.command for e in m.events] == ["RETR"] * 3
    assert all(list(e.filter_ids) == ["ip"] for e in m.events)
    m, fwd = run(name, [Filter("ip", "ip_address", "10.9.9.9")])
    assert not fwd and not m.events


def test_bpf_filters_select_whole_connections():
    # The filter types include bpf: any frame of a connection that a libpcap
    # expression matches selects the connection, whole (zeek_pop3: 7 connections).
    name = "pop3/zeek_pop3.pcap"
    by_frame = streams(name)
    assert "bpf" in EMAIL_FILTER_TYPES
    # The first frame matches: stream 4 (client port 26304, no message), nothing else.
    m, fwd = run(name, [Filter("b", "bpf", "tcp port 26304")])
    assert [n for n, _ in fwd] == sorted(n for n, s in by_frame.items() if s == 4)
    assert all(list(meta.filter_ids) == ["b"] for _, meta in fwd)
    # Only a late frame (the FIN of stream 6, after its three RETRs) matches: the frames
    # held before it go first, in order, and the messages' events with them.
    m, fwd = run(name, [Filter("f", "bpf", "tcp port 26383 and tcp[13] & 1 != 0")])
    assert [n for n, _ in fwd] == sorted(n for n, s in by_frame.items() if s == 6)
    assert [e.email.command for e in m.events] == ["RETR"] * 3
    assert all(list(e.filter_ids) == ["f"] and e.captured for e in m.events)
    # Beside another type: each connection by its own filter.
    m, fwd = run(name, [Filter("b", "bpf", "tcp port 26304"), Filter("c", "email_command", "RETR")])
    assert {(by_frame[n], tuple(meta.filter_ids)) for n, meta in fwd} == {(4, ("b",)), (6, ("c",))}
    assert len(fwd) == sum(1 for s in by_frame.values() if s in (4, 6))
    # Only data frames match (PSH, no SYN/FIN: frames the engine's in-order path takes
    # while no bpf filter exists): the connection is still selected, whole.
    m, fwd = run(name, [Filter("p", "bpf", "tcp port 26383 and tcp[13] = 0x18")])
    assert [n for n, _ in fwd] == sorted(n for n, s in by_frame.items() if s == 6)


def test_local_flags_are_filters_beside_pushed_ones():
    need_corpus()
    cfg = parse_options(EmailConfig, {"senders": "gurpartap@patriots.in"})
    m = EmailMode([], senders=cfg.senders)
    run_file(CORPUS / "smtp/zeek_smtp.pcap", m, m.interfaces)
    assert [list(e.filter_ids) for e in m.events] == [["local:sender:1"]]
    # --recipient is not --sender: the same address as a recipient does not match.
    m2 = EmailMode([], recipients=("gurpartap@patriots.in",))
    assert not run_file(CORPUS / "smtp/zeek_smtp.pcap", m2, m2.interfaces)
    # Both kinds at once: each session by its own filter.
    m3 = EmailMode([Filter("p", "email_address", "albert@example.com")], senders=cfg.senders)
    run_file(CORPUS / "smtp/zeek_smtp.pcap", m3, m3.interfaces)
    assert sorted(list(e.filter_ids) for e in m3.events) == [["local:sender:1"], ["p"]]


def test_every_local_flag_selects_its_sessions():
    # --subject, --keywords, --mailbox, --command as flags (parsed as the CLI does), each
    # with its own local id; the same as the pushed type would select.
    need_corpus()
    cases = [
        ("smtp/arkime_smtp-subject-8859-b.pcap", "subjects", "test å*", "local:subject:1"),
        ("smtp/zeek_smtp.pcap", "keywords", "bro smtp cc header", "local:keywords:1"),
        ("imap/arkime_imap.pcap", "mailboxes", "INBOX", "local:mailbox:1"),
        ("pop3/zeek_pop3.pcap", "commands", "retr", "local:command:1"),
    ]
    for name, field, value, fid in cases:
        cfg = parse_options(EmailConfig, {field: value})
        m = EmailMode([], **{field: getattr(cfg, field)})
        assert [f.id for f in m.mode.local_filters] == [fid]
        fwd = run_file(CORPUS / name, m, m.interfaces)
        assert fwd and m.events, name
        assert {tuple(meta.filter_ids) for _, meta in fwd} == {(fid,)}
        assert {tuple(e.filter_ids) for e in m.events} == {(fid,)}
        pushed = {"subjects": "email_subject", "keywords": "keyword",
                  "mailboxes": "email_mailbox", "commands": "email_command"}[field]  # fmt: skip
        _, pfwd = run(name, [Filter("p", pushed, value)])
        assert [n for n, _ in pfwd] == [n for n, _ in fwd], name
    # A value no session has: nothing.
    cfg = parse_options(EmailConfig, {"mailboxes": "Sent"})
    m = EmailMode([], mailboxes=cfg.mailboxes)
    assert not run_file(CORPUS / "imap/arkime_imap.pcap", m, m.interfaces)


def test_bad_local_flags_are_refused_naming_the_flag():
    with pytest.raises(ValidationError, match=r"--subject .*only wildcards"):
        parse_options(EmailConfig, {"subjects": "**"})
    with pytest.raises(ValidationError, match=r"--keywords .*at least"):
        parse_options(EmailConfig, {"keywords": "ab"})
    with pytest.raises(ValidationError, match=r"--protocol"):
        parse_options(EmailConfig, {"protocols": "smtp,nntp"})
    with pytest.raises(ValidationError, match=r"also given to --smtp-port"):
        parse_options(EmailConfig, {"imap_ports": "25"})


def test_starttls_sessions_are_marked_upgraded_and_implicit_tls_ports_are_tls():
    m, fwd = run("smtp/arkime_smtp-starttls.pcap", [], policy="allow")
    assert fwd and all(meta.email.upgraded for _, meta in fwd[-3:])
    assert m.mode.counters().figures["starttls"] == 1
    # TLS where a mail protocol was expected (here HTTPS on a port declared SMTP): a TLS
    # session (smtps) with its ClientHello's server_name and the version chosen.
    m, fwd = run(
        "tls/arkime_curl-enabled-tls13.pcap", [], policy="allow",
        smtp_ports=frozenset({443}), imap_ports=frozenset({1}), pop3_ports=frozenset({2}),
    )  # fmt: skip
    # (the handshake and the ClientHello's frame went before anything said TLS)
    assert fwd and {meta.protocol for _, meta in fwd[-5:]} == {"smtps"}
    assert fwd[-1][1].email.tls_sni == "enabled.tls13.com"
    (ev,) = m.events
    assert ev.email.protocol == "smtps" and ev.email.tls_sni == "enabled.tls13.com"
    assert ev.email.tls_version == 0x0304 and ev.flow.dst_port == 443


@pytest.mark.parametrize(("port", "proto"), [(465, "smtps"), (993, "imaps"), (995, "pop3s")])
def test_the_implicit_tls_ports_are_tls_sessions_by_their_port(tmp_path, port, proto):
    # A TLS 1.3 handshake (curl to enabled.tls13.com) moved to each default implicit-TLS
    # port: recorded as TLS by the port (no mail parser), with SNI and version.
    need_corpus()
    from scapy.layers.inet import TCP
    from scapy.utils import rdpcap, wrpcap

    pkts = rdpcap(str(CORPUS / "tls/arkime_curl-enabled-tls13.pcap"))
    for p in pkts:
        if TCP in p:
            t = p[TCP]
            t.sport, t.dport = (
                (port if t.sport == 443 else t.sport),
                (port if t.dport == 443 else t.dport),
            )
            del t.chksum
    path = tmp_path / "moved.pcap"
    wrpcap(str(path), pkts)
    m = EmailMode([], policy="allow")
    fwd = run_file(path, m, m.interfaces)
    m.finish()
    assert len(fwd) == sum(TCP in p for p in pkts) and {meta.protocol for _, meta in fwd} == {proto}
    assert all(meta.email.protocol == proto for _, meta in fwd)
    (ev,) = m.events
    assert (ev.email.protocol, ev.email.tls_sni, ev.email.tls_version) == (
        proto, "enabled.tls13.com", 0x0304
    )  # fmt: skip
    assert ev.flow.dst_port == port and not ev.email.command and not ev.email.subject
    assert m.mode.counters().figures["tls_sessions"] == 1


@pytest.mark.parametrize(
    ("name", "proto"),
    [
        ("smtp/arkime_smtp-starttls.pcap", "smtp"),
        ("imap/zeek_imap-starttls.pcap", "imap"),
        ("pop3/zeek_pop3-starttls.pcap", "pop3"),  # NULL/loopback link type
    ],
)
def test_starttls_sessions_against_tshark(name: str, proto: str) -> None:
    """Every STARTTLS capture: the session is every frame of its tcp.stream (tshark),
    the frames from the ClientHello tshark sees (its TLS oracle) on carry ``upgraded``,
    and once upgraded an undecided session is settled: nothing more can match."""
    m, fwd = run(name, [], policy="allow")
    by_frame = streams(name)
    (hello,) = [
        int(r["frame.number"])
        for r in tsv(CORPUS / (name + ".expected-tls.tsv"))
        if r["tls.handshake.type"] == "1"
    ]
    assert [n for n, _ in fwd] == sorted(by_frame)
    assert all(meta.protocol == proto for _, meta in fwd)
    assert next(n for n, meta in fwd if meta.email.upgraded) <= hello
    assert all(meta.email.upgraded for n, meta in fwd if n >= hello)
    assert m.mode.counters().figures["starttls"] == 1
    # The session's own record says it went STARTTLS; messages read in clear do not.
    (up,) = [e for e in m.events if e.email.upgraded]
    assert (up.email.protocol, up.email.command, up.captured) == (proto, "STARTTLS", True)
    assert up.start_ns <= up.end_ns and up.session_id == fwd[0][1].session_id
    assert not any(e.email.upgraded for e in m.events if e is not up)
    m, fwd = run(name, [Filter("x", "email_address", "nobody@example.org")])
    assert not fwd and m.mode.counters().figures["sessions_unmatched"] == 1


def _arkime(name: str, proto: str) -> dict:
    doc = json.loads((CORPUS / (name + ".arkime.json")).read_text())
    (body,) = [s["body"] for s in doc["sessions3"] if proto in s["body"].get("protocol", [])]
    return body["email"]


def test_events_agree_with_arkimes_documents() -> None:
    """Arkime's session documents (the corpus's .arkime.json) against the mode's events:
    the SMTP message (decoded subject, HELO, Message-ID, content type, user agent, its
    senders and recipients, envelope and headers together) and the IMAP fetches
    (folder, senders, first lines of the subjects)."""
    need_corpus()
    name = "smtp/arkime_smtp-subject-8859-b.pcap"
    doc = _arkime(name, "smtp")
    m, _ = run(name, [], policy="allow")
    (e,) = [ev.email for ev in m.events]
    assert doc["subject"] == [e.subject] and doc["smtpHello"] == [e.helo]
    assert doc["id"] == [e.message_id] and doc["useragent"] == [e.x_mailer]
    assert e.content_type == doc["contentType"][0].split(";")[0].strip().lower()
    assert set(doc["src"]) == {e.mail_from.lower(), *(a.lower() for a in e.from_address)}
    assert set(doc["dst"]) == {*(r.lower() for r in e.rcpt_to), *(a.lower() for a in e.to_address)}
    name = "imap/arkime_imap.pcap"
    doc = _arkime(name, "imap")
    m, _ = run(name, [], policy="allow")
    events = [ev.email for ev in m.events]
    assert len(events) == 26 and {e.command for e in events} == {"FETCH"}
    assert doc["folder"] == sorted({e.mailbox for e in events}) == ["INBOX"]
    assert sorted(doc["src"]) == sorted({a.lower() for e in events for a in e.from_address})
    # Arkime keeps a folded Subject's first line; the event has the whole of it.
    firsts = [s.rstrip() for s in doc["subject"]]
    assert len(firsts) > 5 and all(firsts)
    assert all(any(e.subject.startswith(f) for f in firsts) for e in events)
    assert all(any(e.subject.startswith(f) for e in events) for f in firsts)


def test_secrets_never_reach_metadata_or_events():
    m, fwd = run("pop3/zeek_pop3.pcap", [], policy="allow")  # AUTH PLAIN with base64 secrets
    m2, fwd2 = run("smtp/zeek_smtp.pcap", [], policy="allow")  # AUTH LOGIN
    blob = b"".join(e.SerializeToString() for e in m.events + m2.events)
    blob += b"".join(meta.SerializeToString() for _, meta in fwd + fwd2)
    for secret in (b"cHVuamFiQDEyMw==", b"punjab@123", b"AHBvcHRlc3QAcG9wdGVzdA"):
        assert secret not in blob


def _tcp_frames(payloads: list[tuple[bool, bytes]]) -> Chunk:
    """Ethernet/IPv4/TCP frames of one connection 10.0.0.1:40000 <-> 10.0.0.2:25."""
    import struct
    from array import array

    seq = {True: 1000, False: 5000}
    recs = bytearray()
    ts, caps = array("q"), array("I")
    for i, (up, data) in enumerate(payloads):
        src, dst = (b"\x0a\0\0\x01", b"\x0a\0\0\x02") if up else (b"\x0a\0\0\x02", b"\x0a\0\0\x01")
        sp, dp = (40000, 25) if up else (25, 40000)
        tcp = struct.pack("!HHIIBBHHH", sp, dp, seq[up], seq[not up], 0x50, 0x18, 65535, 0, 0)
        seq[up] += len(data)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(data), i, 0, 64, 6, 0,
                         src, dst)  # fmt: skip
        frame = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp + data
        t = 10**9 + i * 1000
        recs += struct.pack("<IIII", t // 10**9, t % 10**9, len(frame), len(frame)) + frame
        ts.append(t)
        caps.append(len(frame))
    return Chunk(ts, caps, array("I", caps), bytes(recs), array("H", [0] * len(caps)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.binary(max_size=200)
            | st.sampled_from(
                [
                    b"MAIL FROM:<a@b.c>\r\n",
                    b"RCPT TO:<x@y.z>\r\n",
                    b"DATA\r\n",
                    b"354 go\r\n",
                    b"Subject: =?utf-8?b?w7w=?=\r\n\r\nbody\r\n.\r\n",
                    b"250 ok\r\n",
                    b"220 hi\r\n",
                    b"STARTTLS\r\n",
                    b"BDAT 5 LAST\r\n",
                    b"\x16\x03\x01\x00\x05hello",
                ]
            ),
        ),
        max_size=30,
    )
)
def test_hostile_streams_never_raise_and_stay_bounded(payloads):
    m = EmailMode([Filter("k", "keyword", "body")], events="all")
    m.interfaces.append(("eth", 1))
    m.process(_tcp_frames(payloads))
    m.finish()
    c = m.mode.counters().figures
    assert c["sessions_active"] == 0 and c["buffered_bytes"] == 0


def test_summary_names_the_session_and_its_envelope():
    _, fwd = run("smtp/zeek_smtp-multi-addr.pcap", [], policy="allow")
    last = fwd[-1][1]
    assert last.protocol == "smtp" and last.session_id.startswith("tcp:")
    assert last.email.mail_from and last.email.subject == "Testmail"
    pairs, _ = split_headers(b"Subject: x\r\n\r\n")
    assert pairs == [("subject", "x")]


def test_forwarded_packets_carry_the_whole_email_summary():
    # The metadata: protocol, command, envelope sender and recipients, From, To,
    # Subject, Message-ID, mailbox, as the session stood when each packet went.
    def states(name: str) -> dict[int, tuple]:
        _, fwd = run(name, [], policy="allow")
        return {
            n: (e.protocol, e.command, e.mail_from, list(e.rcpt_to), list(e.from_address),
                list(e.to_address), e.subject, e.message_id, e.mailbox)
            for n, meta in fwd
            for e in [meta.email]
        }  # fmt: skip

    smtp = states("smtp/zeek_smtp-multi-addr.pcap")
    assert smtp[1] == ("smtp", "", "", [], [], [], "", "", "")
    assert smtp[9][:4] == ("smtp", "MAIL", "root@gras-os-desk.cern.ch", [])
    assert smtp[11][:4] == ("smtp", "DATA", "root@gras-os-desk.cern.ch", ["jan.grashofer@cern.ch"])
    assert smtp[15][4:] == (
        ["jan.grashoefer@cern.ch"],
        ["jan.grashoefer@gmail.com", "addr-spec@example.com", "angle-addr@example.com",
         "name-addr@example.com", "jan.grashofer@cern.ch"],
        "Testmail", "201512082130.tB8LU0vs014629@gras-os-desk.cern.ch", "",
    )  # fmt: skip
    imap = states("imap/arkime_imap.pcap")
    assert imap[13][1] == "SELECT" and imap[13][8] == ""  # not selected before its OK
    assert imap[14][1] == "SELECT" and imap[14][8] == "INBOX"
    assert imap[23] == (
        "imap", "FETCH", "", [], ["uetrecht@umr.edu"], ["nneul@umr.edu"],
        "RE: pipes implementation of bkupexec agent",
        "9DA8D24B915BD1118911006094516EAF0261940D@umr-mail02", "INBOX",
    )  # fmt: skip
    pop = states("pop3/zeek_pop3.pcap")
    assert pop[101] == (
        "pop3", "RETR", "", [], ["support@1and1.co.uk"], ["digitalinvestigator@networksims.com"],
        "A message from 1&1 Internet", "0M251y-1W5Nip0Pgx-00tHOr@mbulk.1and1.com", "",
    )  # fmt: skip


def test_ports_of_a_protocol_left_out_are_not_followed():
    m, fwd = run("pop3/zeek_pop3.pcap", [], policy="allow", protocols=frozenset({"smtp"}))
    assert not fwd and not m.events
    assert Path(CORPUS / "pop3/zeek_pop3.pcap").exists()


def test_the_kernel_filter_lets_the_icmp_errors_of_connections_through():
    need("tcpdump")
    m = email_mode(ModeContext([]), EmailConfig())
    expr = m.kernel_filter(compile_filters([], "h", EMAIL_FILTER_TYPES))
    r = subprocess.run(
        ["tcpdump", "-n", "-r", str(CORPUS / "smtp/zeek_smtp.pcap"), expr],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    icmp = [ln for ln in r.stdout.splitlines() if "ICMP" in ln]
    assert len(icmp) == 4 and all("need to frag" in ln for ln in icmp)


def _icmp_error(v6: bool, proto: int, sport: int, dport: int) -> bytes:
    """An Ethernet frame: an ICMP "fragmentation needed" (ICMPv6 "packet too big")
    quoting the start of a packet of ``proto`` from ``sport`` to ``dport``."""
    import struct

    l4 = struct.pack("!HHI", sport, dport, 1)  # the 8 bytes every ICMP error quotes
    if not v6:
        inner = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 1500, 1, 0x4000, 64, proto, 0,
                            b"\x0a\0\0\x01", b"\x0a\0\0\x02") + l4  # fmt: skip
        icmp = struct.pack("!BBHHH", 3, 4, 0, 0, 1400) + inner
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 2, 0, 64, 1, 0,
                         b"\x0a\0\0\xfe", b"\x0a\0\0\x01")  # fmt: skip
        return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + icmp
    a, b = b"\x20\x01\x0d\xb8" + b"\0" * 11 + b"\x01", b"\x20\x01\x0d\xb8" + b"\0" * 11 + b"\x02"
    inner = struct.pack("!IHBB16s16s", 6 << 28, 1460, proto, 64, a, b) + l4
    icmp = struct.pack("!BBHI", 2, 0, 0, 1280) + inner
    ip = struct.pack("!IHBB16s16s", 6 << 28, len(icmp), 58, 64, b"\xfe" * 16, a)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x86\xdd" + ip + icmp


def test_the_kernel_filter_keeps_only_icmp_errors_quoting_tcp_on_the_mail_ports():
    # It let every ICMP unreachable and time exceeded of the host through (198k packets
    # in 8 minutes on a busy box, all then filtered out in Python).
    from lc.common.bpf import compile_bpf

    m = email_mode(ModeContext([]), EmailConfig())
    prog = compile_bpf(m.kernel_filter(compile_filters([], "h", EMAIL_FILTER_TYPES)), 1)
    for v6 in (False, True):
        assert prog.filter(_icmp_error(v6, 6, 40000, 25))
        assert prog.filter(_icmp_error(v6, 6, 993, 40000))  # our reply, quoted back
        assert not prog.filter(_icmp_error(v6, 6, 40000, 80))
        assert not prog.filter(_icmp_error(v6, 17, 40000, 25))  # UDP


def _zeek_set(value: str) -> set[str]:
    return set() if value in ("-", "(empty)") else set(value.split(","))


def _angle(value: str) -> set[str]:
    """Zeek's From/To/Cc header text (``"Name" <a@b>`` or ``a@b``, comma-separated)."""
    out = set()
    for part in _zeek_set(value):
        out.add(part.rsplit("<", 1)[-1].rstrip(">").strip().lower())
    return out


def test_events_agree_with_zeeks_smtp_log():
    """Zeek's smtp.log (one row per SMTP transaction) as the oracle: envelope, HELO,
    header addresses, subject, Message-ID and user agent of each message."""
    need_corpus()
    lines = (CORPUS / "smtp/zeek_smtp.pcap.zeek-smtp.log").read_text().splitlines()
    names = next(ln for ln in lines if ln.startswith("#fields")).split("\t")[1:]
    rows = [dict(zip(names, ln.split("\t"), strict=True)) for ln in lines if ln[:1] != "#"]
    m, _ = run("smtp/zeek_smtp.pcap", [], policy="allow")
    by_id = {"<" + e.email.message_id + ">": e.email for e in m.events}
    assert len(rows) == 2 and len(by_id) == len(rows)
    for r in rows:
        e = by_id[r["msg_id"]]
        assert e.helo == r["helo"]
        assert e.mail_from == r["mailfrom"]
        assert set(e.rcpt_to) == _zeek_set(r["rcptto"])
        assert {a.lower() for a in e.from_address} == _angle(r["from"])
        assert {a.lower() for a in e.to_address} == _angle(r["to"])
        assert {a.lower() for a in e.cc_address} == _angle(r["cc"])
        assert e.subject == r["subject"]
        assert e.x_mailer == r["user_agent"]


def _smtp_two_messages() -> list[tuple[bool, bytes]]:
    """One SMTP session: a message with an attachment from nobody watched, then one
    from the watched address."""
    first = (
        b"From: a@example.org\r\nTo: b@example.org\r\nSubject: first\r\n"
        b"Content-Type: text/plain; name=notes.txt\r\n\r\nplain words\r\n"
    )
    second = b"From: watched@example.org\r\nSubject: second\r\n\r\nhello there\r\n"
    out = [(False, b"220 mx ESMTP\r\n"), (True, b"EHLO c\r\n"), (False, b"250 mx\r\n")]
    for sender, msg in (("a@example.org", first), ("watched@example.org", second)):
        out += [(True, f"MAIL FROM:<{sender}>\r\n".encode()), (False, b"250 ok\r\n"),
                (True, b"RCPT TO:<b@example.org>\r\n"), (False, b"250 ok\r\n"),
                (True, b"DATA\r\n"), (False, b"354 go\r\n"), (True, msg + b".\r\n"),
                (False, b"250 queued\r\n")]  # fmt: skip
    return out


@pytest.mark.parametrize("capture_body", [False, True])
def test_messages_before_the_decision_have_their_whole_events(capture_body: bool) -> None:
    # Events are made only once the session is decided (most never are): the first
    # message's, kept meanwhile without its body, still names its attachment, and
    # carries its body with --capture-body.
    m = EmailMode([Filter("w", "email_address", "watched@example.org")], capture_body=capture_body)
    m.interfaces.append(("eth", 1))
    m.process(_tcp_frames(_smtp_two_messages()))
    m.finish()
    first, second = m.events
    assert (first.email.subject, second.email.subject) == ("first", "second")
    assert list(first.email.attachments) == ["notes.txt"] and first.captured
    assert list(first.email.from_address) == ["a@example.org"]
    assert list(first.filter_ids) == ["w"] and first.email.rcpt_to == ["b@example.org"]
    assert (first.email.body, second.email.body) == (
        ("plain words\n", "hello there\n") if capture_body else ("", "")
    )


def test_a_date_out_of_range_leaves_the_event_without_one() -> None:
    # A Date of year 200 ended the hunter (ValueError at the event's int64 field).
    msgs = _smtp_two_messages()
    up, data = msgs[17]
    assert up and data.startswith(b"From: watched@")
    msgs[17] = (up, data.replace(b"Subject:", b"Date: Mon, 1 Jan 0200 00:00:00 +0000\r\nSubject:"))
    m = EmailMode([Filter("w", "email_address", "watched@example.org")])
    m.interfaces.append(("eth", 1))
    m.process(_tcp_frames(msgs))
    m.finish()
    assert [e.email.subject for e in m.events] == ["first", "second"]
    assert m.events[1].email.origination_ns == 0


def test_the_summary_line_counts_mails_not_commands_and_framing_errors_as_malformed() -> None:
    # It said "19 EMAIL messages" for these two mails: the engine's commands and replies.
    m = EmailMode([Filter("w", "email_address", "watched@example.org")])
    m.interfaces.append(("eth", 1))
    m.process(_tcp_frames(_smtp_two_messages()))
    m.finish()
    c = m.mode.counters()
    assert c.figures["email_messages"] == 2
    assert "2 EMAIL messages (0 malformed)" in c.summary, c.summary


def test_undecided_sessions_make_events_only_with_events_all() -> None:
    for events, want in (("captured", 0), ("all", 2)):
        m = EmailMode([Filter("w", "email_address", "nobody@example.org")], events=events)
        m.interfaces.append(("eth", 1))
        m.process(_tcp_frames(_smtp_two_messages()))
        m.finish()
        assert len(m.events) == want
        assert all(not e.captured and e.email.subject for e in m.events)
        assert [list(e.email.attachments) for e in m.events][:1] == [["notes.txt"]] * min(want, 1)


def _smtp_mode(**cfg) -> tuple:
    m = email_mode(ModeContext([("eth0", 1)], "deny"), EmailConfig(**cfg))
    m.apply(compile_filters([Filter("w", "email_address", "watched@example.org")], "h",
                            EMAIL_FILTER_TYPES))  # fmt: skip
    return m


def test_a_message_of_many_segments_is_one_event_and_its_frames_all_go() -> None:
    # After their first chunk the directions' framers feed the parser themselves; the
    # engine gets a message only for chunks that complete something (and one every
    # 128 silent chunks): a 300-segment body is one event, every frame forwarded, no
    # frame left waiting.
    from tests.hunter.conn_toy import Conn, chunk, records

    m = _smtp_mode()
    a = Conn(1, 25)
    body = b"".join(b"line %d of the body\r\n" % i for i in range(300))
    frames = [*a.handshake(), a.server(b"220 mx\r\n"), a.client(b"EHLO c\r\n"),
              a.server(b"250 mx\r\n"), a.client(b"MAIL FROM:<watched@example.org>\r\n"),
              a.server(b"250 ok\r\n"), a.client(b"RCPT TO:<b@example.org>\r\n"),
              a.server(b"250 ok\r\n"), a.client(b"DATA\r\n"), a.server(b"354 go\r\n"),
              a.client(b"Subject: big\r\n\r\n")]  # fmt: skip
    frames += [a.client(body[i : i + 21]) for i in range(0, len(body), 21)]
    frames += [a.client(b".\r\n"), a.server(b"250 queued\r\n"), *a.close()]
    fwd = m.process(chunk(frames, 10**18))
    fin = m.finish()
    assert records(fwd) + records(fin) == frames
    (ev,) = fwd.events + fin.events
    assert ev.email.subject == "big" and ev.email.size == len(b"Subject: big\r\n\r\n" + body)
    figures = m.counters().figures
    assert figures["tcp_pending_dropped"] == 0 and figures["email_messages"] == 1


def test_a_session_evicted_while_its_streams_go_on_is_parsed_again() -> None:
    # Its framers were bound to the evicted session's parser: the bytes that follow
    # must reach the session opened in its place (picked up mid-stream).
    from tests.hunter.conn_toy import Conn, chunk, records

    m = _smtp_mode(max_sessions=1)
    a, b = Conn(2, 25), Conn(3, 25)
    first = [*a.handshake(), a.server(b"220 mx\r\n"), a.client(b"EHLO c\r\n"),
             a.server(b"250 mx\r\n"), *b.handshake()]  # fmt: skip
    assert records(m.process(chunk(first, 10**18))) == []
    c = m.counters()
    assert c.figures["sessions_evicted"] == 1
    # The drop reason counts packets: what the evicted session held, none filtered.
    assert c.dropped["sessions_evicted"] == len(first) - 3 and c.dropped["filtered"] == 0
    later = [a.client(b"MAIL FROM:<watched@example.org>\r\n"), a.server(b"250 ok\r\n")]
    fwd = m.process(chunk(later, 10**18 + 10**9))
    assert records(fwd) == later


def _smtp_one(msg: bytes) -> list[tuple[bool, bytes]]:
    return [(False, b"220 mx ESMTP\r\n"), (True, b"EHLO c\r\n"), (False, b"250 mx\r\n"),
            (True, b"MAIL FROM:<a@example.org>\r\n"), (False, b"250 ok\r\n"),
            (True, b"RCPT TO:<b@example.org>\r\n"), (False, b"250 ok\r\n"),
            (True, b"DATA\r\n"), (False, b"354 go\r\n"), (True, msg + b".\r\n"),
            (False, b"250 queued\r\n")]  # fmt: skip


@pytest.mark.parametrize("capture_body", [False, True])
def test_keywords_match_the_decoded_body_up_to_max_body_size(capture_body: bool) -> None:
    # The issue: keyword is matched against the decoded body up to --max-body-size,
    # whether or not --capture-body puts the body into events.
    import base64

    def matched(msg: bytes, **cfg) -> list:
        m = EmailMode([Filter("k", "keyword", "Schlüssel")], capture_body=capture_body, **cfg)
        m.interfaces.append(("eth", 1))
        m.process(_tcp_frames(_smtp_one(msg)))
        m.finish()
        return m.events

    head = b"From: a@example.org\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
    qp_latin1 = head + (b"Content-Type: text/plain; charset=iso-8859-1\r\n"
                        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                        b"der Schl=FCssel liegt da\r\n")  # fmt: skip
    b64_utf8 = head + (b"Content-Type: text/plain; charset=utf-8\r\n"
                       b"Content-Transfer-Encoding: base64\r\n\r\n"
                       + base64.encodebytes("ein Schlüssel".encode()))  # fmt: skip
    for msg in (qp_latin1, b64_utf8):
        (ev,) = matched(msg)
        assert list(ev.filter_ids) == ["k"] and ev.captured
        assert ("Schlüssel" in ev.email.body) == capture_body and (
            ev.email.body == ""
        ) != capture_body
    # The encoded form is not the text: base64 of the word does not match the word.
    raw_b64 = head + b"\r\n" + base64.b64encode("Schlüssel".encode()) + b"\r\n"
    assert matched(raw_b64) == []
    # Past --max-body-size the body is not searched.
    late = (
        head
        + b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        + b"x" * 2000
        + "\r\nSchlüssel\r\n".encode()
    )
    assert matched(late, max_body_size=1000) == []
    assert len(matched(late, max_body_size=4000)) == 1


def test_events_waiting_for_a_decision_are_bounded_and_counted() -> None:
    # At most MAX_WAITING_EVENTS (64) events wait per undecided session; the rest are
    # counted in events_dropped (the heartbeat's figures), never kept.
    from lc.hunter.modes.sessions import MAX_WAITING_EVENTS

    steps = [(False, b"220 mx ESMTP\r\n"), (True, b"EHLO c\r\n"), (False, b"250 mx\r\n")]
    for i in range(MAX_WAITING_EVENTS + 6):
        steps += _smtp_one(f"From: a@example.org\r\nSubject: m{i}\r\n\r\nx\r\n".encode())[3:]
    steps += _smtp_one(b"From: watched@example.org\r\nSubject: last\r\n\r\nx\r\n")[3:]
    m = EmailMode([Filter("w", "email_address", "watched@example.org")])
    m.interfaces.append(("eth", 1))
    fwd, _ = m.process(_tcp_frames(steps))
    m.finish()
    subjects = [e.email.subject for e in m.events]
    assert subjects == [f"m{i}" for i in range(MAX_WAITING_EVENTS)] + ["last"]
    assert m.mode.counters().figures["events_dropped"] == 6
    assert len(fwd) == len(steps)  # the frames all go: only events are bounded


def test_the_parsers_bounds_are_counted_in_the_modes_figures() -> None:
    # Every bound with a drop counter an operator can read (lc show hunter, metrics): an
    # overlong command line, unanswered pipelined commands beyond the pending limit, RCPT
    # TO beyond MAX_ADDRESSES; POP3 multi-line answer lines beyond its limit.
    from lc.common.mailmsg import DEFAULT_MAX_LINE, DEFAULT_MAX_PENDING, MAX_ADDRESSES

    rcpts = b"".join(b"RCPT TO:<r%d@example.org>\r\n" % i for i in range(MAX_ADDRESSES + 3))
    long_ehlo = b"EHLO " + b"h" * (2 * DEFAULT_MAX_LINE) + b"\r\n"
    steps = [(False, b"220 mx ESMTP\r\n"), (True, long_ehlo), (False, b"250 mx\r\n"),
             (True, b"MAIL FROM:<a@example.org>\r\n" + rcpts)]  # fmt: skip
    m = EmailMode([Filter("w", "email_address", "nobody@example.org")])
    m.interfaces.append(("eth", 1))
    m.process(_tcp_frames(steps))
    m.finish()
    fig = m.mode.counters().figures
    assert fig["long_lines"] == 1
    assert fig["rcpt_dropped"] == 3
    assert fig["pending_dropped"] == MAX_ADDRESSES + 4 - DEFAULT_MAX_PENDING
    assert fig["reply_lines_dropped"] == 0  # (POP3 only) a figure from the start


# -- quiet messages (EmailMode._conn_stream_message) ----------------------------------------
def _mode_outputs(name: str, filters: list, decide_ns: int, quiet: bool, monkeypatch) -> tuple:
    """Frames, metadata, events and counters of the email mode over a corpus capture
    (its frames' own times, chunks of 7), with quiet messages allowed or not."""
    from lc.hunter.capture import FileSource
    from lc.hunter.modes import email as email_module

    monkeypatch.setattr(email_module, "_quiet", email_module._quiet if quiet else lambda ev: False)
    cfg = EmailConfig()
    cfg.decide_timeout_ns = decide_ns
    m = email_mode(ModeContext([("f", 1)], events="all"), cfg)
    m.apply(compile_filters([Filter(f"f{k}", t, p) for k, (t, p) in enumerate(filters)]))
    src = FileSource(str(CORPUS / name))
    out = []
    while (c := src.read(7)) is not None:
        out.append(m.process(c))
    out.append(m.finish())
    src.close()
    got = []
    for fwd in out:
        c = fwd.chunk
        metas = [fwd.meta[k].SerializeToString(deterministic=True) for k in sorted(fwd.meta)]
        events = [e.SerializeToString(deterministic=True) for e in fwd.events]
        got.append((bytes(c.records), list(c.ts_ns), metas, events))
    f = m.counters()
    return got, f.figures, f.dropped, f.summary


@pytest.mark.parametrize(
    "name",
    ["smtp/zeek_smtp.pcap", "smtp/arkime_smtp-starttls.pcap", "pop3/suricata_pop3.pcap",
     "pop3/zeek_pop3-starttls.pcap", "imap/arkime_imap.pcap", "imap/zeek_imap-starttls.pcap"],
)  # fmt: skip
@pytest.mark.parametrize("decide_ns", [300 * 10**9, 10**9, 10**8, 10**7, 10**6, 10**5])
@pytest.mark.parametrize(
    "filters",
    [[("email_address", "nothing@nowhere.example")], [("email_command", "RETR")],
     [("email_subject", "*e*"), ("ip_address", "192.0.2.1")]],
)  # fmt: skip
def test_quiet_messages_change_no_output(name, decide_ns, filters, monkeypatch):
    """Replies counted without the engine's message path leave every frame, metadata,
    event and counter as the full path does, also when the decide timeout falls
    between a command and its reply, and with an ip_address filter in force."""
    need_corpus()
    quiet = _mode_outputs(name, filters, decide_ns, True, monkeypatch)
    full = _mode_outputs(name, filters, decide_ns, False, monkeypatch)
    assert quiet == full


def test_a_quiet_reply_past_the_decide_timeout_still_rejects(monkeypatch):
    """A POP3 reply that comes after the decide timeout rejects its undecided session
    there, as the engine's message path does: a later RETR that matches captures the
    session from its own frame on, not what was held before the reply."""
    from tests.hunter.conn_toy import Conn, chunk, records
    from tests.hunter.test_connections import T0, S

    def run(quiet: bool) -> tuple:
        from lc.hunter.modes import email as email_module

        monkeypatch.setattr(
            email_module, "_quiet", email_module._quiet if quiet else lambda ev: False
        )
        cfg = EmailConfig()
        cfg.decide_timeout_ns = S
        m = email_mode(ModeContext([("f", 1)], events="all"), cfg)
        m.apply(compile_filters([Filter("f", "email_command", "RETR")]))
        c = Conn(1, port=110)
        head = [*c.handshake(), c.server(b"+OK ready\r\n"), c.client(b"USER a\r\n")]
        tail = [c.server(b"+OK\r\n"), c.client(b"RETR 1\r\n"), c.server(b"+OK 3\r\nx\r\n.\r\n")]
        got = []
        for k, f in enumerate(head):
            got += records(m.process(chunk([f], T0 + k * 1000)))
        # After the decide timeout, in one chunk (the engine's expiry, at a chunk's end,
        # would reject it too).
        got += records(m.process(chunk(tail, T0 + 2 * S)))
        got += records(m.finish())
        return got, m.counters().figures, head, tail

    quiet, full = run(True), run(False)
    assert quiet[:2] == full[:2]
    got, _, _, tail = full
    assert got == tail[1:]  # rejected at the reply: the held frames went uncounted
