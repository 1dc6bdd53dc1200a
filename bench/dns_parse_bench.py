"""DNS parser micro-benchmark: lc.common.dns.parse_dns against dnspython, per message.

Takes every DNS message of the public capture corpus (``../shared/corpus``: UDP
payloads on port 53/5353 and messages framed out of DNS-over-TCP streams; about a
thousand, a third of them tunnel traffic with long 8-bit labels), and times parsing
all of them, best of ``--repeat`` rounds, with:

* ``parse_dns(m)``: everything (header, questions, every record decoded, EDNS);
* ``parse_dns(m, records=False)``: header and questions only (what a decision on the
  question needs);
* ``dns.message.from_wire(m)`` (dnspython), when installed; messages it refuses (mDNS
  compression in NSEC) are left out of its figure and of lc's figure beside it.

Also prints the same for the tunnel captures alone and for responses alone. Not part
of ``make bench`` yet; runs in a few seconds:

    .venv/bin/python bench/dns_parse_bench.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus"
sys.path.insert(0, str(ROOT))

from lc.common.decode import IPPROTO_TCP, IPPROTO_UDP, decode_packet  # noqa: E402
from lc.common.dns import DnsTcpFramer, parse_dns  # noqa: E402
from lc.common.errors import ParseError  # noqa: E402
from lc.common.pcapfile import open_capture  # noqa: E402

TUNNELS = ("dmachard_iodine", "dmachard_dnscat2", "dmachard_dns2tcp", "elastic_dns-tunnel-iodine")


def corpus_messages() -> list[tuple[str, bytes]]:
    """(capture name, message bytes) for every DNS message in the corpus."""
    out = []
    for path in sorted(CORPUS.rglob("*")):
        if path.suffix not in (".pcap", ".pcapng", ".cap"):
            continue
        framers: dict[tuple, DnsTcpFramer] = {}
        try:
            reader = open_capture(path)
        except (ParseError, OSError):
            continue
        with reader:
            for _ts, iface, data, _orig in reader.records():
                try:
                    d = decode_packet(reader.interfaces[iface].linktype, data)
                except ParseError:
                    continue
                if d.ip_version == 0 or d.is_fragment:
                    continue
                if not {d.sport, d.dport} & {53, 5353}:
                    continue
                payload = bytes(data[d.payload_offset : d.payload_offset + d.payload_len])
                if d.proto == IPPROTO_UDP:
                    out.append((path.stem, payload))
                elif d.proto == IPPROTO_TCP and payload:
                    framer = framers.setdefault((d.src, d.sport, d.dst, d.dport), DnsTcpFramer())
                    out += [(path.stem, m) for _s, _e, m in framer.feed(payload)]
    return out


def best_us(fn: Callable[[bytes], object], msgs: list[bytes], repeat: int) -> float:
    """Best mean microseconds per message over ``repeat`` rounds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for m in msgs:
            fn(m)
        best = min(best, time.perf_counter() - t0)
    return best / len(msgs) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    if not CORPUS.is_dir():
        sys.exit(f"corpus not found at {CORPUS}")
    named = corpus_messages()
    try:
        import dns.exception
        import dns.message

        def dp(m: bytes) -> object:
            return dns.message.from_wire(m)

        def dp_ok(m: bytes) -> bool:
            try:
                dp(m)
                return True
            except dns.exception.DNSException:
                return False
    except ImportError:
        dp = None  # type: ignore[assignment]

    def quick(m: bytes) -> object:
        return parse_dns(m, records=False)

    groups = {
        "all": [m for _, m in named],
        "tunnel captures": [m for n, m in named if any(t in n for t in TUNNELS)],
        "responses": [m for _, m in named if m[2] & 0x80],
    }
    print(f"{len(named)} DNS messages from {CORPUS}")
    head = ("messages", "n", "mean B", "lc full", "lc question", "dnspython")
    print(f"{head[0]:<18}{head[1]:>6}{head[2]:>8}{head[3]:>10}{head[4]:>13}{head[5]:>11}")
    for label, msgs in groups.items():
        if dp is not None:
            msgs = [m for m in msgs if dp_ok(m)]
        full = best_us(parse_dns, msgs, args.repeat)
        q = best_us(quick, msgs, args.repeat)
        theirs = f"{best_us(dp, msgs, max(1, args.repeat // 2)):9.1f}" if dp else "        -"
        mean = sum(map(len, msgs)) / len(msgs)
        print(f"{label:<18}{len(msgs):>6}{mean:>8.0f}{full:>9.1f}{q:>12.1f}{theirs:>12}  us/msg")


if __name__ == "__main__":
    main()
