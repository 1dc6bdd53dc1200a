"""HTTP end to end: `lc hunt http -r` over a synthetic capture of keep-alive connections.

The capture (>= 500k packets by default): 9,000 TCP connections to port 80, 10 open at a
time and interleaved packet by packet, each a SYN handshake, 12 transactions and a FIN
close. Transactions mix small GETs, multi-segment responses (Content-Length and chunked),
POSTs whose bodies span segments, and pipelining (a fifth of the connections send three
requests in one segment before the responses); the receiver ACKs every second data
segment. 10% of the connections (so 10% of the transactions) carry `Host: target.example`
and an `http_host` filter selects them: each is captured whole. Prints the hunter's
packets/s and transactions/s end to end (replayed over mutual TLS to a real processor),
beside the same run's `tcpdump -r F -w /dev/null` time, and checks that the processor's
PCAP holds exactly the frames of the target connections and the event log one event
per target transaction. ``--in-process`` times the mode alone instead (CPU per packet,
median of ``--runs``; with ``--profile``, its time by source file), see bench/_common.py.

    .venv/bin/python bench/http_bench.py [--connections 9000] [--transactions 12]
        [--profile] [--in-process [--runs 3]]
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

from _common import Conversation, mode_bench, write_tcp_capture

MSS = 1400
PORT = 80
TARGET = "target.example"


def _response(rnd: random.Random, kind: str) -> bytes:
    if kind == "chunked":
        chunks = [bytes([97 + rnd.randrange(26)]) * rnd.randrange(500, 3000) for _ in range(3)]
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n"
        return head + b"Server: bench\r\n\r\n" + body
    n = rnd.randrange(100, 1000) if kind == "small" else rnd.randrange(4000, 12000)
    status = b"404 Not Found" if rnd.random() < 0.05 else b"200 OK"
    ctype = b"application/json" if kind == "small" else b"image/png"
    return (b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nServer: bench\r\n\r\n"
            % (status, ctype, n)) + bytes(n)  # fmt: skip


def _request(rnd: random.Random, host: str, i: int, post: bool) -> bytes:
    path = f"/app/{rnd.randrange(1000)}/item{i}?q={rnd.randrange(10**6)}"
    common = (f"Host: {host}\r\nUser-Agent: bench/1.0 (lc)\r\nAccept: */*\r\n"
              "Accept-Language: en-US\r\nCookie: session=abc123; theme=dark\r\n")  # fmt: skip
    if post:
        body = b"field=" + bytes([98 + rnd.randrange(20)]) * rnd.randrange(1500, 4000)
        head = (f"POST {path} HTTP/1.1\r\n{common}Content-Type: application/x-www-form-"
                f"urlencoded\r\nContent-Length: {len(body)}\r\n\r\n")  # fmt: skip
        return head.encode() + body
    return f"GET {path} HTTP/1.1\r\n{common}\r\n".encode()


def _conversation(rnd: random.Random, host: str, n: int) -> list[tuple[int, bytes]]:
    """(direction 1 = to the server, 0 = to the client; bytes of one send) per send."""
    out: list[tuple[int, bytes]] = []
    pipelined = rnd.random() < 0.2
    i = 0
    while i < n:
        if pipelined and i + 3 <= n:
            reqs = [_request(rnd, host, i + k, False) for k in range(3)]
            out.append((1, b"".join(reqs)))
            out.append((0, b"".join(_response(rnd, "small") for _ in range(3))))
            i += 3
            continue
        r = rnd.random()
        post = r < 0.2
        kind = "small" if r < 0.6 else ("chunked" if r < 0.75 else "large")
        out.append((1, _request(rnd, host, i, post)))
        out.append((0, _response(rnd, kind)))
        i += 1
    return out


def make_capture(path: Path, conns: int, per_conn: int) -> dict:
    """Write the capture; its figures (packets, transactions, the target's frames)."""
    rnd = random.Random(13)

    def conversations() -> Iterator[Conversation]:
        for made in range(conns):
            target = made % 10 == 3
            host = TARGET if target else f"www{made % 50}.example.com"
            yield PORT, target, _conversation(rnd, host, per_conn)

    total, selected = write_tcp_capture(path, rnd, conversations(), MSS)
    return {
        "packets": total,
        "transactions": conns * per_conn,
        "target_transactions": sum(per_conn for k in range(conns) if k % 10 == 3),
        "target_packets": selected,
    }


def main() -> None:
    mode_bench(
        __doc__,
        "http",
        "transactions",
        ("http_host", TARGET),
        (("--connections", 9000, "connections"), ("--transactions", 12, "per connection")),
        make_capture,
    )


if __name__ == "__main__":
    main()
