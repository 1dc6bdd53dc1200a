"""Tests for lc.common.imap: the rules of the module docstring on hand-written sessions,
and hypothesis over real and hand-written sessions (any split, any interleaving: the
same events) and over hostile bytes (no exception, a clean give-up).

The tshark/Arkime comparisons are in test_imap_corpus.py.
"""

from __future__ import annotations

import functools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mailcorpus import CORPUS, Segment, by_kind, run, sessions, split_segments

from lc.common.imap import (
    ImapCommand,
    ImapResponse,
    ImapSession,
    ImapUntagged,
    _section_kind,
    decode_mailbox,
)
from lc.common.mailmsg import MailMessage, MailParseError

C, S = True, False
GREET = (S, b"* OK IMAP4rev1 ready\r\n")
MSG = b"From: Ann <ann@example.org>\r\nSubject: lit\r\n\r\nline one\r\n)\r\n* 9 FETCH\r\n"


def talk(*steps: tuple[bool, bytes], **limits: int) -> tuple[ImapSession, list]:
    sess = ImapSession(**limits)
    events: list = []
    for ts, (from_client, data) in enumerate(steps, 1):
        events += sess.feed(from_client, data, ts)
    return sess, events


def of(events: list, kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


def responses(events: list) -> list[tuple[str, str, str | None]]:
    return [
        (r.tag, r.status, r.command.name if r.command else None) for r in of(events, ImapResponse)
    ]


RICH = [
    GREET,
    (C, b"a1 LOGIN {4}\r\n"),
    (S, b"+ go\r\n"),
    (C, b"ann1 {6}\r\n"),
    (S, b"+ go\r\n"),
    (C, b"s3cret\r\n"),
    (S, b"a1 OK logged in\r\n"),
    (C, b'a2 SELECT "&AMk-t&AOk-"\r\na3 FETCH 1 (FLAGS BODY[])\r\n'),
    (S, b"* 3 EXISTS\r\na2 OK [READ-WRITE] done\r\n"),
    (S, b"* 1 FETCH (FLAGS (\\Seen) BODY[] {%d}\r\n" % len(MSG) + MSG[:20]),
    (S, MSG[20:] + b")\r\na3 OK fetched\r\n"),
    (C, b"a4 UID FETCH 7 (BODY.PEEK[HEADER] BODY.PEEK[TEXT])\r\n"),
    (
        S,
        b"* 2 FETCH (UID 7 BODY[HEADER] {22}\r\nSubject: two\r\nX: y\r\n\r\n"
        b" BODY[TEXT] {9}\r\nthe text\n)\r\na4 OK done\r\n",
    ),
    (C, b"a5 APPEND Sent (\\Seen) {%d}\r\n" % len(MSG)),
    (S, b"+ Ready\r\n"),
    (C, MSG + b"\r\n"),
    (S, b"a5 OK appended\r\n"),
    (C, b'a6 APPEND Drafts {5+}\r\nabcde\r\na7 SEARCH FROM "ann"\r\n'),
    (S, b"a6 OK [APPENDUID 1 2] ok\r\n* SEARCH 1 3\r\na7 OK searched\r\n"),
    (C, b"a8 IDLE\r\n"),
    (S, b"+ idling\r\n* 4 EXISTS\r\n"),
    (C, b"DONE\r\n"),
    (S, b"a8 OK idle done\r\n"),
    (C, b"a9 AUTHENTICATE PLAIN\r\n"),
    (S, b"+ \r\n"),
    (C, b"AGFubjEAczNjcmV0\r\n"),
    (S, b"a9 NO [AUTHENTICATIONFAILED] no\r\n"),
    (C, b"b1 CLOSE\r\nb2 LOGOUT\r\n"),
    (S, b"b1 OK closed\r\n* BYE\r\nb2 OK bye\r\n"),
]


def test_a_rich_session() -> None:
    sess, ev = talk(*RICH)
    cmds = [(c.tag, c.name, c.args, c.mailbox) for c in of(ev, ImapCommand)]
    assert cmds == [
        ("a1", "LOGIN", "ann1", ""),
        ("a2", "SELECT", '"&AMk-t&AOk-"', "Été"),
        ("a3", "FETCH", "1 (FLAGS BODY[])", ""),
        ("a4", "UID FETCH", "7 (BODY.PEEK[HEADER] BODY.PEEK[TEXT])", ""),
        ("a5", "APPEND", f"Sent (\\Seen) {{{len(MSG)}}}", "Sent"),
        ("a6", "APPEND", "Drafts {5}", "Drafts"),
        ("a7", "SEARCH", 'FROM "ann"', ""),
        ("a8", "IDLE", "", ""),
        ("", "DONE", "", ""),
        ("a9", "AUTHENTICATE", "PLAIN", ""),
        ("b1", "CLOSE", "", ""),
        ("b2", "LOGOUT", "", ""),
    ]
    assert responses(ev) == [
        ("a1", "OK", "LOGIN"),
        ("a2", "OK", "SELECT"),
        ("a3", "OK", "FETCH"),
        ("a4", "OK", "UID FETCH"),
        ("a5", "OK", "APPEND"),
        ("a6", "OK", "APPEND"),
        ("a7", "OK", "SEARCH"),
        ("a8", "OK", "IDLE"),
        ("a9", "NO", "AUTHENTICATE"),
        ("b1", "OK", "CLOSE"),
        ("b2", "OK", "LOGOUT"),
    ]
    untagged = [(u.number, u.name, u.text) for u in of(ev, ImapUntagged)]
    assert (None, "SEARCH", "1 3") in untagged and (4, "EXISTS", "") in untagged
    assert (1, "FETCH", f"(FLAGS (\\Seen) BODY[] {{{len(MSG)}}})") in untagged
    fetched, split, appended, small = of(ev, MailMessage)
    assert (fetched.command, fetched.mailbox, fetched.subject, fetched.user) == (
        "FETCH",
        "Été",
        "lit",
        "ann1",
    )
    assert fetched.body == b"line one\r\n)\r\n* 9 FETCH\r\n"  # a literal holds anything
    assert (split.subject, split.body, split.mailbox) == ("two", b"the text\n", "Été")
    assert (appended.command, appended.mailbox, appended.subject) == ("APPEND", "Sent", "lit")
    assert (small.mailbox, small.body) == ("Drafts", b"")
    text = repr(ev)
    assert "s3cret" not in text and "AGFubjEA" not in text
    assert sess.counters["secret_lines"] == 1
    assert sess.mailbox == ""  # CLOSE
    assert not sess.gave_up


def test_a_refused_synchronising_literal_ends_the_command() -> None:
    _, ev = talk(
        GREET,
        (C, b"a1 APPEND Big {99999999}\r\n"),
        (S, b"a1 NO [TOOBIG] too big\r\n"),
        (C, b"a2 NOOP\r\n"),
        (S, b"a2 OK\r\n"),
    )
    assert [(c.tag, c.name) for c in of(ev, ImapCommand)] == [("a1", "APPEND"), ("a2", "NOOP")]
    assert responses(ev) == [("a1", "NO", "APPEND"), ("a2", "OK", "NOOP")]
    assert of(ev, MailMessage) == []


def test_the_client_waits_for_the_continuation() -> None:
    sess = ImapSession()
    ev = sess.feed_client(b"a1 APPEND box {5}\r\nhello\r\n", 1)
    assert ev == []  # "hello" cannot be read before the server's "+"
    ev = sess.feed_server(b"+ go\r\n", 2)
    assert [m.body for m in of(ev, MailMessage)] == [b""]
    assert [c.name for c in of(ev, ImapCommand)] == ["APPEND"]


def test_a_tagged_response_before_its_command_waits_for_it() -> None:
    sess = ImapSession()
    ev = sess.feed_server(
        b"* OK hi\r\na1 OK [READ-ONLY] examined\r\n* 1 FETCH (RFC822 {4}\r\nA: b)\r\n", 1
    )
    assert responses(ev) == []
    ev = sess.feed_client(b"a1 EXAMINE INBOX\r\n", 2)
    assert responses(ev) == [("a1", "OK", "EXAMINE")]
    assert [m.mailbox for m in of(ev, MailMessage)] == ["INBOX"]


def test_starttls() -> None:
    sess, ev = talk(GREET, (C, b"t1 STARTTLS\r\n"), (S, b"t1 OK begin\r\n\x16\x03\x01"))
    assert sess.upgraded and sess.counters["ignored_bytes"] == 3
    sess, ev = talk(GREET, (C, b"t1 STARTTLS\r\n"), (S, b"t1 BAD no\r\n"), (C, b"t2 NOOP\r\n"))
    assert not sess.upgraded and [c.tag for c in of(ev, ImapCommand)] == ["t1", "t2"]


def test_sasl_ir_and_the_answer_after_a_challenge() -> None:
    # The server's verdict cannot come before the client's answer to the challenge:
    # fed first, it waits, so the answer is never read as a command.
    sess = ImapSession()
    ev = sess.feed_client(b"x AUTHENTICATE LOGIN\r\n", 1)
    ev += sess.feed_server(b"* OK\r\n+ VXNlcm5hbWU6\r\nx OK welcome\r\n", 2)
    ev += sess.feed_client(b"YW5u\r\ny LOGOUT\r\n", 3)
    assert [(c.tag, c.name, c.args) for c in of(ev, ImapCommand)] == [
        ("x", "AUTHENTICATE", "LOGIN"),
        ("y", "LOGOUT", ""),
    ]
    assert "YW5u" not in repr(ev)
    _, ev = talk(GREET, (C, b"x AUTHENTICATE PLAIN AGFubgBzZWNyZXQ=\r\n"), (S, b"x OK\r\n"))
    assert [c.args for c in of(ev, ImapCommand)] == ["PLAIN"] and "AGFub" not in repr(ev)


def test_the_end_of_idle_waits_for_done() -> None:
    # Found by the interleaving test: the server's OK to IDLE, fed before the
    # client's DONE, must not make DONE a bad command.
    sess = ImapSession()
    ev = sess.feed_client(b"i IDLE\r\n", 1)
    ev += sess.feed_server(b"* OK\r\n+ idling\r\n* 2 EXISTS\r\ni OK done\r\n", 2)
    ev += sess.feed_client(b"DONE\r\nj NOOP\r\n", 3)
    assert [c.name for c in of(ev, ImapCommand)] == ["IDLE", "DONE", "NOOP"]
    assert responses(ev) == [("i", "OK", "IDLE")]
    _, ev = talk(
        GREET, (C, b"i IDLE\r\n"), (S, b"i BAD no\r\n"), (C, b"j NOOP\r\n"), (S, b"j OK\r\n")
    )
    assert responses(ev) == [("i", "BAD", "IDLE"), ("j", "OK", "NOOP")]


def test_big_literals_are_skipped_not_kept() -> None:
    body = b"Subject: big\r\n\r\n" + b"x" * 100_000
    sess, ev = talk(
        GREET,
        (C, b"f FETCH 1 BODY[]\r\n"),
        (S, b"* 1 FETCH (BODY[] {%d}\r\n" % len(body) + body + b")\r\nf OK\r\n"),
        max_body=1000,
        max_header=100,
    )
    (m,) = of(ev, MailMessage)
    assert (m.subject, len(m.body), m.size, m.truncated) == ("big", 1000, len(body), True)
    assert len(sess._s) == 0


def test_unfinished_fetch_at_close() -> None:
    sess, _ = talk(
        GREET, (C, b"f FETCH 1 RFC822\r\n"), (S, b"* 1 FETCH (RFC822 {50}\r\nSubject: c\r\n")
    )
    (m,) = of(sess.close(), MailMessage)
    assert (m.subject, m.complete) == ("c", False)


def test_not_imap_gives_up() -> None:
    sess, ev = talk(GREET, (S, b"220 smtp.example ESMTP\r\n"))
    assert sess.gave_up and isinstance(sess.error, MailParseError)
    assert len(of(ev, ImapUntagged)) == 1
    sess, _ = talk(GREET, (C, b"\x00\x01\x02\r\n" * 3), max_bad_lines=3)
    assert sess.gave_up


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (b"INBOX", "INBOX"),
        (b"&AMk-t&AOk-", "Été"),
        (b"~peter/mail/&U,BTFw-/&ZeVnLIqe-", "~peter/mail/台北/日本語"),
        (b"A&-B", "A&B"),
        (b"bad&@@@-", "bad&@@@-"),
        (b"open&AMk", "open&AMk"),
        ("Été".encode(), "Été"),
    ],
)
def test_decode_mailbox(raw: bytes, name: str) -> None:
    assert decode_mailbox(raw) == name


