"""The VoIP mode forwards exactly what it forwarded before it was made faster.

Two checks over the corpus SIP captures and synthetic calls (SIP over UDP and TCP,
RTP/RTCP, buffers and table at their bounds, decide timeouts), each fed in chunks of
several sizes, with ``--events all``:

* **golden**: a digest of everything the mode hands on (per call of process, tick and
  finish: every forwarded record with its interface and serialised metadata, every
  event) and of its final counters, recorded with the per-packet engine before the
  VoIP fast path existed (``LC_VOIP_GOLDEN=print`` prints the current digests);
* **differential**: the VoIP mode (``voip_mode``) against the generic per-packet session
  engine (:class:`lc.hunter.modes.sessions.SessionMode`) driving the same dissector,
  output by output.
"""

from __future__ import annotations

import hashlib
import os
import random
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lc.common.filters import Filter, compile_filters
from lc.common.pcapwriter import PcapWriter
from lc.hunter.capture import FileSource
from lc.hunter.modes.base import ModeContext
from lc.hunter.modes.sessions import SessionMode
from lc.hunter.modes.voip import VOIP_FILTER_TYPES, SipDissector, VoipConfig, voip_mode
from tests.hunter.test_voip import CORPUS, need_corpus, sip_ports, tsv
from tests.voip_tools import make_undecided_calls_capture, make_voip_capture

# (capture, its SIP oracle: only to know the SIP ports)
CORPUS_CASES = [
    ("sip/heplify_sip_ipv4_tcp.pcap", ".expected.tsv"),
    ("sip/heplify_sip_ipv6_udp.pcap", ".expected.tsv"),
    ("sip/sipnab_register-invite-reinvite-bye.pcap", ".expected.tsv"),
    ("sip/sipnab_b2bua-asterisk.pcapng", ".expected.tsv"),
    ("sip/sipnab_DTMFsipinfo.pcap", ".expected.tsv"),
    ("sip/zeek_sip-wireshark.pcap", ".expected.tsv"),
    ("sip/suricata_sip-compact-form.pcap", ".expected.tsv"),
    ("sip/suricata_sip-sdp.pcap", ".expected.tsv"),
    ("rtp/sipnab_sip-rtp-g711.pcap", ".expected-sip.tsv"),
    ("rtp/sipnab_rtp-protocol.pcap", ".expected-sip.tsv"),
    ("rtp/sipnab_SIP_DTMF2.cap", ".expected-sip.tsv"),
    ("mixed/sipnab_SIP_CALL_RTP_G711.pcap", ".expected-sip.tsv"),
    ("mixed/suricata_sip-method.pcap", ".expected-sip.tsv"),
]

# Filter sets: (policy, filters)
ALLOW = ("allow", [])
SOME = (
    "deny",
    [
        Filter(id="u", type="sip_user", pattern="*1*"),
        Filter(id="c", type="codec", pattern="G722"),
    ],
)
TARGETS = ("deny", [Filter(id="t", type="sip_user", pattern="target-*")])
NOBODY = ("deny", [Filter(id="n", type="sip_user", pattern="nobody")])
VIPS = ("deny", [Filter(id="v", type="sip_user", pattern="vip-*")])


def _sizes(seed: int | None, fixed: int):
    if seed is None:
        while True:
            yield fixed
    rng = random.Random(seed)
    while True:
        yield rng.choice((1, 2, 3, 17, 64, 333, 1000, fixed))


