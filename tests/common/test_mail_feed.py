"""MailSession.feed runs only the steps that can move; these tests hold it to the full
pump (both sides in turn until neither moves), the reference it must equal.

The rule it relies on (MailSession's docstring): a step reads its side until it cannot
go on, and a step that does not move changes nothing. A step that breaks the rule makes
the two differ here.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lc.common.imap import ImapSession
from lc.common.mailmsg import MailMessage, MailParseError, MailSession
from lc.common.pop3 import Pop3Session
from lc.common.smtp import SmtpSession


def pumped_feed(s: MailSession, from_client: bool, data: bytes, ts: int) -> list:
    """MailSession.feed with the full pump, as it was before it skipped steps."""
    if s.error is not None or s.upgraded or s.closed:
        s.counters["ignored_bytes"] += len(data)
        return []
    out: list = []
    (s._c if from_client else s._s).append(data, ts)
    try:
        s._pump(out)
        for reader, force in ((s._c, s._force_client), (s._s, s._force_server)):
            while len(reader) > s.max_blocked and not s._done():
                if not force(out):
                    side = "client" if reader is s._c else "server"
                    raise MailParseError(
                        f"{s.protocol}: {len(reader)} bytes from the {side} cannot be read"
                    )
                s.counters["assumed_replies"] += 1
                s._pump(out)
    except MailParseError as e:
        s._give_up(e)
    return out


def shown(events: list) -> list:
    out = []
    for ev in events:
        if isinstance(ev, MailMessage):
            fields = (ev.command, ev.ts_ns, ev.end_ns, ev.header, ev.body, ev.size)
            out.append((*fields, ev.truncated, ev.complete, ev.mail_from, ev.rcpt_to, ev.mailbox))
        else:
            out.append(repr(ev))
    return out


def state(s: MailSession) -> tuple:
    return (sorted(s.counters.items()), s.upgraded, str(s.error), s.closed)


MSG = b"Subject: s\r\n\r\n..dot\r\nline\r\n"
# (from the client?, bytes): pieces of dialogues, valid and not, in any order.
PIECES = {
    SmtpSession: [
        (False, b"220 hi\r\n"), (True, b"EHLO x\r\n"), (False, b"250-a\r\n250 b\r\n"),
        (True, b"MAIL FROM:<a@b>\r\n"), (True, b"RCPT TO:<c@d>\r\n"), (False, b"250 ok\r\n"),
        (True, b"DATA\r\n"), (False, b"354 go\r\n"), (False, b"554 no\r\n"),
        (True, MSG + b".\r\n"), (True, b"BDAT 5\r\nabcde"), (True, b"BDAT 0 LAST\r\n"),
        (True, b"AUTH LOGIN\r\n"), (False, b"334 VXNlcg==\r\n"), (True, b"dXNlcg==\r\n"),
        (True, b"STARTTLS\r\n"), (False, b"220 go\r\n"), (True, b"QUIT\r\n"),
        (False, b"221 bye\r\n"), (True, b"!! x\r\n"), (False, b"junk\r\n"), (True, b"."),
        (True, b"\r\n"), (False, b"421 "),
    ],
    ImapSession: [
        (False, b"* OK hi\r\n"), (True, b"a1 LOGIN u p\r\n"), (False, b"a1 OK\r\n"),
        (True, b"a2 SELECT INBOX\r\n"), (False, b"a2 OK sel\r\n"),
        (True, b"a3 FETCH 1 BODY[]\r\n"),
        (False, b"* 1 FETCH (BODY[] {%d}\r\n%s)\r\na3 OK\r\n" % (len(MSG), MSG)),
        (True, b"a4 APPEND INBOX {3}\r\n"), (False, b"+ go\r\n"), (True, b"abc\r\n"),
        (False, b"a4 NO\r\n"), (True, b"a5 IDLE\r\n"), (True, b"DONE\r\n"),
        (False, b"a5 OK\r\n"), (True, b"a6 AUTHENTICATE PLAIN\r\n"), (False, b"+ \r\n"),
        (True, b"AGZvbw==\r\n"), (False, b"a6 OK\r\n"), (True, b"a7 STARTTLS\r\n"),
        (False, b"a7 OK\r\n"), (True, b"a8 APPEND X {0+}\r\n\r\n"), (False, b"?? x\r\n"),
    ],
    Pop3Session: [
        (False, b"+OK hi\r\n"), (True, b"USER u\r\n"), (False, b"+OK\r\n"),
        (True, b"RETR 1\r\n"), (False, b"+OK m\r\n" + MSG + b".\r\n"), (False, b"-ERR\r\n"),
        (True, b"LIST\r\n"), (False, b"+OK\r\n1 2\r\n.\r\n"), (True, b"AUTH PLAIN\r\n"),
        (False, b"+ \r\n"), (True, b"AGZvbw==\r\n"), (True, b"STLS\r\n"), (True, b"QUIT\r\n"),
        (False, b"+OK m\r\n."), (True, b"!!\r\n"), (False, b"x\r\n"),
    ],
}  # fmt: skip


@settings(max_examples=1500, deadline=None)
@given(
    st.sampled_from(sorted(PIECES, key=lambda c: c.__name__)),
    st.data(),
    st.sampled_from(
        [
            {},
            {"max_blocked": 40},
            {"max_line": 64, "max_body": 8, "max_header": 8},
            {"max_pending": 1, "max_bad_lines": 2},
        ]
    ),
    st.sampled_from([None, 0, 50, 10**9]),
)
def test_feed_equals_the_full_pump(cls, data, limits: dict, close_ts: int | None) -> None:
    pieces = data.draw(st.lists(st.sampled_from(PIECES[cls]), max_size=14))
    cuts = data.draw(st.lists(st.integers(1, 30), min_size=len(pieces), max_size=len(pieces)))
    fast, ref = cls(**limits), cls(**limits)
    ts = 0
    for (from_client, raw), cut in zip(pieces, cuts, strict=True):
        for i in range(0, len(raw), cut):
            ts += 1
            got = fast.feed(from_client, raw[i : i + cut], ts)
            want = pumped_feed(ref, from_client, raw[i : i + cut], ts)
            assert shown(got) == shown(want)
            assert state(fast) == state(ref)
    assert shown(fast.close(close_ts)) == shown(ref.close(close_ts))
    assert state(fast) == state(ref)
