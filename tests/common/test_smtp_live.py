"""lc.common.smtp on a session between real implementations: the standard library's
smtplib client and its smtpd server (Python 3.11; the test is skipped where smtpd is
gone), through a relay on loopback that records both directions' bytes as they pass.

The oracle is what the server itself received: for each message, its envelope
(MAIL FROM, RCPT TO) and its content after the server's own dot-unstuffing.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from lc.common.mailmsg import MailMessage
from lc.common.smtp import SmtpCommand, SmtpReply, SmtpSession

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    asyncore = pytest.importorskip("asyncore")
    smtpd = pytest.importorskip("smtpd")


class Server(smtpd.SMTPServer):  # type: ignore[misc, name-defined]
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), None, decode_data=False)
        self.received: list[tuple[str, list[str], bytes]] = []

    def process_message(self, peer, mailfrom, rcpttos, data, **kw):  # type: ignore[no-untyped-def]
        self.received.append((mailfrom, list(rcpttos), data))


@contextlib.contextmanager
def relay(target: tuple[str, int]) -> Iterator[tuple[int, list[tuple[bool, bytes]]]]:
    """A TCP relay to ``target`` that records (from_client, bytes) in arrival order."""
    record: list[tuple[bool, bytes]] = []
    lock = threading.Lock()
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]

    def pipe(src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                with lock:
                    record.append((from_client, data))
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def accept() -> None:
        client, _ = lsock.accept()
        server = socket.create_connection(target)
        for args in ((client, server, True), (server, client, False)):
            threading.Thread(target=pipe, args=args, daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield port, record
    finally:
        lsock.close()


def test_smtplib_to_smtpd_through_a_recording_relay() -> None:
    server = Server()
    loop = threading.Thread(target=asyncore.loop, kwargs={"timeout": 0.05}, daemon=True)
    loop.start()
    first = EmailMessage()
    first["From"] = "Zoë <zoe@example.org>"
    first["To"] = "a@example.net, B <b@example.net>"
    first["Subject"] = "Réunion: ordre du jour"
    first.set_content(".starts with a dot\n..two dots\n.\nthe lone dot above is content\n")
    second = EmailMessage()
    second["From"] = "zoe@example.org"
    second["To"] = "c@example.com"
    second["Subject"] = "second"
    second.set_content("keyword: invoice\n" * 100)
    try:
        with relay(server.socket.getsockname()) as (port, record):
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.ehlo("client.example")
                client.send_message(first, "zoe@example.org", ["a@example.net", "b@example.net"])
                client.send_message(second, "zoe@example.org", ["c@example.com"])
            deadline = time.monotonic() + 10
            while len(server.received) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.1)  # the relay records the last reply
    finally:
        server.close()
    assert len(server.received) == 2
    sess = SmtpSession()
    events: list = []
    for ts, (from_client, data) in enumerate(list(record)):
        events += sess.feed(from_client, data, ts)
    events += sess.close()
    msgs = [e for e in events if isinstance(e, MailMessage)]
    assert len(msgs) == 2
    for msg, (mailfrom, rcpttos, data) in zip(msgs, server.received, strict=True):
        assert msg.mail_from == mailfrom and list(msg.rcpt_to) == rcpttos
        assert msg.helo == "client.example"
        # smtpd joins the unstuffed lines with LF and drops the last line break.
        ours = (msg.header + b"\r\n" + msg.body).replace(b"\r\n", b"\n").removesuffix(b"\n")
        assert ours == data
    assert msgs[0].subject == "Réunion: ordre du jour"
    assert [a.addr for a in msgs[0].to] == ["a@example.net", "b@example.net"]
    assert msgs[0].body_text.startswith(".starts with a dot\n..two dots\n.\n")
    assert "invoice" in msgs[1].body_text
    verbs = [c.verb for c in events if isinstance(c, SmtpCommand)]
    assert verbs == ["EHLO", "MAIL", "RCPT", "RCPT", "DATA", "MAIL", "RCPT", "DATA", "QUIT"]
    replies = [r for r in events if isinstance(r, SmtpReply)]
    assert [r.command.verb if r.command else None for r in replies] == [
        None, "EHLO", "MAIL", "RCPT", "RCPT", "DATA", ".", "MAIL", "RCPT", "DATA", ".", "QUIT",
    ]  # fmt: skip
    assert not sess.gave_up and sess.counters["unpaired_replies"] == 0