def outputs(mode, path: Path, chunk: int, seed: int | None, ticks: bool) -> list[bytes]:
    """Everything ``mode`` hands on for the capture, one bytes item per packet, event,
    call boundary and the final counters."""
    src = FileSource(str(path))
    ifs = mode.interfaces
    out: list[bytes] = []

    def take(kind: str, fwd) -> None:
        out.append(kind.encode())
        c = fwd.chunk
        off = 0
        for i in range(len(c)):
            cap = c.caplen[i]
            iface = c.iface if isinstance(c.iface, int) else c.iface[i]
            meta = fwd.meta.get(i)
            m = (
                b"-"
                if meta is None
                else meta.SerializeToString(deterministic=True)
                if hasattr(meta, "SerializeToString")
                else repr(list(meta)).encode()
            )
            out.append(
                b"%d %d %d %d " % (c.ts_ns[i], cap, c.origlen[i], iface)
                + bytes(c.records[off : off + 16 + cap])
                + b" "
                + m
            )
            off += 16 + cap
        out.extend(b"E" + ev.SerializeToString(deterministic=True) for ev in fwd.events)

    sizes = _sizes(seed, chunk)
    while (ch := src.read(next(sizes))) is not None:
        ifs[:] = src.interfaces
        take("p", mode.process(ch))
        if ticks:
            take("t", mode.tick(ch.ts_ns[len(ch) - 1] + 2 * 10**9))
    take("f", mode.finish())
    c = mode.counters()
    out.append(repr((sorted(c.figures.items()), sorted(c.dropped.items()), c.summary)).encode())
    return out


def new_mode(kind: str, policy: str, filters: list, cfg: VoipConfig):
    ctx = ModeContext([], policy=policy, events="all")
    if kind == "voip":
        mode = voip_mode(ctx, cfg)
    else:
        mode = SessionMode(ctx, SipDissector(cfg), cfg.limits())
    mode.apply(compile_filters(filters, "h", VOIP_FILTER_TYPES))
    return mode


def digest(items: list[bytes]) -> str:
    h = hashlib.sha256()
    for x in items:
        h.update(len(x).to_bytes(8, "big"))
        h.update(x)
    return h.hexdigest()[:24]


def _ip(a: str) -> bytes:
    return bytes(map(int, a.split(".")))


def _udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, _ip(src), _ip(dst))
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + udp


def _udp6(sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64, b"\xfd" + bytes(14) + b"\x02",
                      b"\xfd" + bytes(14) + b"\x01")  # fmt: skip
    return b"\x02" * 6 + b"\x04" * 6 + b"\x86\xdd" + ip6 + udp


def _vlan(frame: bytes) -> bytes:
    return frame[:12] + b"\x81\x00\x00\x07" + frame[12:]


def _ip_options(frame: bytes) -> bytes:
    """The IPv4 header grows a 4-byte option (NOPs): IHL 6."""
    ip = bytearray(frame[14:34])
    ip[0] = 0x46
    struct.pack_into("!H", ip, 2, struct.unpack_from("!H", ip, 2)[0] + 4)
    return frame[:14] + bytes(ip) + b"\x01\x01\x01\x00" + frame[34:]


def _sip(
    first: str, cid: str, cseq: str, frm: str, to: str, extra: str = "", sdp: str = ""
) -> bytes:
    return (
        f"{first}\r\nVia: SIP/2.0/UDP 10.9.0.1:5060;branch=z9hG4bK{cid}{cseq.split()[0]}\r\n"
        f"From: <sip:{frm}@10.9.0.1>;tag=f\r\nTo: <sip:{to}@10.9.0.2>\r\n{extra}"
        f"Call-ID: {cid}\r\nCSeq: {cseq}\r\n"
        + ("Content-Type: application/sdp\r\n" if sdp else "")
        + f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()


def _sdp(ip: str, port: int, rtcp_mux: bool = False) -> str:
    fam = "IP6" if ":" in ip else "IP4"
    return (
        f"v=0\r\no=- 1 1 IN {fam} {ip}\r\ns=-\r\nc=IN {fam} {ip}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 8 0\r\na=rtpmap:8 PCMA/8000\r\n"
        + ("a=rtcp-mux\r\n" if rtcp_mux else "")
    )


def _rtp(seq: int, pt: int = 8) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, seq * 160, 0x5150) + bytes(40)


def _rtcp() -> bytes:
    return struct.pack("!BBHI", 0x80, 201, 1, 0x5150)  # an empty RR


