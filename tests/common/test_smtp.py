"""Tests for lc.common.smtp: each rule of the module docstring on hand-written sessions,
and hypothesis over real sessions (any split, any interleaving: the same events) and
over hostile bytes (no exception, a clean give-up).

The tshark/Zeek/Arkime comparisons are in test_smtp_corpus.py.
"""

from __future__ import annotations

import functools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mailcorpus import CORPUS, Segment, by_kind, run, sessions, split_segments

from lc.common.errors import ValidationError
from lc.common.mailmsg import MailMessage, MailParseError
from lc.common.smtp import SmtpCommand, SmtpReply, SmtpSession, smtp_path

C, S = True, False


def talk(*steps: tuple[bool, bytes], **limits: int) -> tuple[SmtpSession, list]:
    """Feeds the steps (client or server, bytes) with increasing timestamps."""
    sess = SmtpSession(**limits)
    events: list = []
    for ts, (from_client, data) in enumerate(steps, 1):
        events += sess.feed(from_client, data, ts)
    return sess, events


def of(events: list, kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


def pairs(events: list) -> list[tuple[str | None, int]]:
    return [(r.command.verb if r.command else None, r.code) for r in of(events, SmtpReply)]


GREET = (S, b"220 mx.example ESMTP\r\n")
EHLO = [
    (C, b"EHLO client.example\r\n"),
    (S, b"250-mx.example\r\n250-PIPELINING\r\n250 CHUNKING\r\n"),
]


def test_a_plain_session() -> None:
    sess, ev = talk(
        GREET,
        *EHLO,
        (C, b"MAIL FROM:<alice@example.org> SIZE=100\r\n"),
        (S, b"250 ok\r\n"),
        (C, b"RCPT TO:<bob@example.net>\r\n"),
        (S, b"250 ok\r\n"),
        (C, b"DATA\r\n"),
        (S, b"354 go ahead\r\n"),
        (C, b"From: Alice <alice@example.org>\r\nSubject: hi\r\n\r\nhello\r\n.\r\n"),
        (S, b"250 queued as X\r\n"),
        (C, b"QUIT\r\n"),
        (S, b"221 bye\r\n"),
    )
    assert [(c.verb, c.arg) for c in of(ev, SmtpCommand)] == [
        ("EHLO", "client.example"),
        ("MAIL", "FROM:<alice@example.org> SIZE=100"),
        ("RCPT", "TO:<bob@example.net>"),
        ("DATA", ""),
        ("QUIT", ""),
    ]
    assert pairs(ev) == [
        (None, 220),
        ("EHLO", 250),
        ("MAIL", 250),
        ("RCPT", 250),
        ("DATA", 354),
        (".", 250),
        ("QUIT", 221),
    ]
    assert of(ev, SmtpReply)[1].lines == ("mx.example", "PIPELINING", "CHUNKING")
    (msg,) = of(ev, MailMessage)
    assert (msg.helo, msg.mail_from, msg.rcpt_to) == (
        "client.example",
        "alice@example.org",
        ("bob@example.net",),
    )
    assert msg.subject == "hi" and msg.body == b"hello\r\n" and msg.command == "DATA"
    assert (msg.ts_ns, msg.end_ns, msg.complete) == (10, 10, True)
    assert not sess.gave_up and not sess.upgraded


def test_pipelining_pairs_replies_in_order() -> None:
    _, ev = talk(
        GREET,
        *EHLO,
        (C, b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\nRCPT TO:<c@z.org>\r\nDATA\r\n"),
        (S, b"250 sender ok\r\n250 rcpt ok\r\n"),
        (S, b"550 no such user\r\n354 go\r\n"),
        (C, b"Subject: p\r\n\r\nbody\r\n.\r\n"),
        (S, b"250 ok\r\n"),
    )
    assert pairs(ev)[2:] == [("MAIL", 250), ("RCPT", 250), ("RCPT", 550), ("DATA", 354), (".", 250)]
    (msg,) = of(ev, MailMessage)
    assert msg.rcpt_to == ("b@y.org", "c@z.org")  # as sent, whatever the server said


def test_dot_stuffing_and_an_end_split_across_segments() -> None:
    sess, ev = talk(
        GREET,
        (C, b"MAIL FROM:<a@x.org>\r\n"),
        (S, b"250 ok\r\n"),
        (C, b"DATA\r\n"),
        (S, b"354 go\r\n"),
        (C, b"Subject: s\r\n\r\n..leading dot\r\n."),
        (C, b"\rnot the end\r\n."),
        (C, b"\r"),
    )
    assert of(ev, MailMessage) == []
    more = sess.feed_client(b"\n", 9)
    (msg,) = of(more, MailMessage)
    assert msg.body == b".leading dot\r\n\rnot the end\r\n"
    assert msg.end_ns == 9


def test_bdat_chunks() -> None:
    chunk1 = b"Subject: b\r\n\r\nfirst\r\n.\r\n"  # no stuffing in BDAT: the dot is data
    chunk2 = b"second\r\n"
    _, ev = talk(
        GREET,
        (C, b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\n"),
        (S, b"250 ok\r\n250 ok\r\n"),
        (C, b"BDAT %d\r\n" % len(chunk1) + chunk1[:10]),
        (C, chunk1[10:] + b"BDAT %d LAST\r\n" % len(chunk2) + chunk2),
        (S, b"250 chunk\r\n250 message ok\r\n"),
        (C, b"QUIT\r\n"),
    )
    (msg,) = of(ev, MailMessage)
    assert msg.command == "BDAT"
    assert msg.body == b"first\r\n.\r\nsecond\r\n"
    assert msg.rcpt_to == ("b@y.org",)
    assert [c.verb for c in of(ev, SmtpCommand)] == ["MAIL", "RCPT", "BDAT", "BDAT", "QUIT"]
    assert pairs(ev)[-2:] == [("BDAT", 250), ("BDAT", 250)]


def test_rset_and_several_messages() -> None:
    def data(subject: bytes) -> list[tuple[bool, bytes]]:
        return [
            (C, b"DATA\r\n"),
            (S, b"354 go\r\n"),
            (C, b"Subject: " + subject + b"\r\n\r\nx\r\n.\r\n"),
            (S, b"250 ok\r\n"),
        ]

    _, ev = talk(
        GREET,
        *EHLO,
        (C, b"MAIL FROM:<old@x.org>\r\nRCPT TO:<old@y.org>\r\nRSET\r\n"),
        (S, b"250 ok\r\n250 ok\r\n250 reset\r\n"),
        (C, b"MAIL FROM:<one@x.org>\r\nRCPT TO:<r1@y.org>\r\n"),
        (S, b"250 ok\r\n250 ok\r\n"),
        *data(b"first"),
        (C, b"MAIL FROM:<two@x.org>\r\nRCPT TO:<r2@y.org>\r\n"),
        (S, b"250 ok\r\n250 ok\r\n"),
        *data(b"second"),
    )
    got = [(m.subject, m.mail_from, m.rcpt_to) for m in of(ev, MailMessage)]
    assert got == [("first", "one@x.org", ("r1@y.org",)), ("second", "two@x.org", ("r2@y.org",))]


def test_auth_keeps_the_mechanism_and_never_the_secret() -> None:
    plain = b"AGFsaWNlAHMzY3JldA=="  # \0alice\0s3cret
    sess, ev = talk(
        GREET,
        *EHLO,
        (C, b"AUTH PLAIN " + plain + b"\r\n"),
        (S, b"235 ok\r\n"),
        (C, b"AUTH LOGIN\r\n"),
        (S, b"334 VXNlcm5hbWU6\r\n"),
        (C, b"YWxpY2U=\r\n"),
        (S, b"334 UGFzc3dvcmQ6\r\n"),
        (C, b"czNjcmV0\r\n"),
        (S, b"535 no\r\n"),
        (C, b"QUIT\r\n"),
    )
    assert [(c.verb, c.arg) for c in of(ev, SmtpCommand)][1:] == [
        ("AUTH", "PLAIN"),
        ("AUTH", "LOGIN"),
        ("QUIT", ""),
    ]
    assert pairs(ev)[2:] == [("AUTH", 235), ("AUTH", 334), ("AUTH", 334), ("AUTH", 535)]
    text = repr(ev)
    for secret in ("AGFsaWNl", "YWxpY2U", "czNjcmV0", "s3cret"):
        assert secret not in text
    assert sess.counters["secret_lines"] == 2
    assert sess.auth_mechanism == "LOGIN"


def test_starttls_accepted_stops_parsing() -> None:
    sess, ev = talk(
        GREET,
        *EHLO,
        (C, b"STARTTLS\r\n\x16\x03\x01\x00\x05hello"),
        (S, b"220 go ahead\r\n\x16\x03\x03"),
        (C, b"\x17\x03\x03 more"),
    )
    assert sess.upgraded and not sess.gave_up
    assert pairs(ev)[-1] == ("STARTTLS", 220)
    assert sess.counters["ignored_bytes"] == 10 + 3 + 8
    assert sess.feed_server(b"anything", 9) == []


def test_starttls_refused_goes_on() -> None:
    sess, ev = talk(
        GREET,
        (C, b"STARTTLS\r\n"),
        (S, b"454 not now\r\n"),
        (C, b"MAIL FROM:<a@x.org>\r\n"),
        (S, b"250 ok\r\n"),
    )
    assert not sess.upgraded
    assert pairs(ev) == [(None, 220), ("STARTTLS", 454), ("MAIL", 250)]


def test_refused_data_leaves_the_client_in_commands() -> None:
    _, ev = talk(
        GREET,
        (C, b"MAIL FROM:<a@x.org>\r\nDATA\r\n"),
        (S, b"250 ok\r\n554 no valid recipients\r\n"),
        (C, b"QUIT\r\n"),
        (S, b"221 bye\r\n"),
    )
    assert of(ev, MailMessage) == []
    assert pairs(ev) == [(None, 220), ("MAIL", 250), ("DATA", 554), ("QUIT", 221)]


def test_a_capture_that_starts_mid_session_has_no_greeting() -> None:
    _, ev = talk((C, b"NOOP\r\n"), (S, b"250 ok\r\n"))
    assert pairs(ev) == [("NOOP", 250)]


def test_unsolicited_reply_comes_out_at_close() -> None:
    sess, ev = talk(GREET, (S, b"421 timeout\r\n"))
    assert pairs(ev) == [(None, 220)]
    assert pairs(sess.close()) == [(None, 421)]
    assert sess.counters["unpaired_replies"] == 1


def test_client_only_capture_still_gives_the_message() -> None:
    # The server's direction is missing: after max_blocked bytes (or at close)
    # the parser assumes the 354 it did not see.
    body = b"Subject: one-sided\r\n\r\n" + b"line\r\n" * 50
    sess, ev = talk(
        (C, b"EHLO c\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\nDATA\r\n"),
        (C, body + b".\r\nQUIT\r\n"),
        max_blocked=100,
    )
    (msg,) = of(ev, MailMessage)
    assert msg.subject == "one-sided" and msg.rcpt_to == ("b@y.org",)
    assert sess.counters["assumed_replies"] == 1
    sess, ev = talk((C, b"MAIL FROM:<a@x.org>\r\nDATA\r\n"), (C, b"Subject: c\r\n\r\n.\r\n"))
    assert of(ev, MailMessage) == []
    (msg,) = of(sess.close(), MailMessage)
    assert msg.subject == "c" and msg.complete


def test_unfinished_message_at_close() -> None:
    sess, _ = talk(GREET, (C, b"DATA\r\n"), (S, b"354 go\r\n"), (C, b"Subject: cut\r\n\r\npart"))
    (msg,) = of(sess.close(99), MailMessage)
    assert (msg.subject, msg.complete, msg.body) == ("cut", False, b"part")


def test_body_limit() -> None:
    _, ev = talk(
        GREET,
        (C, b"DATA\r\n"),
        (S, b"354 go\r\n"),
        (C, b"Subject: big\r\n\r\n" + b"x" * 5000 + b"\r\n.\r\n"),
        max_body=1000,
    )
    (msg,) = of(ev, MailMessage)
    assert len(msg.body) == 1000 and msg.truncated and msg.size == 16 + 5002


def test_gap_gives_up() -> None:
    sess, _ = talk(GREET)
    sess.gap(from_client=True)
    assert sess.gave_up and "missing" in str(sess.error)
    assert sess.feed_client(b"MAIL FROM:<a@b>\r\n", 3) == []


def test_a_server_that_is_not_smtp_gives_up_cleanly() -> None:
    sess, ev = talk(GREET, (C, b"EHLO x\r\n"), (S, b"HTTP/1.1 400 Bad Request\r\n\r\n"))
    assert sess.gave_up and isinstance(sess.error, MailParseError)
    assert pairs(ev) == [(None, 220)]


def test_client_garbage_gives_up_after_max_bad_lines() -> None:
    sess, ev = talk(GREET, (C, b"\x00\x01 junk\r\n" * 3), max_bad_lines=3)
    assert sess.gave_up
    assert len(of(ev, SmtpCommand)) == 2  # the lines before the give-up still come out
    sess, _ = talk(GREET, (C, b"\x00\x01 junk\r\n" * 2 + b"NOOP\r\n"), max_bad_lines=3)
    assert not sess.gave_up and sess.counters["bad_lines"] == 2


def test_an_overlong_command_line_is_counted_not_fatal() -> None:
    sess, ev = talk(GREET, (C, b"NOOP " + b"x" * 10_000 + b"\r\nQUIT\r\n"), max_line=256)
    assert [c.verb for c in of(ev, SmtpCommand)] == ["NOOP", "QUIT"]
    assert sess.counters["long_lines"] == 1 and not sess.gave_up


def test_pending_commands_are_bounded() -> None:
    sess, _ = talk((C, b"NOOP\r\n" * 50), max_pending=10)
    assert sess.counters["pending_dropped"] == 40


@pytest.mark.parametrize(
    ("arg", "keyword", "path"),
    [
        ("FROM:<a@b.org> SIZE=1", "FROM:", "a@b.org"),
        ("from: <a@b.org>", "FROM:", "a@b.org"),
        ("FROM:<>", "FROM:", ""),
        ("TO:<@relay.org,@r2.org:u@d.org>", "TO:", "u@d.org"),
        ("TO:bare@d.org NOTIFY=NEVER", "TO:", "bare@d.org"),
        ("TO <missing-colon@d.org>", "TO:", ""),
    ],
)
def test_smtp_path(arg: str, keyword: str, path: str) -> None:
    assert smtp_path(arg, keyword) == path


def test_limits_are_validated() -> None:
    with pytest.raises(ValidationError, match="max_body"):
        SmtpSession(max_body=0)
    with pytest.raises(ValidationError, match="max_line"):
        SmtpSession(max_line=10)


# --- hypothesis over real sessions --------------------------------------------------------

CAPTURES = [
    "smtp/zeek_smtp.pcap",
    "smtp/zeek_smtp-multi-addr.pcap",
    "smtp/arkime_smtp-starttls.pcap",
    "smtp/arkime_smtp-subject-8859-b.pcap",
    "smtp/suricata_smtp-attachment-md5.pcap",
]


@functools.cache
def real_sessions() -> list[list[Segment]]:
    out = []
    for capture in CAPTURES:
        if (CORPUS / capture).is_file():
            out += [s.segments for s in sessions(CORPUS / capture, {25, 587})]
    if not out:
        pytest.skip("capture corpus not found")
    return out


@functools.cache
def reference(index: int) -> dict:
    return by_kind(run(SmtpSession(max_blocked=1 << 30), real_sessions()[index]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_split_of_a_real_session_gives_the_same_events(data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(real_sessions()) - 1))
    cuts = data.draw(st.lists(st.integers(0, 2000), max_size=40))
    segments = split_segments(real_sessions()[index], cuts)
    got = by_kind(run(SmtpSession(max_blocked=1 << 30), segments))
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
    got = by_kind(run(SmtpSession(max_blocked=1 << 30), mixed))
    assert got == reference(index)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=300)), max_size=12))
def test_random_bytes_never_raise(steps: list[tuple[bool, bytes]]) -> None:
    sess = SmtpSession(max_line=64, max_blocked=256, max_body=128)
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
    sess = SmtpSession(max_blocked=4096)
    for e in run(sess, out):
        if isinstance(e, MailMessage):
            e.ecs()
            assert isinstance(e.body_text, str)
    assert sess.error is None or isinstance(sess.error, MailParseError)
