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
under cProfile and prints its top functions.

    .venv/bin/python bench/email_bench.py [--sessions 4200] [--messages 3] [--profile]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-out"
LC = [sys.executable, "-m", "lc.cli"]
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


def _frame(src: int, dst: int, sport: int, dport: int, seq: int, ack: int, flags: int,
           payload: bytes = b"") -> bytes:  # fmt: skip
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 0x50, flags, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, 40 + len(payload), 0, 0x4000, 64, 6, 0, src, dst)
    return b"\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x01\x08\x00" + ip + tcp + payload


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
    ts = 1_700_000_000 * 10**6
    total = messages = target_msgs = target_packets = 0
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        active: list[list] = []
        made = 0
        while made < sessions or active:
            while made < sessions and len(active) < 10:
                target = made % 10 == 3
                r = made % 5
                proto = "smtp" if r < 3 else ("imap" if r == 3 else "pop3")
                conv, n = _conversation(rnd, proto, made, target, per)
                messages += n
                target_msgs += n if target else 0
                steps: list[tuple[int, int, bytes]] = [(1, 0x02, b""), (0, 0x12, b""),
                                                       (1, 0x10, b"")]  # fmt: skip
                for d, data in conv:
                    for j in range(0, len(data), MSS):
                        steps.append((d, 0x18, data[j : j + MSS]))
                        if j // MSS % 2 == 1:
                            steps.append((1 - d, 0x10, b""))  # the receiver's ACK
                steps += [(1, 0x11, b""), (0, 0x11, b""), (1, 0x10, b"")]
                cli = 0x0A000000 + made % 60000 + 2
                active.append([cli, 20000 + made % 40000, steps, 0, [1000, 5000], target,
                               PORTS[proto]])  # fmt: skip
                made += 1
            c = active[rnd.randrange(len(active))]
            cli, cport, steps, i, seqs, target, port = c
            to_srv, flags, payload = steps[i]
            srv = 0x0A640001
            if to_srv:
                fr = _frame(cli, srv, cport, port, seqs[0], seqs[1], flags, payload)
                seqs[0] += len(payload) + (1 if flags & 0x03 else 0)
            else:
                fr = _frame(srv, cli, port, cport, seqs[1], seqs[0], flags, payload)
                seqs[1] += len(payload) + (1 if flags & 0x03 else 0)
            ts += 20
            f.write(struct.pack("<IIII", ts // 10**6, ts % 10**6, len(fr), len(fr)) + fr)
            total += 1
            target_packets += 1 if target else 0
            c[3] += 1
            if c[3] == len(steps):
                active.remove(c)
    return {
        "packets": total,
        "messages": messages,
        "target_messages": target_msgs,
        "target_packets": target_packets,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=4200)
    ap.add_argument("--messages", type=int, default=3, help="messages per session")
    ap.add_argument("--profile", action="store_true", help="cProfile the hunter (slower)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from lc.common.credentials import init_pki
    from lc.common.pcapfile import open_capture

    OUT.mkdir(exist_ok=True)
    pki = OUT / "pki"
    if not (pki / "ca.pem").exists():
        init_pki(pki, hunters=["bench"])
    tls = {
        n: ["--tls-cert", str(pki / f"{n}.pem"), "--tls-key", str(pki / f"{n}.key"),
            "--tls-ca", str(pki / "ca.pem")]
        for n in ("processor", "admin", "hunter-bench")
    }  # fmt: skip
    cap = OUT / f"email-{args.sessions}x{args.messages}.pcap"
    info_path = cap.with_suffix(".json")
    if cap.exists() and info_path.exists():
        info = json.loads(info_path.read_text())
    else:
        info = make_capture(cap, args.sessions, args.messages)
        info_path.write_text(json.dumps(info))
    total = info["packets"]
    work = OUT / "email"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    err_path = work / "processor.err"
    err = open(err_path, "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [*LC, "process", "--listen", "127.0.0.1:0", "--data-dir", str(work / "data"),
         *tls["processor"]],
        stdout=subprocess.DEVNULL, stderr=err,
    )  # fmt: skip
    try:
        while not (m := re.search(r"\(port (\d+)\)", err_path.read_text())):
            if proc.poll() is not None:
                sys.exit(err_path.read_text())
            time.sleep(0.05)
        addr = f"127.0.0.1:{m.group(1)}"
        subprocess.run(
            [*LC, "set", "filter", "--id", "target", "--type", "email_address", "--pattern",
             TARGET, "--processor", addr, *tls["admin"]],
            capture_output=True, check=True,
        )  # fmt: skip
        hunt = [*LC, "hunt", "email", "--processor", addr, *tls["hunter-bench"], "-r", str(cap)]
        prof = work / "hunter.prof"
        if args.profile:
            hunt = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "lc.cli", *hunt[3:]]
        t0 = time.monotonic()
        r = subprocess.run(hunt, capture_output=True, text=True)
        wall = time.monotonic() - t0
        t0 = time.monotonic()
        subprocess.run(["tcpdump", "-r", str(cap), "-w", "/dev/null"], capture_output=True,
                       check=True)  # fmt: skip
        tcpdump = time.monotonic() - t0
        time.sleep(1.0)  # the processor writes what it received
    finally:
        proc.terminate()
        proc.wait(60)
    if r.returncode != 0:
        sys.exit(f"hunter failed ({r.returncode}): {r.stdout}\n{r.stderr}")
    m = re.search(r"in ([\d.]+) s \(([\d,]+) pkt/s\)", r.stdout)
    secs = float(m.group(1)) if m else wall
    with open_capture(work / "data" / "capture.pcap") as rd:
        got = sum(1 for _ in rd.records())
    events = sum(
        len(p.read_text().splitlines()) for p in (work / "data" / "events").glob("*.jsonl")
    )
    ok = got == info["target_packets"] and events == info["target_messages"]
    verdict = (
        "OK"
        if ok
        else f"MISMATCH: want {info['target_packets']} packets, {info['target_messages']} events"
    )
    print(
        f"email replay: {total:,} packets, {info['messages']:,} messages "
        f"({info['target_messages']:,} matching): hunter "
        f"{m.group(2) if m else '?'} pkt/s, {info['messages'] / secs:,.0f} messages/s "
        f"over {secs:.1f} s ({total / wall:,.0f} pkt/s wall, start to exit); "
        f"tcpdump -r F -w /dev/null {total / tcpdump:,.0f} pkt/s ({tcpdump:.2f} s); "
        f"{got:,} packets and {events:,} events at the processor [{verdict}]"
    )
    if args.profile:
        import pstats

        pstats.Stats(str(prof)).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