def make_tricky_capture(path: Path, calls: int = 90, seed: int = 3) -> None:
    """Overlapping calls that stress the order of things within a chunk: early media held
    until a 200 OK whose P-Asserted-Identity matches ``vip-*`` (every third call), or
    rejected by a 200 that does not; media ports shared with an earlier call (the newer
    SDP takes them over); re-INVITEs moving the media to new ports; rtcp-mux RTCP on the
    RTP port; RTCP on port + 1; IPv6, VLAN-tagged and IPv4-with-options media (the slow
    path); frames cut short by the snap length; timestamps going back now and then; calls
    left unanswered; a runt frame last."""
    rng = random.Random(seed)
    pkts: list[tuple[int, bytes]] = []
    t0 = 1_700_000_000 * 10**9
    a, b = "10.9.0.1", "10.9.0.2"
    for k in range(calls):
        cid = f"tricky-{k}"
        t = t0 + k * 37_000_000 + rng.randrange(0, 5_000_000)
        # Every fifth call reuses the ports of the call before it.
        pa = 20000 + 8 * (k - 1 if k % 5 == 4 else k)
        pb = pa + 4
        v6 = k % 11 == 6
        mux = k % 4 == 1
        caller, callee = f"caller-{k}", f"callee-{k}"

        def add(dt: int, frame: bytes, t=t) -> None:
            pkts.append((t + dt, frame))

        add(0, _udp(a, b, 5060, 5060, _sip(f"INVITE sip:{callee}@{b} SIP/2.0", cid, "1 INVITE",
                                           caller, callee, sdp=_sdp(a, pa, mux))))  # fmt: skip
        bip = "fd00::2" if v6 else b
        add(1_000_000, _udp(b, a, 5060, 5060, _sip("SIP/2.0 183 Session Progress", cid,
                                                   "1 INVITE", caller, callee,
                                                   sdp=_sdp(bip, pb, mux))))  # fmt: skip
        early = rng.randrange(3, 40)
        for n in range(early):
            frame = _udp6(pb, pa, _rtp(n)) if v6 else _udp(b, a, pb, pa, _rtp(n))
            if k % 10 == 7 and n == 2:
                frame = frame[:40]  # cut short: the header is there, the payload is not
            add(2_000_000 + n * 5_000_000, frame)
            if mux and n % 7 == 3:
                add(2_000_001 + n * 5_000_000, _udp(b, a, pb, pa, _rtcp()))
        if k % 9 == 8:
            continue  # never answered: held to the end
        ans = 2_000_000 + early * 5_000_000 + rng.randrange(0, 3_000_000)
        pai = f"P-Asserted-Identity: <sip:vip-{k}@x>\r\n" if k % 3 == 0 else ""
        add(ans, _udp(b, a, 5060, 5060, _sip("SIP/2.0 200 OK", cid, "1 INVITE", caller, callee,
                                             pai, sdp=_sdp(bip, pb, mux))))  # fmt: skip
        media = rng.randrange(10, 60)
        moved = k % 6 == 2
        for n in range(media):
            qa, qb = (pa + 2, pb + 2) if moved and n >= media // 2 else (pa, pb)
            if moved and n == media // 2:
                add(ans + 1_000_000 + n * 5_000_000 - 10,
                    _udp(a, b, 5060, 5060, _sip(f"INVITE sip:{callee}@{b} SIP/2.0", cid,
                                                "2 INVITE", caller, callee,
                                                sdp=_sdp(a, qa, mux))))  # fmt: skip
            frame = _udp(a, b, qa, qb, _rtp(n))
            add(ans + 1_000_000 + n * 5_000_000, _ip_options(frame) if k % 13 == 5 else frame)
            frame = _udp6(qb, qa, _rtp(n)) if v6 else _udp(b, a, qb, qa, _rtp(n))
            if k % 7 == 3:
                frame = _vlan(frame)
            add(ans + 1_000_001 + n * 5_000_000, frame)
            if n % 10 == 5:
                add(ans + 1_000_002 + n * 5_000_000, _udp(a, b, qa + 1, qb + 1, _rtcp()))
        end = ans + 1_000_000 + media * 5_000_000
        add(end, _udp(a, b, 5060, 5060, _sip(f"BYE sip:{callee}@{b} SIP/2.0", cid, "3 BYE",
                                             caller, callee)))  # fmt: skip
        add(end + 1_000, _udp(b, a, 5060, 5060, _sip("SIP/2.0 200 OK", cid, "3 BYE", caller,
                                                     callee)))  # fmt: skip
        add(end + 2_000, _udp(a, b, pa, pb, _rtp(999)))  # late RTP, within the grace
    pkts.sort(key=lambda p: p[0])
    pkts.append((pkts[-1][0] + 1, b"\x02" * 20))
    with PcapWriter(path, 1) as w:
        for i, (ts, frame) in enumerate(pkts):
            w.write(ts - 30_000_000 if i % 17 == 16 else ts, frame, len(frame) + 9 * (i % 3))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("voipdiff")
    tricky = d / "tricky.pcap"
    make_tricky_capture(tricky)
    calls = d / "calls.pcap"
    make_voip_capture(
        calls, 60, 60, match_every=4, concurrent=20, tcp_share=0.25, rtcp_interval_s=0.5
    )
    und = d / "undecided.pcap"
    make_undecided_calls_capture(und, calls=300, rtp_per_call=20)
    return {"calls": calls, "undecided": und, "tricky": tricky}