@pytest.mark.parametrize(
    ("before", "kind"),
    [
        (b"(RFC822 ", "full"),
        (b"(UID 1 BODY[] ", "full"),
        (b"BODY[HEADER.FIELDS (DATE FROM)] ", "header"),
        (b"RFC822.HEADER ", "header"),
        (b"BODY[TEXT] ", "text"),
        (b"RFC822.TEXT ", "text"),
        (b"BODY[1.2] ", "part"),
        (b"BODY[]<0> ", "full"),
        (b"BODY[]<1024> ", "part"),
        (b"BODY[1.MIME] ", ""),
        (b'ENVELOPE ("date" ', ""),
    ],
)
def test_section_kind(before: bytes, kind: str) -> None:
    assert _section_kind(before) == kind


# --- hypothesis over real and hand-written sessions -----------------------------------------


@functools.cache
def all_sessions() -> list[list[Segment]]:
    out = [[Segment(i, i, c, d) for i, (c, d) in enumerate(RICH, 1)]]
    for capture in ("imap/arkime_imap.pcap", "imap/zeek_imap-starttls.pcap"):
        if (CORPUS / capture).is_file():
            out += [s.segments for s in sessions(CORPUS / capture, {143}) if s.segments]
    return out


@functools.cache
def reference(index: int) -> dict:
    return by_kind(run(ImapSession(max_blocked=1 << 30), all_sessions()[index]))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_split_gives_the_same_events(data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(all_sessions()) - 1))
    cuts = data.draw(st.lists(st.integers(0, 2000), max_size=40))
    segments = split_segments(all_sessions()[index], cuts)
    assert by_kind(run(ImapSession(max_blocked=1 << 30), segments)) == reference(index)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_interleaving_gives_the_same_events(data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(all_sessions()) - 1))
    segs = all_sessions()[index]
    client = [s for s in segs if s.from_client]
    server = [s for s in segs if not s.from_client]
    order = data.draw(st.permutations([True] * len(client) + [False] * len(server)))
    ci, si = iter(client), iter(server)
    mixed = [next(ci) if side else next(si) for side in order]
    assert by_kind(run(ImapSession(max_blocked=1 << 30), mixed)) == reference(index)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=300)), max_size=12))
