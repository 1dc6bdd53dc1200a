"""Tests for lc.common.pop3: the rules of the module docstring on hand-written sessions,
and hypothesis over real sessions (any split, any interleaving: the same events) and
over hostile bytes (no exception, a clean give-up).

The tshark/Zeek/Suricata comparisons are in test_pop3_corpus.py.
"""

from __future__ import annotations

import functools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mailcorpus import CORPUS, Segment, by_kind, run, sessions, split_segments

from lc.common.mailmsg import MailMessage, MailParseError
from lc.common.pop3 import Pop3Command, Pop3Reply, Pop3Session

C, S = True, False
GREET = (S, b"+OK POP3 ready <1.2@host>\r\n")


def talk(*steps: tuple[bool, bytes], **limits: int) -> tuple[Pop3Session, list]:
    sess = Pop3Session(**limits)
    events: list = []
    for ts, (from_client, data) in enumerate(steps, 1):
        events += sess.feed(from_client, data, ts)
    return sess, events


def of(events: list, kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


def replies(events: list) -> list[tuple[str | None, bool, str]]:
    return [(r.command.verb if r.command else None, r.ok, r.text) for r in of(events, Pop3Reply)]


def test_a_session_with_retr_top_list_and_pipelining() -> None:
    message = b"From: a@x.org\r\nSubject: s\r\n\r\n..dot\r\nbody\r\n"
    stuffed = message.replace(b"\r\n..", b"\r\n...")
    sess, ev = talk(
        GREET,
        (C, b"USER alice\r\n"),
        (S, b"+OK\r\n"),
        (C, b"PASS s3cret\r\n"),
        (S, b"+OK logged in\r\n"),
        (C, b"STAT\r\nLIST\r\nUIDL 1\r\n"),  # pipelined (RFC 2449)
        (S, b"+OK 1 120\r\n+OK 1 message\r\n1 120\r\n.\r\n+OK 1 uid-1\r\n"),
        (C, b"RETR 1\r\n"),
        (S, b"+OK 120 octets\r\n" + stuffed[:20]),
        (S, stuffed[20:] + b".\r\n"),
        (C, b"TOP 1 0\r\nDELE 1\r\nQUIT\r\n"),
        (S, b"+OK\r\nFrom: a@x.org\r\nSubject: s\r\n\r\n.\r\n+OK deleted\r\n+OK bye\r\n"),
    )
    assert [(c.verb, c.arg) for c in of(ev, Pop3Command)] == [
        ("USER", "alice"),
        ("PASS", ""),
        ("STAT", ""),
        ("LIST", ""),
        ("UIDL", "1"),
        ("RETR", "1"),
        ("TOP", "1 0"),
        ("DELE", "1"),
        ("QUIT", ""),
    ]
    assert replies(ev) == [
        (None, True, "POP3 ready <1.2@host>"),
        ("USER", True, ""),
        ("PASS", True, "logged in"),
        ("STAT", True, "1 120"),
        ("LIST", True, "1 message"),
        ("UIDL", True, "1 uid-1"),
        ("RETR", True, "120 octets"),
        ("TOP", True, ""),
        ("DELE", True, "deleted"),
        ("QUIT", True, "bye"),
    ]
    assert of(ev, Pop3Reply)[4].lines == ("1 120",)
    retr, top = of(ev, MailMessage)
    assert (retr.command, retr.body, retr.user, retr.ts_ns, retr.end_ns) == (
        "RETR",
        b"..dot\r\nbody\r\n",
        "alice",
        9,
        10,
    )
    assert (top.command, top.subject, top.body) == ("TOP", "s", b"")
    assert "s3cret" not in repr(ev)
    assert sess.user == "alice"


def test_err_is_single_line_even_for_retr() -> None:
    _, ev = talk(GREET, (C, b"RETR 9\r\nNOOP\r\n"), (S, b"-ERR no such message\r\n+OK\r\n"))
    assert replies(ev)[1:] == [("RETR", False, "no such message"), ("NOOP", True, "")]
    assert of(ev, MailMessage) == []


def test_capa_and_auth_list_are_multi_line() -> None:
    _, ev = talk(
        GREET,
        (C, b"CAPA\r\nAUTH\r\n"),
        (S, b"+OK caps\r\nTOP\r\nSASL PLAIN\r\n.\r\n+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n"),
    )
    capa, auth = of(ev, Pop3Reply)[1:]
    assert capa.lines == ("TOP", "SASL PLAIN") and auth.lines == ("PLAIN", "LOGIN")


def test_auth_challenge_lines_are_secrets() -> None:
    sess, ev = talk(
        GREET,
        (C, b"AUTH PLAIN\r\n"),
        (S, b"+ \r\n"),
        (C, b"AGFsaWNlAHMzY3JldA==\r\n"),
        (S, b"+OK welcome\r\n"),
        (C, b"APOP bob c4c9334bac560ecc979e58001b3e22fb\r\n"),
        (S, b"-ERR no\r\n"),
    )
    assert [(c.verb, c.arg) for c in of(ev, Pop3Command)] == [("AUTH", "PLAIN"), ("APOP", "bob")]
    assert replies(ev)[1:] == [("AUTH", True, "welcome"), ("APOP", False, "no")]
    assert "AGFsaWNl" not in repr(ev) and "c4c9334b" not in repr(ev)
    assert sess.counters["secret_lines"] == 1 and sess.user == "bob"


def test_the_reply_after_a_challenge_waits_for_the_clients_answer() -> None:
    # Found by the interleaving test below: server bytes fed before the client's
    # answer to a challenge must not let that answer be read as a command.
    sess = Pop3Session()
    ev = sess.feed_client(b"AUTH PLAIN\r\n", 1)
    ev += sess.feed_server(b"+OK hi\r\n+ \r\n-ERR failed\r\n", 2)
    ev += sess.feed_client(b"AGFsaWNlAHMzY3JldA==\r\nQUIT\r\n", 3)
    assert [c.verb for c in of(ev, Pop3Command)] == ["AUTH", "QUIT"]
    assert replies(ev)[1] == ("AUTH", False, "failed")
    assert "AGFsaWNl" not in repr(ev)


def test_stls() -> None:
    sess, _ = talk(GREET, (C, b"STLS\r\n"), (S, b"+OK begin\r\n\x16\x03\x01"))
    assert sess.upgraded and sess.counters["ignored_bytes"] == 3
    sess, ev = talk(GREET, (C, b"STLS\r\n"), (S, b"-ERR no\r\n"), (C, b"QUIT\r\n"))
    assert not sess.upgraded and [c.verb for c in of(ev, Pop3Command)] == ["STLS", "QUIT"]


def test_a_status_line_before_its_command_waits_for_it() -> None:
    # Server bytes fed first: "+OK" cannot be read before knowing it answers RETR.
    sess = Pop3Session()
    ev = sess.feed_server(b"+OK hi\r\n+OK\r\nSubject: w\r\n\r\n.\r\n", 1)
    assert replies(ev) == [(None, True, "hi")]
    ev = sess.feed_client(b"RETR 1\r\n", 2)
    assert [m.subject for m in of(ev, MailMessage)] == ["w"]


def test_unfinished_retr_at_close() -> None:
    sess, _ = talk(GREET, (C, b"RETR 1\r\n"), (S, b"+OK\r\nSubject: cut\r\n\r\npart"))
    (msg,) = of(sess.close(), MailMessage)
    assert (msg.subject, msg.complete) == ("cut", False)


def test_not_pop3_gives_up() -> None:
    sess, ev = talk(GREET, (C, b"USER a\r\n"), (S, b"* OK IMAP4rev1\r\n"))
    assert sess.gave_up and isinstance(sess.error, MailParseError)
    assert len(of(ev, Pop3Reply)) == 1


# --- hypothesis over real sessions --------------------------------------------------------

CAPTURES = [
    "pop3/zeek_pop3.pcap",
    "pop3/suricata_pop3-02-bug-7709.pcap",
    "pop3/suricata_pop3.pcap",
    "pop3/zeek_pop3-starttls.pcap",
]


@functools.cache
def real_sessions() -> list[list[Segment]]:
    out = []
    for capture in CAPTURES:
        if (CORPUS / capture).is_file():
            out += [s.segments for s in sessions(CORPUS / capture, {110}) if s.segments]
    if not out:
        pytest.skip("capture corpus not found")
    return out


@functools.cache
def reference(index: int) -> dict:
    return by_kind(run(Pop3Session(max_blocked=1 << 30), real_sessions()[index]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_split_of_a_real_session_gives_the_same_events(data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(real_sessions()) - 1))
    cuts = data.draw(st.lists(st.integers(0, 2000), max_size=40))
    segments = split_segments(real_sessions()[index], cuts)
    got = by_kind(run(Pop3Session(max_blocked=1 << 30), segments))
    assert got == reference(index)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_interleaving_of_the_two_directions_gives_the_same_events(
    data: st.DataObject,
) -> None:
    index = data.draw(st.integers(0, len(real_sessions()) - 1))
    segs = real_sessions()[index]
    client = [s for s in segs if s.from_client]
    server = [s for s in segs if not s.from_client]
    order = data.draw(st.permutations([True] * len(client) + [False] * len(server)))
    ci, si = iter(client), iter(server)
    mixed = [next(ci) if side else next(si) for side in order]
    assert by_kind(run(Pop3Session(max_blocked=1 << 30), mixed)) == reference(index)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=300)), max_size=12))
def test_random_bytes_never_raise(steps: list[tuple[bool, bytes]]) -> None:
    sess = Pop3Session(max_line=64, max_blocked=256, max_body=128)
    for ts, (from_client, data) in enumerate(steps):
        assert isinstance(sess.feed(from_client, data, ts), list)
    sess.close()
    assert sess.error is None or isinstance(sess.error, MailParseError)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_real_sessions_never_raise(data: st.DataObject) -> None:
    segs = real_sessions()[data.draw(st.integers(0, len(real_sessions()) - 1))]
    out = []
    for seg in segs:
        raw = bytearray(seg.data)
        if raw and data.draw(st.integers(0, 3)) == 0:
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i : i + data.draw(st.integers(0, 4))] = data.draw(st.binary(max_size=6))
        out.append(Segment(seg.frame, seg.ts_ns, seg.from_client, bytes(raw)))
    sess = Pop3Session(max_blocked=4096)
    for e in run(sess, out):
        if isinstance(e, MailMessage):
            e.ecs()
    assert sess.error is None or isinstance(sess.error, MailParseError)