# name -> (capture, filters, config, chunk size, chunk-size seed, ticks)
SYNTH_CASES = {
    "calls-targets": ("calls", TARGETS, {}, 4096, None, False),
    "calls-targets-varied": ("calls", TARGETS, {}, 512, 1, True),
    "calls-allow-varied": ("calls", ALLOW, {}, 256, 2, False),
    "calls-small-buffers": (
        "calls", TARGETS, {"max_call_packets": 7, "max_buffer_bytes": 60_000}, 300, 3, False
    ),
    "calls-evicting": ("calls", TARGETS, {"max_calls": 12}, 700, 4, True),
    "undecided-held": ("undecided", NOBODY, {}, 4096, None, False),
    "undecided-bounded": (
        "undecided", NOBODY, {"max_calls": 100, "max_buffer_bytes": 400_000}, 999, 5, False
    ),
    "undecided-timeout": ("undecided", NOBODY, {"decide_timeout_ns": 10**8}, 64, 6, True),
    "tricky-vips": ("tricky", VIPS, {}, 4096, None, False),
    "tricky-vips-varied": ("tricky", VIPS, {}, 200, 8, True),
    "tricky-allow": ("tricky", ALLOW, {}, 150, 9, False),
    "tricky-small-buffers": (
        "tricky", VIPS, {"max_call_packets": 9, "max_buffer_bytes": 30_000}, 400, 10, False
    ),
    "tricky-evicting": ("tricky", VIPS, {"max_calls": 6}, 500, 11, True),
}  # fmt: skip

