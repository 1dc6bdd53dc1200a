"""Micro-benchmark of lc's mail parsers (not part of ``make bench``).

Messages are made by the standard library's generator: plain text, an RFC 2047
subject in another charset, multipart/alternative with an attachment (about 2, 3
and 9 KiB). Prints, best of ``--repeat`` runs:

* header decoding: µs per message for ``split_headers`` alone and for a
  ``MailMessage`` with its summary read (split, then subject, From/To/Cc,
  Message-ID and Date decoded: they are decoded on first use);
* the lazy MIME walk (``body_text`` + ``attachments``): µs per message;
* whole sessions: SMTP (EHLO, MAIL, RCPT, DATA, QUIT per message), IMAP
  (``FETCH n BODY[]``) and POP3 (``RETR n``) sessions of ``--messages`` messages
  each, cut into 1448-byte segments and fed to the session parser: segments/s,
  messages/s and MB/s. The segment count is what a hunter's packet count would
  be for the payload-carrying packets of those sessions.

    .venv/bin/python bench/mail_parse_bench.py [--messages 300] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from email.message import EmailMessage

from lc.common.imap import ImapSession
from lc.common.mailmsg import MailMessage, split_headers, split_message
from lc.common.pop3 import Pop3Session
from lc.common.smtp import SmtpSession

MSS = 1448


def messages() -> list[bytes]:
    out = []
    plain = EmailMessage()
    plain["From"] = '"Alice Example" <alice@example.org>'
    plain["To"] = "bob@example.net, Carol <carol@example.com>"
    plain["Subject"] = "Quarterly figures"
    plain["Message-ID"] = "<a1@example.org>"
    plain["Date"] = "Tue, 8 Dec 2015 22:30:00 +0100"
    plain.set_content("Hello Bob,\n\n" + "The figures are attached below.\n" * 60)
    out.append(plain.as_bytes())
    encoded = EmailMessage()
    encoded["From"] = "Jürgen Müller <j.mueller@example.de>"
    encoded["To"] = "Zoë <zoe@example.fr>"
    encoded["Cc"] = "x@example.com, y@example.com"
    encoded["Subject"] = "Grüße aus Köln: Übersicht für das Quartal"
    encoded["Message-ID"] = "<b2@example.de>"
    encoded["Date"] = "Wed, 9 Dec 2015 08:00:00 +0100"
    encoded.set_content("Schöne Grüße\n" * 200, charset="utf-8")
    out.append(encoded.as_bytes())
    multi = EmailMessage()
    multi["From"] = "reports@example.org"
    multi["To"] = "team@example.org"
    multi["Subject"] = "=?iso-8859-1?q?Rapport_=E9t=E9?="
    multi["Message-ID"] = "<c3@example.org>"
    multi["Date"] = "Thu, 10 Dec 2015 12:00:00 +0000"
    multi.set_content("See the attached report.\n" * 40)
    multi.add_alternative("<p>See the attached report.</p>\n" * 40, subtype="html")
    multi.add_attachment(os.urandom(4096), maintype="application", subtype="pdf", filename="r.pdf")
    out.append(multi.as_bytes())
    return [m.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for m in out]


def segments(data: bytes) -> list[bytes]:
    return [data[i : i + MSS] for i in range(0, len(data), MSS)]


def smtp_session(msgs: list[bytes]) -> list[tuple[bool, bytes]]:
    steps = [(False, b"220 mx ESMTP\r\n"), (True, b"EHLO c\r\n"), (False, b"250 mx\r\n")]
    for m in msgs:
        steps += [
            (True, b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"),
            (False, b"250 ok\r\n250 ok\r\n354 go\r\n"),
        ]
        stuffed = m.replace(b"\r\n.", b"\r\n..") + b".\r\n"
        steps += [(True, s) for s in segments(stuffed)]
        steps.append((False, b"250 queued\r\n"))
    return [*steps, (True, b"QUIT\r\n"), (False, b"221 bye\r\n")]


def imap_session(msgs: list[bytes]) -> list[tuple[bool, bytes]]:
    steps = [(False, b"* OK ready\r\n"), (True, b"a SELECT INBOX\r\n"), (False, b"a OK done\r\n")]
    for n, m in enumerate(msgs, 1):
        steps.append((True, b"f%d FETCH %d BODY[]\r\n" % (n, n)))
        data = b"* %d FETCH (BODY[] {%d}\r\n" % (n, len(m)) + m + b")\r\nf%d OK done\r\n" % n
        steps += [(False, s) for s in segments(data)]
    return steps


def pop3_session(msgs: list[bytes]) -> list[tuple[bool, bytes]]:
    steps = [(False, b"+OK ready\r\n"), (True, b"USER u\r\n"), (False, b"+OK\r\n")]
    for n, m in enumerate(msgs, 1):
        steps.append((True, b"RETR %d\r\n" % n))
        data = b"+OK\r\n" + m.replace(b"\r\n.", b"\r\n..") + b".\r\n"
        steps += [(False, s) for s in segments(data)]
    return steps


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    msgs = messages()
    parts = [split_message(m) for m in msgs]
    n = 2000
    for label, (header, body) in zip(("plain", "encoded", "multipart"), parts, strict=True):
        split = best(lambda h=header: [split_headers(h) for _ in range(n)], args.repeat)

        def summary(h: bytes = header, b: bytes = body) -> None:
            for _ in range(n):
                m = MailMessage(h, b, protocol="smtp", command="DATA")
                _ = m.subject, m.from_, m.to, m.cc, m.message_id, m.origination_ns

        full = best(summary, args.repeat)

        def walk(h: bytes = header, b: bytes = body) -> float:
            ready = [MailMessage(h, b, protocol="smtp", command="DATA") for _ in range(n // 10)]
            t = time.perf_counter()
            for m in ready:
                _ = m.body_text, m.attachments
            return time.perf_counter() - t

        walked = min(walk() for _ in range(args.repeat)) * 10
        print(
            f"{label:9} ({len(header) + len(body):5d} B): split_headers {split / n * 1e6:5.1f} µs, "
            f"with summary {full / n * 1e6:5.1f} µs, "
            f"body_text+attachments {walked / n * 1e6:6.1f} µs"
        )
    mix = [msgs[i % len(msgs)] for i in range(args.messages)]
    for name, cls, build in (
        ("smtp", SmtpSession, smtp_session),
        ("imap", ImapSession, imap_session),
        ("pop3", Pop3Session, pop3_session),
    ):
        steps = build(mix)
        size = sum(len(d) for _c, d in steps)
        count = []

        def go(cls: type = cls, steps: list = steps, count: list = count) -> None:
            sess = cls()
            got = 0
            for ts, (from_client, data) in enumerate(steps):
                for e in sess.feed(from_client, data, ts):
                    got += isinstance(e, MailMessage)
            sess.close()
            count.append(got)

        t = best(go, args.repeat)
        assert count[-1] == args.messages, (name, count[-1])
        print(
            f"{name} session: {len(steps) / t:9.0f} segments/s, {args.messages / t:7.0f} "
            f"messages/s, {size / t / 1e6:6.1f} MB/s ({len(steps)} segments, {size} bytes)"
        )


if __name__ == "__main__":
    main()
