"""The event log sink through a real Ingest: ECS lines, Community ID, rotation, undo,
cut-back after a crash. Every line is parsed with the standard json module; the
Community ID is checked against the ``communityid`` package where installed."""

from __future__ import annotations

import ipaddress
import json
import os
from array import array
from pathlib import Path

import pytest

from lc.common.errors import LcError
from lc.common.pcapfile import PcapSink, frame_records
from lc.common.wire import build_batch
from lc.processor.eventlog import EventLog, iso_ns
from lc.processor.ingest import Ingest
from lc.processor.ledger import Ledger
from lc.proto import lc_pb2

NS = 1_000_000_000
T0 = 1_795_000_000 * NS + 123_456_789
DAY = 86_400


def call_event(n: int, **kw) -> lc_pb2.Event:
    ev = lc_pb2.Event(
        dataset="sip",
        start_ns=T0 + n * NS,
        end_ns=T0 + n * NS + 30 * NS + 5,
        session_id=f"call-{n}@example.com",
        flow=lc_pb2.FlowTuple(
            src_ip=bytes([10, 0, 0, 1]), dst_ip=bytes([10, 0, 0, 2]),
            src_port=5060 + n, dst_port=5060, ip_proto=17,
        ),
        filter_ids=["alice"],
        captured=True,
        call=lc_pb2.CallEvent(
            call_id=f"call-{n}@example.com", method="INVITE", state="ended",
            from_user="alice", to_user="bob", from_uri="sip:alice@example.com",
            to_uri="sip:bob@example.com", sip_packets=7, rtp_packets=100 + n, rtcp_packets=3,
            sip_bytes=4000, rtp_bytes=17200, rtcp_bytes=240, codecs=["PCMU", "telephone-event"],
            last_status=200,
        ),
    )  # fmt: skip
    for k, v in kw.items():
        setattr(ev, k, v)
    return ev


def batch(seq: int, events: list[lc_pb2.Event], packets: int = 2, linktype: int = 1, epoch=7):
    payloads = [bytes([seq % 256, i]) * 40 for i in range(packets)]
    ts = array("q", [T0 + seq * 1000 + i for i in range(packets)])
    cl = array("I", map(len, payloads))
    recs = frame_records(ts, cl, cl, b"".join(payloads))
    b = build_batch("h1", epoch, seq, recs, packets, [("eth0", linktype)], events=events)
    return lc_pb2.PacketBatch.FromString(b.SerializeToString())


class Rig:
    def __init__(self, tmp: Path, clock=None, rotate_size: int = 10**9) -> None:
        self.tmp = tmp
        self.ledger = Ledger(str(tmp / "lc.db"))
        self.sink = PcapSink(
            str(tmp / "all.pcap"), resume=self.ledger.sink_files(str(tmp / "all.pcap"))
        )
        kw = {"clock": clock} if clock else {}
        self.events = EventLog(tmp / "events", self.ledger, rotate_size=rotate_size, **kw)
        self.ingest = Ingest(self.sink, self.ledger, str(tmp / "all.pcap"), events=self.events)

    def lines(self) -> list[dict]:
        out = []
        for f in sorted((self.tmp / "events").iterdir()):
            for line in f.read_bytes().splitlines():
                out.append(json.loads(line))
        return out

    def close(self) -> None:
        self.ingest.close()
        self.ledger.close()


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.close()