# Recorded with the per-packet engine (commit d48206c), before the VoIP fast path.
GOLDEN = {
    "sip/heplify_sip_ipv4_tcp.pcap:allow:512:None": "160e4cadbe2cadbee63438df",
    "sip/heplify_sip_ipv4_tcp.pcap:allow:64:7": "1320cb36b9cb45caa895608d",
    "sip/heplify_sip_ipv4_tcp.pcap:some:512:None": "a79d91b5e162e6507532a808",
    "sip/heplify_sip_ipv4_tcp.pcap:some:64:7": "cfd8983dbfc0fe08cb043554",
    "sip/heplify_sip_ipv6_udp.pcap:allow:512:None": "7cd5d3024a19ae918bd6e3a2",
    "sip/heplify_sip_ipv6_udp.pcap:allow:64:7": "15f722f87b01105e27587e8c",
    "sip/heplify_sip_ipv6_udp.pcap:some:512:None": "0e9e6ad9b7a6e8433f080039",
    "sip/heplify_sip_ipv6_udp.pcap:some:64:7": "416c7b1d8bd6ac4b746b364c",
    "sip/sipnab_register-invite-reinvite-bye.pcap:allow:512:None": "3270f2cad1b6eacfa7b845ca",
    "sip/sipnab_register-invite-reinvite-bye.pcap:allow:64:7": "7ec60691797c05640f503d80",
    "sip/sipnab_register-invite-reinvite-bye.pcap:some:512:None": "57cf7694364af47183d9dd38",
    "sip/sipnab_register-invite-reinvite-bye.pcap:some:64:7": "3c0a417ede23ed97bcc8d3d5",
    "sip/sipnab_b2bua-asterisk.pcapng:allow:512:None": "09b966e982d6a5fb23ea879f",
    "sip/sipnab_b2bua-asterisk.pcapng:allow:64:7": "df1aac9a19c0fbddec7f5359",
    "sip/sipnab_b2bua-asterisk.pcapng:some:512:None": "2ef91e48ead7509990d21f69",
    "sip/sipnab_b2bua-asterisk.pcapng:some:64:7": "1040f88c9f638cb844142118",
    "sip/sipnab_DTMFsipinfo.pcap:allow:512:None": "3f11490733bff4058676a1f3",
    "sip/sipnab_DTMFsipinfo.pcap:allow:64:7": "28995a9b21ac3551d59ecbe2",
    "sip/sipnab_DTMFsipinfo.pcap:some:512:None": "3f11490733bff4058676a1f3",
    "sip/sipnab_DTMFsipinfo.pcap:some:64:7": "28995a9b21ac3551d59ecbe2",
    "sip/zeek_sip-wireshark.pcap:allow:512:None": "304f66029b17d1b81209da1f",
    "sip/zeek_sip-wireshark.pcap:allow:64:7": "87d4cbc12bfcbd9d4901862b",
    "sip/zeek_sip-wireshark.pcap:some:512:None": "8843a94362fc9c8390807aa7",
    "sip/zeek_sip-wireshark.pcap:some:64:7": "9a21ca9bf61452e8d9d5adb7",
    "sip/suricata_sip-compact-form.pcap:allow:512:None": "eb881445b54ea8f886af2a5f",
    "sip/suricata_sip-compact-form.pcap:allow:64:7": "af7806ed8718f30dad365aa4",
    "sip/suricata_sip-compact-form.pcap:some:512:None": "97326afb7647dd0f0aac218a",
    "sip/suricata_sip-compact-form.pcap:some:64:7": "93fdfff1d885e4a79007a621",
    "sip/suricata_sip-sdp.pcap:allow:512:None": "3d58e38692cfbaa66caa031f",
    "sip/suricata_sip-sdp.pcap:allow:64:7": "31a1eb305eef745e8cf1ec88",
    "sip/suricata_sip-sdp.pcap:some:512:None": "c6533e7894da68b8a64ddb9e",
    "sip/suricata_sip-sdp.pcap:some:64:7": "8fb88d02ab2a860c8f67b22a",
    "rtp/sipnab_sip-rtp-g711.pcap:allow:512:None": "806f97e5ac9092d17ecbc642",
    "rtp/sipnab_sip-rtp-g711.pcap:allow:64:7": "166ae9ad4105234c6d479cef",
    "rtp/sipnab_sip-rtp-g711.pcap:some:512:None": "7e0e6a5aa658dddad70a0f35",
    "rtp/sipnab_sip-rtp-g711.pcap:some:64:7": "217fea8109c70bcbc1e69f24",
    "rtp/sipnab_rtp-protocol.pcap:allow:512:None": "f0823ae1ccc6743770b88d7c",
    "rtp/sipnab_rtp-protocol.pcap:allow:64:7": "bc5c19f106c4bd97e7201ed3",
    "rtp/sipnab_rtp-protocol.pcap:some:512:None": "56fee0737fd798aac640b302",
    "rtp/sipnab_rtp-protocol.pcap:some:64:7": "92682dd43f349d40efa2fab4",
    "rtp/sipnab_SIP_DTMF2.cap:allow:512:None": "a69a09a6c0917155c7fe3b59",
    "rtp/sipnab_SIP_DTMF2.cap:allow:64:7": "7a6ce67d42d278c741e47674",
    "rtp/sipnab_SIP_DTMF2.cap:some:512:None": "4fdf2dc2d10278c67c69ab48",
    "rtp/sipnab_SIP_DTMF2.cap:some:64:7": "f9364e32261c78765e0331de",
    "mixed/sipnab_SIP_CALL_RTP_G711.pcap:allow:512:None": "dfa84b6cb4ab407bd3fb6dd5",
    "mixed/sipnab_SIP_CALL_RTP_G711.pcap:allow:64:7": "563ebac6ec32efbb1d3e9d27",
    "mixed/sipnab_SIP_CALL_RTP_G711.pcap:some:512:None": "aa28fba655b78a912a4edd8e",
    "mixed/sipnab_SIP_CALL_RTP_G711.pcap:some:64:7": "6e69500fcd1c30d5749f815e",
    "mixed/suricata_sip-method.pcap:allow:512:None": "83f049b014fa138ca806df9f",
    "mixed/suricata_sip-method.pcap:allow:64:7": "1a2aa27ea63688892c350167",
    "mixed/suricata_sip-method.pcap:some:512:None": "dde70e8170bfad255caa7c80",
    "mixed/suricata_sip-method.pcap:some:64:7": "4bd84f9a32e876eec1e8ca99",
    "calls-targets": "00d0831336fd648d6d34260e",
    "calls-targets-varied": "e479a562a613fcb34c466588",
    "calls-allow-varied": "d9c7207d50524477a12d0a48",
    "calls-small-buffers": "4496daab5217ec7b84252219",
    "calls-evicting": "e32c9f67ce45cabba35b51ab",
    "undecided-held": "d225d4a2ee28fea39f0e1f37",
    "undecided-bounded": "a70d71ad3ddf4326f4c056e8",
    "undecided-timeout": "977a9aa07c8cd3851eb2316d",
    "tricky-vips": "ede7b015f839d5d3854500ef",
    "tricky-vips-varied": "a9cae6ae284b89ea63829844",
    "tricky-allow": "2218ea3621cf776540cb0931",
    "tricky-small-buffers": "811929cedfcc76fa93413bae",
    "tricky-evicting": "f0a9e24f2f576377170299e9",
}


