"""TLS hello parsing and fingerprinting: microseconds per ClientHello.

Real ClientHellos come from OpenSSL through Python's ``ssl`` module (no network), and,
when ``../shared/corpus`` is there, Chrome's 1.7 KB hello with a post-quantum key
share (``tls/arkime_tls-split-client-hello.pcap``). For each, prints the median over
``--runs`` runs of ``--n`` iterations of:

* ``parse``: :func:`lc.common.tls.parse_client_hello` on the message body;
* ``stream``: a new :class:`TlsStream` fed the whole record (what a new connection costs);
* ``fp cold``: JA3 + JA4 + JA4_r computed from scratch;
* ``fp cached``: :meth:`FingerprintCache.client` for a shape already seen (the usual case);
* ``stream+cache``: the hunter's path per handshake, ``stream`` then ``fp cached``;
* ``quic``: a :class:`QuicHandshake` opening a client Initial that carries the hello
  (key derivation, header protection, AES-GCM, CRYPTO frames, parse).

Asserts nothing; not part of ``make bench`` yet.

    .venv/bin/python bench/tls_parse_bench.py [--n 5000] [--runs 5]
"""

from __future__ import annotations

import argparse
import gc
import ssl
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lc.common import fingerprint as fp
from lc.common.quic import QUIC_V1, QuicHandshake, initial_keys
from lc.common.tls import TlsStream, parse_client_hello

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def openssl_hello(name: str | None, alpn: list[str] | None) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def chrome_hello() -> bytes | None:
    path = CORPUS / "tls" / "arkime_tls-split-client-hello.pcap"
    if not path.is_file():
        return None
    from lc.common.decode import decode_packet
    from lc.common.pcapfile import open_capture

    data = b""
    with open_capture(path) as cap:
        for _ts, ifc, frame, _o in cap:
            d = decode_packet(cap.interfaces[ifc].linktype, frame)
            if d.dport == 443 and d.payload_len:
                data += frame[d.payload_offset : d.payload_offset + d.payload_len]
                if len(data) >= 5 + int.from_bytes(data[3:5], "big"):
                    return data
    return None


def quic_initial(msg: bytes) -> bytes:
    """A client Initial (QUIC v1) carrying ``msg`` in one CRYPTO frame, padded to 1200."""
    dcid = bytes(range(8))
    k = initial_keys(dcid, QUIC_V1)
    frames = b"\x06\x00" + (0x4000 | len(msg)).to_bytes(2, "big") + msg
    frames += bytes(max(0, 1200 - 40 - len(frames)))
    head = b"\xc1" + QUIC_V1.to_bytes(4, "big") + b"\x08" + dcid + b"\x00\x00"
    head += (0x4000 | (2 + len(frames) + 16)).to_bytes(2, "big")
    pn_off = len(head)
    head += b"\x00\x00"
    ct = AESGCM(k.key).encrypt(int.from_bytes(k.iv, "big").to_bytes(12, "big"), frames, head)
    mask = Cipher(algorithms.AES(k.hp), modes.ECB()).encryptor().update(ct[2:18])
    out = bytearray(head + ct)
    out[0] ^= mask[0] & 0x0F
    out[pn_off] ^= mask[1]
    out[pn_off + 1] ^= mask[2]
    return bytes(out)


def median_us(fn: Callable[[], object], n: int, runs: int) -> float:
    times = []
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=5000, help="iterations per run")
    ap.add_argument("--runs", type=int, default=5, help="runs (the median is printed)")
    args = ap.parse_args()

    hellos = {
        "openssl, SNI + ALPN": openssl_hello("www.example.com", ["h2", "http/1.1"]),
        "openssl, no SNI/ALPN": openssl_hello(None, None),
    }
    chrome = chrome_hello()
    if chrome is not None:
        hellos["chrome 1.7 KB (corpus)"] = chrome

    print(f"{'hello':<24} {'bytes':>5} {'parse':>7} {'stream':>7} {'fp cold':>8} "
          f"{'fp cached':>9} {'stream+cache':>12} {'quic':>7}  (us per hello)")  # fmt: skip
    for label, record in hellos.items():
        body = record[9 : 5 + int.from_bytes(record[3:5], "big")]
        ch = parse_client_hello(body)
        cache = fp.FingerprintCache()
        cache.client(ch)
        n, runs = args.n, args.runs

        def cold(ch=ch):
            fp.ja3(ch)
            fp.ja4(ch)
            fp.ja4_r(ch)

        def both(record=record, cache=cache):
            (hello,) = TlsStream().feed(record)
            cache.client(hello)

        initial = quic_initial(record[5:])
        row = [
            median_us(lambda body=body: parse_client_hello(body), n, runs),
            median_us(lambda record=record: TlsStream().feed(record), n, runs),
            median_us(cold, n, runs),
            median_us(lambda ch=ch, cache=cache: cache.client(ch), n, runs),
            median_us(both, n, runs),
            median_us(lambda initial=initial: QuicHandshake().feed(initial, True), n // 5, runs),
        ]
        print(f"{label:<24} {len(record):>5} " + " ".join(
            f"{v:>{w}.1f}" for v, w in zip(row, (7, 7, 8, 9, 12, 7), strict=True)
        ))  # fmt: skip


if __name__ == "__main__":
    main()