def test_random_bytes_never_raise(steps: list[tuple[bool, bytes]]) -> None:
    sess = ImapSession(max_line=64, max_blocked=256, max_body=128)
    for ts, (from_client, data) in enumerate(steps):
        assert isinstance(sess.feed(from_client, data, ts), list)
    sess.close()
    assert sess.error is None or isinstance(sess.error, MailParseError)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_sessions_never_raise(data: st.DataObject) -> None:
    segs = all_sessions()[data.draw(st.integers(0, len(all_sessions()) - 1))]
    out = []
    for seg in segs:
        raw = bytearray(seg.data)
        if raw and data.draw(st.integers(0, 3)) == 0:
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i : i + data.draw(st.integers(0, 4))] = data.draw(
                st.sampled_from([b"{5}\r\n", b"{0}", b"\r\n", b"+ ", b"* ", b"~{", b"\x00"])
                | st.binary(max_size=6)
            )
        out.append(Segment(seg.frame, seg.ts_ns, seg.from_client, bytes(raw)))
    sess = ImapSession(max_blocked=4096)
    for e in run(sess, out):
        if isinstance(e, MailMessage):
            e.ecs()
    assert sess.error is None or isinstance(sess.error, MailParseError)


def test_unanswered_idles_are_bounded() -> None:
    sess, _ = talk((C, b"i IDLE\r\nDONE\r\n" * 50), max_pending=8)
    assert len(sess._waiters) <= 8 and sess.counters["pending_dropped"] >= 42