def _corpus_runs():
    for name, oracle in CORPUS_CASES:
        for fname, fl in (("allow", ALLOW), ("some", SOME)):
            for size, seed in ((512, None), (64, 7)):
                yield f"{name}:{fname}:{size}:{seed}", name, oracle, fl, size, seed


CORPUS_RUNS = list(_corpus_runs())


def _corpus_outputs(kind, name, oracle, fl, size, seed):
    need_corpus()
    path = CORPUS / name
    ports = sip_ports(tsv(Path(str(path) + oracle))) | {5060}
    cfg = VoipConfig(sip_ports=frozenset(ports))
    return outputs(new_mode(kind, fl[0], fl[1], cfg), path, size, seed, ticks=seed is not None)


def _synth_outputs(kind, synthetic, case):
    cap, fl, cfg, size, seed, ticks = SYNTH_CASES[case]
    return outputs(new_mode(kind, fl[0], fl[1], VoipConfig(**cfg)), synthetic[cap], size, seed,
                   ticks)  # fmt: skip


def _check_golden(key: str, items: list[bytes]) -> None:
    got = digest(items)
    if os.environ.get("LC_VOIP_GOLDEN") == "print":
        print(f"GOLDEN {key!r}: {got!r},")
        return
    assert GOLDEN.get(key) == got, f"{key}: output differs from the recorded one"


@pytest.mark.parametrize(
    "key,name,oracle,fl,size,seed", CORPUS_RUNS, ids=[r[0] for r in CORPUS_RUNS]
)
def test_corpus_output_is_unchanged(key, name, oracle, fl, size, seed):
    _check_golden(key, _corpus_outputs("voip", name, oracle, fl, size, seed))


@pytest.mark.parametrize("case", list(SYNTH_CASES))
def test_synthetic_output_is_unchanged(synthetic, case):
    _check_golden(case, _synth_outputs("voip", synthetic, case))


def _same(a: list[bytes], b: list[bytes]) -> None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        assert x == y, f"output item {i} differs:\n{x[:300]!r}\n{y[:300]!r}"
    assert len(a) == len(b)


@pytest.mark.parametrize(
    "key,name,oracle,fl,size,seed", CORPUS_RUNS, ids=[r[0] for r in CORPUS_RUNS]
)
def test_corpus_same_as_generic_engine(key, name, oracle, fl, size, seed):
    _same(
        _corpus_outputs("voip", name, oracle, fl, size, seed),
        _corpus_outputs("generic", name, oracle, fl, size, seed),
    )