def test_each_event_is_one_ecs_line(rig):
    evs = [call_event(1), call_event(2)]
    ack, n, _ = rig.ingest.accept(batch(1, evs))
    assert n == 2 and not ack.duplicate
    rig.ingest.accept(batch(2, [], packets=3))  # no events: nothing
    rig.ingest.accept(batch(3, [call_event(3)], packets=0))  # events only
    lines = rig.lines()
    assert [d["lc"]["session_id"] for d in lines] == [f"call-{n}@example.com" for n in (1, 2, 3)]
    d = lines[0]
    assert d["@timestamp"] == iso_ns(T0 + NS) and d["@timestamp"].endswith(".123456789Z")
    assert d["event"]["kind"] == "event" and d["event"]["category"] == ["network"]
    assert d["event"]["dataset"] == "lc.sip" and d["event"]["duration"] == 30 * NS + 5
    assert d["event"]["id"] == "h1:7:1:0" and lines[1]["event"]["id"] == "h1:7:1:1"
    assert lines[2]["event"]["id"] == "h1:7:3:0"
    assert d["observer"]["name"] == "h1"
    assert d["source"] == {"ip": "10.0.0.1", "port": 5061}
    assert d["destination"] == {"ip": "10.0.0.2", "port": 5060}
    assert d["network"]["transport"] == "udp" and d["network"]["protocol"] == "sip"
    assert d["sip"]["call_id"] == "call-1@example.com" and d["sip"]["code"] == 200
    assert d["sip"]["from"]["uri"] == {"username": "alice", "original": "sip:alice@example.com"}
    call = d["lc"]["call"]
    assert call["state"] == "ended" and call["packets"] == {"sip": 7, "rtp": 101, "rtcp": 3}
    assert call["codecs"] == ["PCMU", "telephone-event"] and call["hunters"] == ["h1"]
    assert d["lc"]["filter_ids"] == ["alice"] and d["lc"]["captured"] is True
    assert rig.ingest.events == 3 and rig.ingest.events_by_dataset == {"sip": 3}
    assert oct(os.stat(rig.events.path).st_mode & 0o777) == "0o640"


def test_community_id_equals_the_reference():
    communityid = pytest.importorskip("communityid")
    cid = communityid.CommunityID()
    from lc.processor.eventlog import event_document

    for flow in [
        ("10.0.0.1", "10.0.0.2", 17, 5061, 5060),
        ("192.168.1.9", "10.9.8.7", 6, 5060, 40123),
        ("2001:db8::1", "2001:db8::2", 17, 5060, 5060),
    ]:
        s, d, proto, sp, dp = flow
        ev = call_event(1)
        ev.flow.CopyFrom(
            lc_pb2.FlowTuple(
                src_ip=ipaddress.ip_address(s).packed,
                dst_ip=ipaddress.ip_address(d).packed,
                src_port=sp,
                dst_port=dp,
                ip_proto=proto,
            )
        )
        make = communityid.FlowTuple.make_udp if proto == 17 else communityid.FlowTuple.make_tcp
        want = cid.calc(make(s, d, sp, dp))
        assert event_document(ev, "h", "x")["network"]["community_id"] == want


def test_hostile_strings_stay_one_bounded_line(rig):
    ev = call_event(1)
    ev.call.from_user = 'al\x00ice\x1b[31m\n{"forged": 1}'
    ev.session_id = "é" * 5000
    rig.ingest.accept(batch(1, [ev]))
    raw = next((rig.tmp / "events").iterdir()).read_bytes()
    assert raw.count(b"\n") == 1
    d = json.loads(raw.decode("utf-8"))
    assert d["sip"]["from"]["uri"]["username"] == 'al\x00ice\x1b[31m\n{"forged": 1}'
    assert d["lc"]["session_id"] == "é" * 1024


def test_malformed_events_are_skipped_and_counted(rig):
    bad = call_event(2)
    bad.flow.src_ip = b"\x01\x02\x03"
    ack, n, _ = rig.ingest.accept(batch(1, [call_event(1), bad, call_event(3)]))
    assert n == 2 and not ack.duplicate
    assert [d["event"]["id"] for d in rig.lines()] == ["h1:7:1:0", "h1:7:1:2"]
    assert rig.ingest.bad_events == 1


def test_a_resent_batch_writes_its_events_once(rig):
    b = batch(1, [call_event(1)])
    for _ in range(3):
        rig.ingest.accept(b)
    assert len(rig.lines()) == 1


