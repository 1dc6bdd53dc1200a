"""Email end to end: `lc hunt email -r` over a synthetic capture of SMTP, IMAP and POP3.

The capture (>= 200k packets by default): 4,200 TCP sessions, 10 open at a time and
interleaved packet by packet, each a SYN handshake, a conversation and a FIN close:

* SMTP (60%): greeting, EHLO, then per message MAIL FROM, RCPT TO (one to three), DATA
  with a 2-9 KiB dot-stuffed body (several segments), QUIT;
* IMAP (20%): LOGIN, SELECT INBOX, one ``FETCH n BODY[]`` literal per message, LOGOUT;
* POP3 (20%): USER/PASS, STAT, one multi-line ``RETR n`` per message, QUIT;

three messages per session, some with an RFC 2047 subject; the receiver ACKs every
second data segment. 10% of the sessions (so 10% of the messages) carry
``target@watch.example`` in From or To (an ``email_address`` filter selects them, each
captured whole). Prints the hunter's packets/s and messages/s end to end (replayed over
mutual TLS to a real processor), beside the same run's ``tcpdump -r F -w /dev/null``
time, and checks that the processor's PCAP holds exactly the frames of the target
sessions and its event log one event per target message. ``--profile`` runs the hunter
under cProfile and prints its top functions. ``--in-process`` times the mode alone
instead (CPU per packet, median of ``--runs``; with ``--profile``, its time by source
file), see bench/_common.py.

    .venv/bin/python bench/email_bench.py [--sessions 4200] [--messages 3] [--profile]
        [--in-process [--runs 3]]
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

from _common import Conversation, mode_bench, write_tcp_capture

MSS = 1448
PORTS = {"smtp": 25, "imap": 143, "pop3": 110}
TARGET = "target@watch.example"
WORDS = [
    "meeting",
    "report",
    "invoice",
    "shipment",
    "schedule",
    "quarterly",
    "update",
    "budget",
    "review",
    "project",
    "notes",
    "agenda",
    "contract",
    "draft",
    "team",
    "lunch",
    "travel",
    "hotel",
    "flight",
    "summary",
    "figures",
]


def _message(rnd: random.Random, n: int, sender: str, rcpts: list[str]) -> bytes:
    """One RFC 5322 message (CRLF lines, not dot-stuffed)."""
    if rnd.random() < 0.2:
        subject = "=?utf-8?B?UmFwcG9ydCBtZW5zdWVsIMOpdMOp?= " + str(n)
    else:
        subject = " ".join(rnd.choice(WORDS) for _ in range(4)) + f" #{n}"
    lines = [
        f"From: Sender {n} <{sender}>",
        "To: " + ", ".join(rcpts),
        f"Subject: {subject}",
        f"Date: Mon, 6 Nov 2023 10:{n % 60:02d}:00 +0000",
        f"Message-ID: <{n}.{rnd.randrange(10**9)}@bench.example>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "",
    ]
    size = rnd.randrange(2000, 9000)
    body: list[str] = []
    while size > 0:
        line = " ".join(rnd.choice(WORDS) for _ in range(rnd.randrange(6, 14)))
        if rnd.random() < 0.05:
            line = "." + line  # dot-stuffed on the wire
        body.append(line)
        size -= len(line) + 2
    return ("\r\n".join(lines + body) + "\r\n").encode()


def _stuffed(msg: bytes) -> bytes:
    return msg.replace(b"\r\n.", b"\r\n..") + b".\r\n"


def _conversation(rnd: random.Random, proto: str, k: int, target: bool, per: int):
    """(direction 1 = to the server, 0 = to the client; bytes of one send) per send; and
    the number of messages."""
    out: list[tuple[int, bytes]] = []
    msgs = []
    for i in range(per):
        n = k * 100 + i
        sender = f"user{n % 997}@corp{n % 13}.example"
        rcpts = [f"rcpt{(n + j) % 811}@mail{j}.example" for j in range(1 + n % 3)]
        if target:
            if i % 2:
                rcpts[0] = TARGET
            else:
                sender = TARGET
        msgs.append((sender, rcpts, _message(rnd, n, sender, rcpts)))
    if proto == "smtp":
        out += [(0, b"220 mx.bench.example ESMTP ready\r\n"), (1, b"EHLO client%d\r\n" % k),
                (0, b"250-mx.bench.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
                    b"250 8BITMIME\r\n")]  # fmt: skip
        for sender, rcpts, m in msgs:
            out += [(1, f"MAIL FROM:<{sender}>\r\n".encode()), (0, b"250 2.1.0 Ok\r\n")]
            for r in rcpts:
                out += [(1, f"RCPT TO:<{r}>\r\n".encode()), (0, b"250 2.1.5 Ok\r\n")]
            out += [(1, b"DATA\r\n"), (0, b"354 End data with <CR><LF>.<CR><LF>\r\n"),
                    (1, _stuffed(m)), (0, b"250 2.0.0 Ok: queued\r\n")]  # fmt: skip
        out += [(1, b"QUIT\r\n"), (0, b"221 2.0.0 Bye\r\n")]
    elif proto == "imap":
        out += [(0, b"* OK [CAPABILITY IMAP4rev1] ready\r\n"),
                (1, b"a1 LOGIN user%d secret\r\n" % k), (0, b"a1 OK LOGIN completed\r\n"),
                (1, b"a2 SELECT INBOX\r\n"),
                (0, b"* %d EXISTS\r\n* FLAGS (\\Seen \\Deleted)\r\n"
                    b"a2 OK [READ-WRITE] SELECT completed\r\n" % per)]  # fmt: skip
        for i, (_, _, m) in enumerate(msgs, 1):
            out.append((1, b"a%d FETCH %d BODY[]\r\n" % (i + 2, i)))
            out.append((0, b"* %d FETCH (BODY[] {%d}\r\n%s)\r\na%d OK FETCH completed\r\n"
                        % (i, len(m), m, i + 2)))  # fmt: skip
        out += [(1, b"a9 LOGOUT\r\n"), (0, b"* BYE logging out\r\na9 OK LOGOUT completed\r\n")]
    else:
        out += [(0, b"+OK POP3 ready\r\n"), (1, b"USER user%d\r\n" % k), (0, b"+OK\r\n"),
                (1, b"PASS secret\r\n"), (0, b"+OK logged in\r\n"), (1, b"STAT\r\n"),
                (0, b"+OK %d 12345\r\n" % per)]  # fmt: skip
        for i, (_, _, m) in enumerate(msgs, 1):
            out += [(1, b"RETR %d\r\n" % i), (0, b"+OK %d octets\r\n" % len(m) + _stuffed(m))]
        out += [(1, b"QUIT\r\n"), (0, b"+OK bye\r\n")]
    return out, len(msgs)


def make_capture(path: Path, sessions: int, per: int) -> dict:
    """Write the capture; its figures (packets, messages, the target's)."""
    rnd = random.Random(14)
    counts = {"messages": 0, "target_messages": 0}

    def conversations() -> Iterator[Conversation]:
        for made in range(sessions):
            target = made % 10 == 3
            r = made % 5
            proto = "smtp" if r < 3 else ("imap" if r == 3 else "pop3")
            conv, n = _conversation(rnd, proto, made, target, per)
            counts["messages"] += n
            counts["target_messages"] += n if target else 0
            yield PORTS[proto], target, conv

    total, selected = write_tcp_capture(path, rnd, conversations(), MSS)
    return {"packets": total, **counts, "target_packets": selected}


def main() -> None:
    mode_bench(
        __doc__,
        "email",
        "messages",
        ("email_address", TARGET),
        (("--sessions", 4200, "sessions"), ("--messages", 3, "messages per session")),
        make_capture,
    )


if __name__ == "__main__":
    main()