@pytest.mark.parametrize("case", list(SYNTH_CASES))
def test_synthetic_same_as_generic_engine(synthetic, case):
    _same(_synth_outputs("voip", synthetic, case), _synth_outputs("generic", synthetic, case))


def _frames_of(path: Path) -> list[tuple[int, bytes]]:
    from lc.common.pcapfile import open_capture

    with open_capture(path) as r:
        return [(ts, bytes(data)) for ts, _, data, _ in r.records()]


def _chunked_outputs(kind: str, frames: list, sizes: list[int], fl, cfg: dict) -> list[bytes]:
    from array import array

    from lc.common.pcapfile import frame_records
    from lc.hunter.capture import Chunk

    mode = new_mode(kind, fl[0], fl[1], VoipConfig(**cfg))
    mode.interfaces[:] = [("eth0", 1), ("raw", 101)]
    out: list[bytes] = []
    i = k = 0
    while i < len(frames):
        part = frames[i : i + sizes[k % len(sizes)]]
        i += len(part)
        k += 1
        ts = array("q", [t for t, _ in part])
        caps = array("I", [len(b) for _, b in part])
        # Every 7th frame from the second interface (raw IP: never the media fast path).
        ifs = array("H", [int(j % 7 == 3) for j in range(len(part))])
        recs = frame_records(ts, caps, caps, b"".join(b for _, b in part))
        fwd = mode.process(Chunk(ts, caps, array("I", caps), recs, ifs if k % 2 else 0))
        c = fwd.chunk
        off = 0
        for j in range(len(c)):
            cap = c.caplen[j]
            meta = fwd.meta.get(j)
            m = b"-" if meta is None else meta.SerializeToString(deterministic=True)
            out.append(bytes(c.records[off : off + 16 + cap]) + m)
            off += 16 + cap
        out.extend(ev.SerializeToString(deterministic=True) for ev in fwd.events)
    out.extend(ev.SerializeToString(deterministic=True) for ev in mode.finish().events)
    c = mode.counters()
    out.append(repr((sorted(c.figures.items()), sorted(c.dropped.items()))).encode())
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_damaged_frames_in_big_chunks_same_as_generic_engine(synthetic, data) -> None:
    """Frames of the tricky capture, some damaged (bytes of their headers and SIP
    overwritten, cut short), some from a raw-IP interface, in chunks big enough for
    the bulk path: the same output as the per-packet engine."""
    frames = _frames_of(synthetic["tricky"])
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    damaged = []
    for ts, b in frames:
        r = rng.random()
        if r < 0.03:
            b = bytearray(b)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(min(len(b), 80))] = rng.randrange(256)
            b = bytes(b)
        elif r < 0.04:
            b = b[: rng.randrange(len(b) + 1)]
        damaged.append((ts, b))
    sizes = data.draw(st.lists(st.integers(64, 700), min_size=1, max_size=4))
    fl = data.draw(st.sampled_from([VIPS, ALLOW, SOME]))
    cfg = data.draw(st.sampled_from([{}, {"max_calls": 8}, {"max_call_packets": 5}]))
    _same(
        _chunked_outputs("voip", damaged, sizes, fl, cfg),
        _chunked_outputs("generic", damaged, sizes, fl, cfg),
    )


def test_a_chunk_ending_in_runt_frames(synthetic) -> None:
    """The bulk path reads 32 header bytes of every frame; frames at the end of a chunk
    shorter than that (empty, 5 bytes) must not read past the records (IndexError
    before: the padding covered one short frame only)."""
    frames = _frames_of(synthetic["tricky"])[:200]
    t = frames[-1][0]
    frames += [(t + 1, b""), (t + 2, b"\x00" * 5), (t + 3, b""), (t + 4, b"")]
    for sizes in ([len(frames)], [100], [64, 140]):
        _same(
            _chunked_outputs("voip", frames, sizes, ALLOW, {}),
            _chunked_outputs("generic", frames, sizes, ALLOW, {}),
        )