def test_a_batch_that_fails_elsewhere_leaves_no_event(rig):
    """The unified PCAP refuses a link type above 65535 (issue 9 item 4): that batch
    fails alone, its events are taken back, the group's other batches are written."""
    good1, good2 = batch(1, [call_event(1)]), batch(3, [call_event(3)])
    bad = batch(2, [call_event(2)], linktype=70000)
    replies: list = []
    rig.ingest._write_group(_items((good1, bad, good2), replies))  # one group
    assert isinstance(replies[0], lc_pb2.Ack) and isinstance(replies[2], lc_pb2.Ack)
    assert isinstance(replies[1], LcError) and "70000" in str(replies[1])
    assert [d["lc"]["session_id"] for d in rig.lines()] == [
        "call-1@example.com", "call-3@example.com",
    ]  # fmt: skip
    assert not rig.ledger.written("h1", 7, 2) and rig.ledger.written("h1", 7, 3)


def _items(batches, replies: list):
    from lc.common.wire import unpack_batch
    from lc.processor.ingest import _Item

    return [
        _Item(b.hunter_id, b.epoch, b.sequence, unpack_batch(b), replies.append, 100)
        for b in batches
    ]


def test_cut_back_after_a_crash(tmp_path):
    r = Rig(tmp_path)
    r.ingest.accept(batch(1, [call_event(1), call_event(2)]))
    path = r.events.path
    committed = os.path.getsize(path)
    # A crash while a batch was written and not committed: its lines are on disk.
    with open(path, "ab") as f:
        f.write(b'{"event": {"id": "h1:7:2:0"}}\n{"torn')
    r.ledger.close()  # (the process died: nothing else is closed or committed)
    r2 = Rig(tmp_path)
    assert r2.events.path == path and os.path.getsize(path) == committed
    assert any("continuing" in n for n in r2.events.notes)
    r2.ingest.accept(batch(2, [call_event(3)]))
    assert [d["event"]["id"] for d in r2.lines()] == ["h1:7:1:0", "h1:7:1:1", "h1:7:2:0"]
    r2.close()


def test_size_and_daily_rotation(tmp_path):
    now = [1_795_000_000.0]
    r = Rig(tmp_path, clock=lambda: now[0], rotate_size=600)
    for seq in range(1, 7):
        r.ingest.accept(batch(seq, [call_event(seq)]))
    files = sorted((tmp_path / "events").iterdir())
    assert len(files) >= 3
    day = files[0].name.split("-")[1]
    assert [f.name for f in files] == [
        f"events-{day}-{k:06d}.jsonl" for k in range(1, len(files) + 1)
    ]
    # Every file ends on a batch boundary, every line is whole.
    assert [d["event"]["id"] for d in r.lines()] == [f"h1:7:{s}:0" for s in range(1, 7)]
    now[0] += DAY
    r.ingest.accept(batch(7, [call_event(7)]))
    r.ingest.accept(batch(8, [call_event(8)]))
    newest = sorted((tmp_path / "events").iterdir())[-1]
    assert newest.name.split("-")[1] != day
    assert len(r.lines()) == 8
    r.close()


def test_a_tls_handshake_has_ecs_tls_fields() -> None:
    from lc.processor.eventlog import event_document

    ev = lc_pb2.Event(dataset="tls", start_ns=1, end_ns=2, session_id="c", captured=True)
    ev.flow.src_ip, ev.flow.dst_ip = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    ev.flow.src_port, ev.flow.dst_port, ev.flow.ip_proto = 50000, 443, 6
    t = ev.tls
    t.server_name = "www.example.com\x1b[31m"
    t.alpn.extend(["h2", "http/1.1"])
    t.client_version, t.server_version = 0x0304, 0x0304
    t.client_ciphers.extend([0x1301, 0xC02B, 0x9999])
    t.cipher, t.next_protocol = 0x1302, "h2"
    t.ja3, t.ja3s = "a" * 32, "b" * 32
    t.ja4, t.ja4s = "t13d1516h2_8daaf6152771_e5627efa2ab1", "t130200_1302_a56c5b993250"
    doc = event_document(ev, "h1", "h1:1:1:0")
    tls = doc["tls"]
    assert tls["client"]["server_name"].startswith("www.example.com")
    assert tls["client"]["ja3"] == "a" * 32 and tls["server"]["ja3s"] == "b" * 32
    assert tls["client"]["ja4"] == t.ja4 and tls["server"]["ja4s"] == t.ja4s
    assert (tls["version_protocol"], tls["version"]) == ("tls", "1.3")
    assert tls["cipher"] == "TLS_AES_256_GCM_SHA384"
    assert tls["next_protocol"] == "h2"
    assert tls["client"]["supported_ciphers"] == [
        "TLS_AES_128_GCM_SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "0x9999",
    ]
    assert doc["event"]["dataset"] == "lc.tls" and doc["lc"]["tls"]["alpn"] == ["h2", "http/1.1"]


def test_an_http_transaction_has_ecs_http_url_and_user_agent_fields(rig):
    ev = lc_pb2.Event(
        dataset="http", start_ns=T0, end_ns=T0 + 2500, session_id="tcp:10.0.0.1:80-10.0.0.2:4000",
        flow=lc_pb2.FlowTuple(src_ip=bytes([10, 0, 0, 2]), dst_ip=bytes([10, 0, 0, 1]),
                              src_port=4000, dst_port=80, ip_proto=6),
        filter_ids=["kw"], captured=True,
        http=lc_pb2.HttpEvent(
            method="POST", host="example.com", target="/up?x=1", path="/up", query="x=1",
            version="1.1", status=503, reason="Busy", request_body_bytes=5,
            response_body_bytes=2, content_type="text/plain", referrer="http://a/",
            user_agent="curl/8", duration_ns=2500, ja4h="po11nn03enus_aaa_000_000",
            keywords=["secret"], request_body=b"hello", response_body=b"\xff\x00",
            transaction=2,
        ),
    )  # fmt: skip
    rig.ingest.accept(batch(1, [ev]))
    d = rig.lines()[0]
    assert d["http"] == {
        "version": "1.1",
        "request": {"method": "POST", "referrer": "http://a/",
                    "body": {"bytes": 5, "content": "hello"}},
        "response": {"status_code": 503, "mime_type": "text/plain", "body": {"bytes": 2}},
    }  # fmt: skip
    assert d["url"] == {"original": "/up?x=1", "path": "/up", "domain": "example.com",
                        "query": "x=1"}  # fmt: skip
    assert d["user_agent"] == {"original": "curl/8"}
    assert d["event"]["duration"] == 2500 and d["event"]["category"] == ["network", "web"]
    assert d["network"]["transport"] == "tcp" and d["destination"]["port"] == 80
    h = d["lc"]["http"]
    assert h["keywords"] == ["secret"] and h["ja4h"] == "po11nn03enus_aaa_000_000"
    assert h["response_body_base64"] == "/wA=" and h["transaction"] == 2


def test_an_email_message_has_the_issues_ecs_fields(rig):
    # What `lc hunt email` sends for a message, as the event log writes it: every ECS name
    # the issue lists (email.*, lc.smtp.*, lc.imap.mailbox, lc.email.command), wire
    # strings made safe, nothing invented.
    ev = lc_pb2.Event(
        dataset="email", start_ns=T0, end_ns=T0 + 5, session_id="tcp:10.0.0.2:40000-10.0.0.1:25",
        flow=lc_pb2.FlowTuple(src_ip=bytes([10, 0, 0, 2]), dst_ip=bytes([10, 0, 0, 1]),
                              src_port=40000, dst_port=25, ip_proto=6),
        filter_ids=["a"], captured=True,
        email=lc_pb2.EmailEvent(
            protocol="smtp", command="DATA", direction="outbound",
            from_address=["dave@example.org"], to_address=["bob@example.com", "carol@example.com"],
            cc_address=["erin@example.com"], reply_to=["r@example.org"],
            subject="Grüße\x1b[31m" + "x" * 2000, message_id="m1@example.org",
            origination_ns=1_704_103_200 * NS + 250_000_000, content_type="multipart/mixed",
            attachments=["€ rates.pdf"], helo="client.lc.test", mail_from="dave@example.org",
            rcpt_to=["bob@example.com", "carol@example.com"], user="dave", size=1234,
            truncated=True, complete=True, body="Hallo", x_mailer="mutt",
        ),
    )  # fmt: skip
    imap = lc_pb2.Event(
        dataset="email", start_ns=T0, end_ns=T0, session_id="i", captured=True,
        flow=lc_pb2.FlowTuple(src_ip=bytes([10, 0, 0, 2]), dst_ip=bytes([10, 0, 0, 1]),
                              src_port=40001, dst_port=143, ip_proto=6),
        email=lc_pb2.EmailEvent(protocol="imap", command="FETCH", direction="inbound",
                                mailbox="INBOX/Entwürfe", complete=False),
    )  # fmt: skip
    tls = lc_pb2.Event(
        dataset="email", start_ns=T0, end_ns=T0, session_id="t", captured=True,
        flow=lc_pb2.FlowTuple(src_ip=bytes([10, 0, 0, 2]), dst_ip=bytes([10, 0, 0, 1]),
                              src_port=40002, dst_port=993, ip_proto=6),
        email=lc_pb2.EmailEvent(protocol="imaps", tls_sni="mail.example.net",
                                tls_version=0x0304, complete=True),
    )  # fmt: skip
    rig.ingest.accept(batch(1, [ev, imap, tls]))
    d, i, t = rig.lines()
    assert d["event"]["dataset"] == "lc.email"
    e = d["email"]
    assert e["from"] == {"address": ["dave@example.org"]}
    assert e["to"] == {"address": ["bob@example.com", "carol@example.com"]}
    assert e["cc"] == {"address": ["erin@example.com"]}
    assert e["reply_to"] == {"address": ["r@example.org"]}
    # Bounded (1,024 characters); a control character stays, escaped by JSON.
    assert e["subject"] == ("Grüße\x1b[31m" + "x" * 2000)[:1024]
    assert "\\u001b" in (rig.tmp / "events").joinpath(os.listdir(rig.tmp / "events")[0]).read_text()
    assert e["message_id"] == "m1@example.org"
    assert e["origination_timestamp"] == "2024-01-01T10:00:00.250Z"
    assert e["content_type"] == "multipart/mixed"
    assert e["attachments"] == [{"file": {"name": "€ rates.pdf"}}]
    assert e["direction"] == "outbound" and e["x_mailer"] == "mutt"
    assert d["lc"]["smtp"] == {"helo": "client.lc.test", "mail_from": "dave@example.org",
                               "rcpt_to": ["bob@example.com", "carol@example.com"]}  # fmt: skip
    assert d["lc"]["email"] == {"protocol": "smtp", "command": "DATA", "user": "dave",
                                "size": 1234, "truncated": True, "complete": True,
                                "body": "Hallo"}  # fmt: skip
    assert "imap" not in d["lc"] and "tls" not in d
    assert d["destination"]["port"] == 25 and d["network"]["transport"] == "tcp"
    assert i["lc"]["imap"] == {"mailbox": "INBOX/Entwürfe"}
    assert i["lc"]["email"] == {"protocol": "imap", "command": "FETCH", "complete": False}
    assert i["email"] == {"direction": "inbound"}
    assert t["tls"] == {"client": {"server_name": "mail.example.net"}, "version_code": 0x0304}
    assert t["lc"]["email"]["protocol"] == "imaps" and "email" not in t
    # ECS network.protocol is the application protocol (it was "email", the dataset).
    assert [x["network"]["protocol"] for x in (d, i, t)] == ["smtp", "imap", "imaps"]
