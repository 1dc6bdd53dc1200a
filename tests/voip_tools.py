"""Test and benchmark tooling for lc's VoIP mode (``lc hunt voip``).

Three independent pieces:

Live calls (sipp on loopback; root for tcpdump and for sipp's raw-socket RTP playback)
    :func:`run_uas` starts the answering side (``tests/sipp/uas.xml``),
    :func:`place_calls` places calls to it and returns their Call-IDs and callees, and
    :func:`tcpdump_capture` records the traffic as the reference capture.

The oracle (tshark, independent of lc)
    :func:`calls_by_tshark` lists, per Call-ID, the frames tshark ties to the call:
    its SIP frames, and the RTP/RTCP frames whose stream tshark set up from the call's
    SDP. :func:`frame_bytes` and :func:`call_packets` turn frame numbers into
    ``(ts_ns, bytes)`` so that a per-call file written by lc (whose frame numbers differ)
    can be compared with them.

Synthetic captures (no sipp, fast)
    :func:`make_voip_capture` writes a realistic Ethernet/IPv4 SIP + RTP + RTCP capture of
    many overlapping calls, some of them to ``target-<n>`` users, and returns what it
    wrote per call; :func:`make_undecided_calls_capture` writes calls that are never
    answered nor ended (with early media), to load a hunter's buffer of undecided calls.

Caveats of the oracle are in :func:`calls_by_tshark`'s docstring.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lc.common.pcapfile import PcapWriter, open_capture

SIPP_DIR = Path(__file__).resolve().parent / "sipp"
UAS_XML = SIPP_DIR / "uas.xml"
UAC_XML = SIPP_DIR / "uac.xml"
UAC_TCP_XML = SIPP_DIR / "uac_tcp.xml"

__all__ = [
    "UAC_TCP_XML",
    "UAC_XML",
    "UAS_XML",
    "CallFrames",
    "PlacedCalls",
    "call_packets",
    "calls_by_tshark",
    "frame_bytes",
    "free_port",
    "make_undecided_calls_capture",
    "make_voip_capture",
    "place_calls",
    "run_uas",
    "sipp_media_dir",
    "stop_process",
    "tcpdump_capture",
]


# =========================================================================== processes


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
    """Stop one process we started (``sig``, then SIGKILL after ``timeout``); its exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


@contextlib.contextmanager
def tcpdump_capture(
    path: str | os.PathLike[str],
    bpf: str,
    interface: str = "lo",
    nano: bool = True,
    start_timeout: float = 20,
) -> Iterator[subprocess.Popen]:
    """Record ``bpf`` on ``interface`` into ``path`` while the ``with`` body runs.

    Runs ``tcpdump -i lo -n -U -Z root --immediate-mode -B 65536 -w PATH BPF`` (with
    ``--time-stamp-precision=nano`` when ``nano``): -U and --immediate-mode so that
    stopping loses nothing, -B so that a burst is not dropped, -Z root so that tcpdump
    can write where root can. Returns once tcpdump says "listening on"; on exit sends
    SIGINT and waits, so the file is complete when the ``with`` ends.

    While it runs, one socket with ``SO_TIMESTAMPNS`` stays open: that makes the kernel
    stamp each packet once when it is received (``net_enable_timestamp``), so tcpdump and
    the hunter read the same timestamp. Without any such socket, each packet socket
    reads the clock itself as the packet reaches it, and two captures of the same packet
    differ by a microsecond or more (whether some other process had enabled it decided
    whether exact-timestamp comparisons passed).

    Raises:
        AssertionError: tcpdump did not start (not root, bad filter...).
    """
    with shared_kernel_timestamps():
        yield from _tcpdump(path, bpf, interface, nano, start_timeout)


@contextlib.contextmanager
def shared_kernel_timestamps() -> Iterator[None]:
    """Keep the kernel stamping received packets once, for every capture alike."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_TIMESTAMPNS", 35), 1)  # 35: Linux
        time.sleep(0.05)  # the kernel enables it through a deferred static-key update
        yield


def _tcpdump(
    path: str | os.PathLike[str], bpf: str, interface: str, nano: bool, start_timeout: float
) -> Iterator[subprocess.Popen]:
    cmd = ["tcpdump", "-i", interface, "-n", "-U", "-Z", "root", "--immediate-mode"]
    cmd += ["-B", "65536"]
    if nano:
        cmd.append("--time-stamp-precision=nano")
    cmd += ["-w", os.fspath(path), bpf]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_listening(proc, start_timeout)
        yield proc
    finally:
        if proc.poll() is None:
            time.sleep(0.2)  # let the last packets the body sent reach the ring
            proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=10)


def _wait_listening(proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    seen = []
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.2)
        if ready:
            line = proc.stderr.readline()
            if "listening on" in line:
                return
            if not line:
                break
            seen.append(line)
    stop_process(proc, signal.SIGKILL)
    raise AssertionError(f"tcpdump did not start: {''.join(seen)!r}")


def free_port(kind: int = socket.SOCK_DGRAM, ip: str = "127.0.0.1") -> int:
    """A port the kernel just gave out for ``kind`` on ``ip`` (free for UDP and TCP if asked)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((ip, 0))
            port = s.getsockname()[1]
        other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, other) as s:
            try:
                s.bind((ip, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both UDP and TCP")


def _bound(port: int, transport: str) -> bool:
    """Whether something on this host listens on ``port`` (UDP bound / TCP LISTEN)."""
    table = "/proc/net/udp" if transport == "udp" else "/proc/net/tcp"
    want = f":{port:04X}"
    with open(table) as f:
        next(f)
        for line in f:
            cols = line.split()
            if cols[1].endswith(want) and (transport == "udp" or cols[3] == "0A"):
                return True
    return False


# =========================================================================== sipp


def sipp_media_dir() -> Path:
    """The directory holding ``g711a.pcap``, the sample RTP shipped with sipp."""
    for d in (Path("/usr/share/sip-tester"), Path("/usr/share/sipp")):
        if (d / "g711a.pcap").is_file():
            return d
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["dpkg", "-L", "sip-tester"], capture_output=True, text=True, timeout=30
        ).stdout
        for line in out.splitlines():
            if line.endswith("/g711a.pcap"):
                return Path(line).parent
    raise FileNotFoundError("g711a.pcap (shipped with sipp, Debian package sip-tester) not found")


def _workdir(workdir: str | os.PathLike[str] | None, prefix: str) -> Path:
    if workdir is None:
        return Path(tempfile.mkdtemp(prefix=prefix))
    d = Path(workdir)
    d.mkdir(parents=True, exist_ok=True)
    return d


def _transport_flag(transport: str) -> str:
    if transport not in ("udp", "tcp"):
        raise ValueError(f"transport must be 'udp' or 'tcp', not {transport!r}")
    return "u1" if transport == "udp" else "t1"


def run_uas(
    port: int,
    *,
    calls: int | None = None,
    transport: str = "udp",
    ip: str = "127.0.0.1",
    media_port: int = 20000,
    workdir: str | os.PathLike[str] | None = None,
    start_timeout: float = 10,
) -> subprocess.Popen:
    """Start the test UAS (``tests/sipp/uas.xml``) on ``ip:port``; the sipp process.

    It answers every INVITE with 100, 180 and a 200 OK whose SDP announces
    ``media_port + 4 * ((call number - 1) % 2500)`` (sipp's ``[auto_media_port]``), so up
    to 2500 concurrent calls get distinct RTP ports; it does not echo RTP. With ``calls``
    it exits by itself about 2 s after the ``calls``-th call ended (``-m``); otherwise it
    runs until :func:`stop_process`. Its screen and logs go to ``workdir`` (``uas.log``).
    Returns once the port is bound (UDP) or listening (TCP).
    """
    d = _workdir(workdir, "lc-sipp-uas-")
    cmd = ["sipp", "-sf", str(UAS_XML), "-i", ip, "-p", str(port), "-t", _transport_flag(transport)]
    cmd += ["-mi", ip, "-mp", str(media_port), "-nostdin", "-trace_err"]
    if calls is not None:
        cmd += ["-m", str(calls)]
    log = open(d / "uas.log", "w")  # noqa: SIM115 (the process owns it)
    try:
        proc = subprocess.Popen(
            cmd, cwd=d, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    finally:
        log.close()
    deadline = time.monotonic() + start_timeout
    while not _bound(port, transport):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc, signal.SIGKILL)
            raise AssertionError(f"sipp UAS did not start: {_tail(d / 'uas.log')}")
        time.sleep(0.05)
    return proc


@dataclass
class PlacedCalls:
    """What :func:`place_calls` did."""

    call_ids: dict[str, str]  # Call-ID -> callee user, in the order of ``users``
    from_user: str
    transport: str
    workdir: Path
    returncodes: list[int] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(rc == 0 for rc in self.returncodes)


def place_calls(
    uas_port: int,
    users: Sequence[str],
    from_user: str = "caller",
    concurrent: int = 10,
    call_seconds: float = 3.0,
    transport: str = "udp",
    *,
    rtp: bool = True,
    ip: str = "127.0.0.1",
    media_port: int = 30000,
    rate: float = 10.0,
    timeout: float | None = None,
    workdir: str | os.PathLike[str] | None = None,
    check: bool = True,
    scenario: Path | None = None,
) -> PlacedCalls:
    """Place ``len(users)`` calls to the UAS on ``ip:uas_port``, call ``i`` to ``users[i]``.

    Every call: INVITE with SDP from ``from_user``, 100/180/200, ACK, RTP for
    ``call_seconds`` (the G.711 sample played from ``pcap/g711a.pcap``, cut short when the
    call ends; ``rtp`` and UDP only: needs root), BYE, 200.

    sipp takes the callee from ``-s`` (``[service]``), one per process, so one sipp UAC
    runs per distinct user, all at once, each with its own SIP port and media-port base
    (``media_port`` upwards, 4 ports per call, distinct for all calls of one run of at
    most 2500 calls). ``concurrent`` (sipp's ``-l``) is shared out between them in
    proportion to their calls, at least 1 each; ``rate`` (``-r``, calls per second) is
    per process. The Call-IDs are set with ``-cid_str`` (``lc<token>-<process>-<call
    number>@<ip>``), so they are known without reading any log; tshark confirms them.

    ``scenario`` replaces the UAC scenario file (e.g. ``tests/sipp/uac_long.xml``, a
    64 s call). ``transport="tcp"`` (or ``rtp=False``) uses ``tests/sipp/uac_tcp.xml``: the same
    signalling (SDP included), no RTP. Everything is bounded by ``timeout`` (default:
    enough for the calls at ``concurrent`` at a time, plus 60 s).

    Raises:
        RuntimeError: a sipp UAC failed or timed out (with ``check``; its log tail).
    """
    if not users:
        raise ValueError("no calls to place")
    if len(users) > 2500:
        raise ValueError("at most 2500 calls per run (sipp's media ports repeat after that)")
    tflag = _transport_flag(transport)
    if scenario is None:
        scenario = UAC_XML if (rtp and transport == "udp") else UAC_TCP_XML
    d = _workdir(workdir, "lc-sipp-uac-")
    if scenario is not UAC_TCP_XML and not (d / "pcap").exists():
        (d / "pcap").symlink_to(sipp_media_dir())
    groups: dict[str, int] = {}
    for u in users:
        groups[u] = groups.get(u, 0) + 1
    waves = math.ceil(len(users) / max(1, concurrent))
    bound = timeout if timeout is not None else waves * (call_seconds + 5) + 60
    token = uuid.uuid4().hex[:8]
    result = PlacedCalls({}, from_user, transport, d)
    procs: list[tuple[subprocess.Popen, Path]] = []
    ids_by_user: dict[str, list[str]] = {}
    base = media_port
    try:
        for k, (user, count) in enumerate(groups.items()):
            limit = max(1, round(concurrent * count / len(users)))
            log = d / f"uac-{k}.log"
            cmd = ["sipp", "-sf", str(scenario), f"{ip}:{uas_port}", "-s", user]
            cmd += ["-set", "from_user", from_user, "-d", str(round(call_seconds * 1000))]
            cmd += ["-i", ip, "-p", str(free_port(ip=ip)), "-t", tflag]
            cmd += ["-mi", ip, "-mp", str(base), "-m", str(count), "-l", str(limit)]
            cmd += ["-r", str(rate), "-cid_str", f"lc{token}-{k}-%u@%s", "-nostdin"]
            cmd += ["-timeout", str(math.ceil(bound)), "-timeout_error", "-trace_err"]
            ids_by_user[user] = [f"lc{token}-{k}-{n}@{ip}" for n in range(1, count + 1)]
            base += 4 * count
            with open(log, "w") as f:
                proc = subprocess.Popen(
                    cmd, cwd=d, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT
                )
            procs.append((proc, log))
        deadline = time.monotonic() + bound + 15
        for proc, log in procs:
            try:
                rc = proc.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                rc = stop_process(proc)
                rc = rc if rc != 0 else -1
            result.returncodes.append(rc)
            result.logs.append(log)
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                stop_process(proc)
    # Call-IDs in the order of ``users``.
    taken = {u: iter(ids) for u, ids in ids_by_user.items()}
    for u in users:
        result.call_ids[next(taken[u])] = u
    if check and not result.ok:
        tails = "\n".join(
            f"--- {log.name} (exit {rc}):\n{_tail(log)}"
            for rc, log in zip(result.returncodes, result.logs, strict=True)
            if rc != 0
        )
        raise RuntimeError(f"sipp UAC failed:\n{tails}")
    return result


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"({e})"
    # sipp's screen is redrawn with escape sequences; keep the last readable lines.
    return "\n".join(text.replace("\x1b", "").splitlines()[-lines:])


# =========================================================================== the oracle


@dataclass
class CallFrames:
    """The frames tshark ties to one Call-ID (frame numbers count from 1)."""

    call_id: str
    sip: list[int] = field(default_factory=list)  # frames carrying (part of) its SIP
    rtp: list[int] = field(default_factory=list)
    rtcp: list[int] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)  # "INVITE", "100", "200", "ACK", ...
    from_user: str | None = None  # of its first CSeq-INVITE message
    to_user: str | None = None
    media_ports: set[int] = field(default_factory=set)  # m= ports of its SDP bodies

    def frames(self) -> list[int]:
        """Every frame of the call, in file order."""
        return sorted({*self.sip, *self.rtp, *self.rtcp})


def _tshark_fields(
    pcap: str | os.PathLike[str], display_filter: str, fields: Sequence[str], extra: Sequence[str]
) -> list[list[str]]:
    cmd = ["tshark", "-n", "-r", os.fspath(pcap), *extra, "-Y", display_filter, "-T", "fields"]
    cmd += ["-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=|"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def _multi(cell: str) -> list[str]:
    return cell.split("|") if cell else []


def calls_by_tshark(
    pcap: str | os.PathLike[str], sip_ports: Iterable[int] = ()
) -> dict[str, CallFrames]:
    """Per Call-ID, the SIP, RTP and RTCP frames tshark 4.0 ties to that call.

    Two tshark passes over the file: ``-Y sip`` (frame number, Call-ID, method, status,
    CSeq method, From/To users, SDP media ports, TCP segments) and ``-Y "rtp || rtcp"``
    (frame number, ``rtp.setup-frame``, ``rtcp.setup-frame``). An RTP/RTCP frame belongs
    to the call(s) of the SIP frame whose SDP set up its stream. ``sip_ports`` are
    decoded as SIP on UDP and TCP (``-d``) besides tshark's own 5060 and heuristics.

    Caveats (what the oracle can and cannot say):

    * RTP/RTCP is only attributed through SDP: tshark's RTP heuristic is off by
      default, so a stream on a port no SDP announced is not RTP to tshark and belongs
      to no call; neither do ICMP errors, SIP-less TCP segments (handshake, FIN, bare
      ACKs) or IP fragments. RTCP is recognised on the SDP port + 1 (no ``a=rtcp:``).
    * A stream is tied to the SIP frame of the *latest* SDP that announced its
      address:port (on either side), so a port reused by a later call moves to that call
      from that frame on, and re-INVITEs keep the stream in the same call.
    * SIP over TCP: a message split over segments is dissected at its last segment;
      ``sip`` also lists the earlier segments (``tcp.segment``). Several messages in one
      segment are split with ``|``; when they belong to different calls, the frame is
      in each. ``messages`` labels each message with its method or status code, in
      order (from the Info column when a frame mixes requests and responses).
    * The file is read in one pass, so a stream is only tied to SDP seen before it.
    """
    extra: list[str] = []
    for p in sip_ports:
        extra += ["-d", f"udp.port=={p},sip", "-d", f"tcp.port=={p},sip"]
    fields = [
        "frame.number",
        "sip.Call-ID",
        "sip.Method",
        "sip.Status-Code",
        "sip.CSeq.method",
        "sip.from.user",
        "sip.to.user",
        "sdp.media.port",
        "tcp.segment",
        "_ws.col.Info",
    ]
    calls: dict[str, CallFrames] = {}
    owners: dict[int, list[str]] = {}
    for row in _tshark_fields(pcap, "sip", fields, extra):
        row += [""] * (len(fields) - len(row))
        num = int(row[0])
        cids = _multi(row[1])
        if not cids:
            continue
        methods, codes, cseqs = _multi(row[2]), _multi(row[3]), _multi(row[4])
        froms, tos, ports = _multi(row[5]), _multi(row[6]), _multi(row[7])
        segments = [int(x) for x in _multi(row[8])]
        owners[num] = list(dict.fromkeys(cids))
        labels = _labels(methods, codes, row[9], len(cids))
        aligned = len(froms) == len(cids) == len(tos) == len(cseqs)
        for i, cid in enumerate(cids):
            c = calls.get(cid)
            if c is None:
                c = calls[cid] = CallFrames(cid)
            for f in (*segments, num):
                if f not in c.sip:
                    c.sip.append(f)
            if labels is not None:
                c.messages.append(labels[i])
            if c.from_user is None and aligned and cseqs[i] == "INVITE":
                c.from_user, c.to_user = froms[i], tos[i]
        if len(owners[num]) == 1:
            calls[cids[0]].media_ports.update(int(p) for p in ports if p.isdigit())
    for c in calls.values():
        c.sip.sort()
    for row in _tshark_fields(
        pcap, "rtp || rtcp", ["frame.number", "rtp.setup-frame", "rtcp.setup-frame"], extra
    ):
        num_s, rtp_setup, rtcp_setup = [*row, "", ""][:3]
        num = int(num_s)
        for setup, attr in ((rtp_setup, "rtp"), (rtcp_setup, "rtcp")):
            if not setup:
                continue
            for cid in owners.get(int(setup.split("|")[0]), ()):
                lst = getattr(calls[cid], attr)
                if not lst or lst[-1] != num:
                    lst.append(num)
    return calls


_INFO_MSG = re.compile(r"(?:^|\| )(?:Request: ([!-~]+)|Status: (\d{3}))")


def _labels(methods: list[str], codes: list[str], info: str, n: int) -> list[str] | None:
    """One label per message of a frame: its method (requests) or status code (responses).

    The Info column lists a frame's messages in order ("Request: INVITE sip:... |
    Status: 100 Trying | ..."); the method and status fields only per kind.
    """
    if len(methods) + len(codes) != n:
        return None
    if not codes:
        return methods
    if not methods:
        return codes
    ordered = [m or c for m, c in _INFO_MSG.findall(info)]
    if len(ordered) == n:
        return ordered
    return methods + codes  # order unknown (see the caveats)


def frame_bytes(pcap: str | os.PathLike[str]) -> list[tuple[int, bytes]]:
    """Every packet of a capture as ``(ts_ns, bytes)``; index ``i`` is tshark's frame ``i+1``."""
    with open_capture(pcap) as r:
        return [(ts, bytes(data)) for ts, _, data, _ in r.records()]


def call_packets(
    pcap: str | os.PathLike[str],
    calls: dict[str, CallFrames],
    which: Iterable[str] | None = None,
) -> dict[str, list[tuple[int, bytes]]]:
    """The ``(ts_ns, bytes)`` of each call's frames (:meth:`CallFrames.frames`), in order.

    ``which`` limits it to some Call-IDs. Compare with :func:`frame_bytes` of lc's
    per-call file: frame numbers differ between files, packets and timestamps do not
    (in replay; a live capture stamps packets itself).
    """
    packets = frame_bytes(pcap)
    ids = calls.keys() if which is None else which
    return {cid: [packets[f - 1] for f in calls[cid].frames()] for cid in ids}


# =========================================================================== synthetic captures

_ETH_IP = b"\x08\x00"
_EPOCH_NS = 1_704_067_200 * 1_000_000_000  # 2024-01-01T00:00:00Z
_RTP_PAYLOAD = 160  # 20 ms of G.711 at 8 kHz
_RTP_PT = 8  # PCMA
_PAYLOAD_VARIANTS = 64
_IP_HDR = struct.Struct(">BBHHHBBH4s4s")
_UDP_HDR = struct.Struct(">HHHH")
_TCP_HDR = struct.Struct(">HHIIBBHHH")
_RTP_PKT = struct.Struct(">HBBHII")  # UDP checksum, then the RTP header
_LITTLE = sys.byteorder == "little"


def _csum_words(data: bytes) -> int:
    """Sum of ``data`` as big-endian 16-bit words (not folded)."""
    if len(data) % 2:
        data += b"\0"
    a = array("H", data)
    if _LITTLE:
        a.byteswap()
    return sum(a)


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _ip_header(src: bytes, dst: bytes, proto: int, length: int, tos: int, ident: int) -> bytes:
    hdr = _IP_HDR.pack(0x45, tos, length, ident, 0x4000, 64, proto, 0, src, dst)
    c = ~_fold(_csum_words(hdr)) & 0xFFFF
    return hdr[:10] + c.to_bytes(2, "big") + hdr[12:]


def _mac(ip: bytes) -> bytes:
    return b"\x02\x00" + ip


def _udp_packet(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes, tos: int) -> bytes:
    ulen = 8 + len(payload)
    pseudo = src + dst + struct.pack(">BBH", 0, 17, ulen)
    s = _csum_words(pseudo + _UDP_HDR.pack(sport, dport, ulen, 0) + payload)
    c = (~_fold(s) & 0xFFFF) or 0xFFFF
    return (
        _mac(dst)
        + _mac(src)
        + _ETH_IP
        + _ip_header(src, dst, 17, 20 + ulen, tos, 0)
        + _UDP_HDR.pack(sport, dport, ulen, c)
        + payload
    )


def _tcp_packet(
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes = b"",
    ident: int = 0,
) -> bytes:
    opts = b"\x02\x04\x05\xb4\x01\x01\x04\x02" if flags & 0x02 else b""  # MSS 1460, SACK ok
    off = (20 + len(opts)) // 4
    hdr = _TCP_HDR.pack(
        sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, off << 4, flags, 64240, 0, 0
    )
    seg = hdr + opts + payload
    pseudo = src + dst + struct.pack(">BBH", 0, 6, len(seg))
    c = ~_fold(_csum_words(pseudo + seg)) & 0xFFFF
    seg = seg[:16] + c.to_bytes(2, "big") + seg[18:]
    return (
        _mac(dst) + _mac(src) + _ETH_IP + _ip_header(src, dst, 6, 20 + len(seg), 0x60, ident) + seg
    )


_SYN, _ACK, _PSH, _FIN = 0x02, 0x10, 0x08, 0x01


class _RtpFlow:
    """One direction of one call's RTP: a fixed header template and checksum parts."""

    __slots__ = ("base_sum", "prefix", "ssrc")

    def __init__(self, src: bytes, dst: bytes, sport: int, dport: int, ssrc: int) -> None:
        ulen = 8 + 12 + _RTP_PAYLOAD
        self.prefix = (
            _mac(dst)
            + _mac(src)
            + _ETH_IP
            + _ip_header(src, dst, 17, 20 + ulen, 0xB8, 0)
            + struct.pack(">HHH", sport, dport, ulen)
        )
        pseudo = src + dst + struct.pack(">BBH", 0, 17, ulen)
        const = _csum_words(pseudo + struct.pack(">HHH", sport, dport, ulen))
        const += (ssrc >> 16) + (ssrc & 0xFFFF)
        self.base_sum = const
        self.ssrc = ssrc

    def packets(
        self, t0: int, n: int, seq0: int, ts0: int, payloads: list[bytes], pay_sums: list[int]
    ) -> list[tuple[int, bytes]]:
        out = []
        prefix = self.prefix
        base = self.base_sum
        ssrc = self.ssrc
        pack = _RTP_PKT.pack
        nvar = len(payloads)
        for i in range(n):
            seq = (seq0 + i) & 0xFFFF
            ts = (ts0 + 160 * i) & 0xFFFFFFFF
            second = _RTP_PT | 0x80 if i == 0 else _RTP_PT
            v = (seq0 + i) % nvar
            s = base + (0x8000 | second) + seq + (ts >> 16) + (ts & 0xFFFF) + pay_sums[v]
            s = (s & 0xFFFF) + (s >> 16)
            s = (s & 0xFFFF) + (s >> 16)
            c = (~s & 0xFFFF) or 0xFFFF
            out.append(
                (t0 + 20_000_000 * i, prefix + pack(c, 0x80, second, seq, ts, ssrc) + payloads[v])
            )
        return out


def _ntp(ts_ns: int) -> tuple[int, int]:
    secs = ts_ns // 1_000_000_000 + 2_208_988_800
    frac = (ts_ns % 1_000_000_000) * (1 << 32) // 1_000_000_000
    return secs, frac


def _rtcp_sr(ssrc: int, ts_ns: int, rtp_ts: int, count: int, cname: bytes) -> bytes:
    hi, lo = _ntp(ts_ns)
    sr = struct.pack(
        ">BBHIIIIII", 0x80, 200, 6, ssrc, hi, lo, rtp_ts & 0xFFFFFFFF, count, count * _RTP_PAYLOAD
    )
    item = b"\x01" + bytes([len(cname)]) + cname
    chunk = struct.pack(">I", ssrc) + item + b"\0"
    chunk += b"\0" * (-len(chunk) % 4)
    sdes = struct.pack(">BBH", 0x81, 202, len(chunk) // 4) + chunk
    return sr + sdes


def _ip4(a: int) -> bytes:
    return a.to_bytes(4, "big")


def _dotted(ip: bytes) -> str:
    return ".".join(map(str, ip))


@dataclass
class _CallPlan:
    index: int
    call_id: str
    caller: str
    callee: str
    target: bool
    tcp: bool
    answered: bool
    start: int  # ns
    ring_ns: int
    rtp_a: int  # packets caller -> callee
    rtp_b: int  # packets callee -> caller
    a_ip: bytes
    b_ip: bytes
    a_port: int  # media
    b_port: int
    rng: random.Random


class _Gen:
    """Builds each call's packets; the callers merge them in time order."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self.rng = rng
        self.payloads = [rng.randbytes(_RTP_PAYLOAD) for _ in range(_PAYLOAD_VARIANTS)]
        self.pay_sums = [_csum_words(p) for p in self.payloads]

    # -- SIP text

    @staticmethod
    def _sdp(user: str, ip: str, port: int, sess: int) -> str:
        return (
            "v=0\r\n"
            f"o={user} {sess} {sess} IN IP4 {ip}\r\n"
            "s=lc-voipgen\r\n"
            f"c=IN IP4 {ip}\r\n"
            "t=0 0\r\n"
            f"m=audio {port} RTP/AVP 8 101\r\n"
            "a=rtpmap:8 PCMA/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\n"
            "a=fmtp:101 0-15\r\n"
            "a=ptime:20\r\n"
            "a=sendrecv\r\n"
        )

    @staticmethod
    def _msg(first: str, headers: list[str], body: str = "") -> bytes:
        lines = [first, *headers]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    def sip_messages(self, c: _CallPlan) -> list[tuple[int, bool, bytes]]:
        """``(offset_ns, from_caller, message)`` of the call's SIP, offsets from its start."""
        rng = c.rng
        a, b = _dotted(c.a_ip), _dotted(c.b_ip)
        tr = "TCP" if c.tcp else "UDP"
        contact_tr = ";transport=tcp" if c.tcp else ""
        tag_a, tag_b = f"{rng.getrandbits(32):08x}", f"{rng.getrandbits(32):08x}"
        br_inv, br_ack, br_bye = (f"z9hG4bK{rng.getrandbits(48):012x}" for _ in range(3))
        via_inv = f"Via: SIP/2.0/{tr} {a}:5060;branch={br_inv}"
        frm = f'From: "{c.caller}" <sip:{c.caller}@{a}>;tag={tag_a}'
        to = f"To: <sip:{c.callee}@{b}>"
        to_t = f"{to};tag={tag_b}"
        cid = f"Call-ID: {c.call_id}"
        contact_a = f"Contact: <sip:{c.caller}@{a}:5060{contact_tr}>"
        contact_b = f"Contact: <sip:{c.callee}@{b}:5060{contact_tr}>"
        ua, srv = "User-Agent: lc-voipgen/1.0", "Server: lc-voipgen/1.0"
        ruri = f"sip:{c.callee}@{b}:5060"
        sess_a, sess_b = rng.getrandbits(31), rng.getrandbits(31)
        sdp_a = self._sdp(c.caller, a, c.a_port, sess_a)
        sdp_b = self._sdp(c.callee, b, c.b_port, sess_b)
        inv = [via_inv, "Max-Forwards: 70", frm, to, cid, "CSeq: 1 INVITE", contact_a, ua]
        resp_inv = [via_inv, frm, to_t, cid, "CSeq: 1 INVITE"]
        msgs = [
            (0, True, self._msg(f"INVITE {ruri} SIP/2.0", inv, sdp_a)),
            (
                2_000_000,
                False,
                self._msg("SIP/2.0 100 Trying", [via_inv, frm, to, cid, "CSeq: 1 INVITE", srv]),
            ),
        ]
        ringing = self._msg(
            "SIP/2.0 180 Ringing", [*resp_inv, contact_b, srv], "" if c.answered else sdp_b
        )
        msgs.append((2_000_000 if c.tcp else 50_000_000, False, ringing))
        if not c.answered:
            return msgs
        ring = c.ring_ns
        msgs.append((ring, False, self._msg("SIP/2.0 200 OK", [*resp_inv, contact_b, srv], sdp_b)))
        ack = [
            f"Via: SIP/2.0/{tr} {a}:5060;branch={br_ack}",
            "Max-Forwards: 70",
            frm,
            to_t,
            cid,
            "CSeq: 1 ACK",
            contact_a,
            ua,
        ]
        msgs.append((ring + 8_000_000, True, self._msg(f"ACK {ruri} SIP/2.0", ack)))
        end = ring + 20_000_000 + 20_000_000 * max(c.rtp_a, c.rtp_b) + 30_000_000
        via_bye = f"Via: SIP/2.0/{tr} {a}:5060;branch={br_bye}"
        bye = [via_bye, "Max-Forwards: 70", frm, to_t, cid, "CSeq: 2 BYE", ua]
        msgs.append((end, True, self._msg(f"BYE {ruri} SIP/2.0", bye)))
        ok = [via_bye, frm, to_t, cid, "CSeq: 2 BYE", srv]
        msgs.append((end + 3_000_000, False, self._msg("SIP/2.0 200 OK", ok)))
        return msgs

    # -- a whole call

    def call_packets(
        self, c: _CallPlan, rtcp_interval_ns: int
    ) -> tuple[list[tuple[int, bytes]], dict[str, int]]:
        """Every packet of the call, sorted by time, and its counts per kind."""
        rng = c.rng
        out: list[tuple[int, bytes]] = []
        counts = {"sip": 0, "rtp": 0, "rtcp": 0, "tcp_ctl": 0}
        msgs = self.sip_messages(c)
        t0 = c.start
        if c.tcp:
            out += self._tcp_signalling(c, msgs, counts)
        else:
            for off, from_a, m in msgs:
                src, dst = (c.a_ip, c.b_ip) if from_a else (c.b_ip, c.a_ip)
                out.append((t0 + off, _udp_packet(src, dst, 5060, 5060, m, 0x60)))
            counts["sip"] = len(msgs)
        # RTP: answered calls both ways after the ACK; unanswered ones early media from
        # the callee after the 180 (to the caller's SDP address).
        media0 = t0 + (c.ring_ns + 20_000_000 if c.answered else 60_000_000)
        flows = []
        if c.rtp_a:
            flows.append((c.a_ip, c.b_ip, c.a_port, c.b_port, c.rtp_a, media0))
        if c.rtp_b:
            flows.append((c.b_ip, c.a_ip, c.b_port, c.a_port, c.rtp_b, media0 + 7_000_000))
        for src, dst, sport, dport, n, start in flows:
            ssrc = rng.getrandbits(32)
            seq0, ts0 = rng.getrandbits(16), rng.getrandbits(32)
            flow = _RtpFlow(src, dst, sport, dport, ssrc)
            out += flow.packets(start, n, seq0, ts0, self.payloads, self.pay_sums)
            counts["rtp"] += n
            cname = f"{_dotted(src)}:{sport}".encode()
            t = rtcp_interval_ns // 2
            while t < n * 20_000_000:
                sent = t // 20_000_000 + 1
                sr = _rtcp_sr(ssrc, _EPOCH_NS + start + t, ts0 + 160 * sent, sent, cname)
                out.append(
                    (start + t + 1_000_000, _udp_packet(src, dst, sport + 1, dport + 1, sr, 0xB8))
                )
                counts["rtcp"] += 1
                t += rtcp_interval_ns
        out.sort(key=_first)
        return out, counts

    def _tcp_signalling(
        self, c: _CallPlan, msgs: list[tuple[int, bool, bytes]], counts: dict[str, int]
    ) -> list[tuple[int, bytes]]:
        """The call's SIP over one TCP connection: handshake, INVITE in two segments,
        100 and 180 in one segment, one segment per other message, FIN exchange."""
        rng = c.rng
        t0 = c.start
        a, b = c.a_ip, c.b_ip
        eph = rng.randrange(32768, 61000)
        isn_a, isn_b = rng.getrandbits(32), rng.getrandbits(32)
        seq = {True: isn_a + 1, False: isn_b + 1}  # next sequence number per side
        out = []
        us = 100_000

        def seg(t: int, from_a: bool, flags: int, data: bytes = b"") -> None:
            src, dst = (a, b) if from_a else (b, a)
            sp, dp = (eph, 5060) if from_a else (5060, eph)
            out.append(
                (t, _tcp_packet(src, dst, sp, dp, seq[from_a], seq[not from_a], flags, data))
            )
            seq[from_a] += len(data) + (1 if flags & (_SYN | _FIN) else 0)

        # Handshake (seq of the SYNs is the ISN itself).
        out.append((t0 - 3 * us, _tcp_packet(a, b, eph, 5060, isn_a, 0, _SYN)))
        out.append((t0 - 2 * us, _tcp_packet(b, a, 5060, eph, isn_b, isn_a + 1, _SYN | _ACK)))
        out.append((t0 - us, _tcp_packet(a, b, eph, 5060, isn_a + 1, isn_b + 1, _ACK)))
        counts["tcp_ctl"] += 3
        invite = msgs[0][2]
        cut = len(invite) // 2
        seg(t0, True, _ACK, invite[:cut])
        seg(t0 + 20_000, True, _ACK | _PSH, invite[cut:])
        seg(t0 + msgs[1][0], False, _ACK | _PSH, msgs[1][2] + msgs[2][2])
        counts["sip"] += 3
        for off, from_a, m in msgs[3:]:
            seg(t0 + off, from_a, _ACK | _PSH, m)
            counts["sip"] += 1
        if c.answered:
            end = t0 + msgs[-1][0]
            seg(end + 1_000_000, True, _FIN | _ACK)
            seg(end + 1_000_000 + us, False, _FIN | _ACK)
            seg(end + 1_000_000 + 2 * us, True, _ACK)
            counts["tcp_ctl"] += 3
        return out


def _first(item: tuple[int, bytes]) -> int:
    return item[0]


class _Writer:
    """Merges calls' packets in time order into a pcap, in big chunks."""

    CHUNK = 65536

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.w = PcapWriter(path, 1, snaplen=65535)
        self.pending: list[tuple[int, int, bytes]] = []
        self.serial = 0
        self.packets = 0
        self.last_ts = 0
        # Pending packets that trigger the next sort: at least twice what the last one
        # left pending, so that many overlapping calls cost O(n log n), not a sort per
        # call of everything still pending.
        self.flush_at = 4 * self.CHUNK

    def add(self, packets: list[tuple[int, bytes]]) -> None:
        s = self.serial
        self.pending += [(ts, s + i, data) for i, (ts, data) in enumerate(packets)]
        self.serial = s + len(packets)

    def flush_before(self, limit: int | None) -> None:
        """Write every pending packet earlier than ``limit`` (all of them with None)."""
        pend = self.pending
        if limit is not None and len(pend) < self.flush_at:
            return
        pend.sort()
        if limit is None:
            k = len(pend)
        else:
            lo, hi = 0, len(pend)
            while lo < hi:  # first index with ts >= limit
                mid = (lo + hi) // 2
                if pend[mid][0] < limit:
                    lo = mid + 1
                else:
                    hi = mid
            k = lo
        for i in range(0, k, self.CHUNK):
            part = pend[i : min(k, i + self.CHUNK)]
            ts = [_EPOCH_NS + p[0] for p in part]
            datas = [p[2] for p in part]
            lens = [len(d) for d in datas]
            self.w.write_columns(ts, lens, lens, b"".join(datas))
        if k:
            assert pend[0][0] >= self.last_ts, "packets out of order"
            self.last_ts = pend[k - 1][0]
        self.packets += k
        del pend[:k]
        self.flush_at = max(4 * self.CHUNK, 2 * len(pend))

    def close(self) -> None:
        self.flush_before(None)
        self.w.close()


def _plan_calls(
    gen: _Gen,
    calls: int,
    rtp_per_call: int,
    match_every: int,
    concurrent: int,
    tcp_share: float,
    answered: bool,
    interarrival_ns: int | None = None,
) -> list[_CallPlan]:
    rng = gen.rng
    rtp_a = rtp_per_call - rtp_per_call // 2 if answered else 0
    rtp_b = rtp_per_call // 2 if answered else rtp_per_call
    mean_ring = 2_000_000_000
    length = mean_ring + 20_000_000 * max(rtp_a, rtp_b) + 100_000_000
    gap = interarrival_ns if interarrival_ns is not None else max(1, length // max(1, concurrent))
    plans = []
    for k in range(calls):
        crng = random.Random(rng.getrandbits(64))
        target = match_every > 0 and k % match_every == 0
        tcp = int((k + 1) * tcp_share + 1e-9) > int(k * tcp_share + 1e-9)
        # Distinct addresses per call (10.1.x.y callers, 10.2.x.y callees, 65024 each
        # before they repeat), random even media ports in 10000-32766.
        host = k % 65024
        a_ip = _ip4(0x0A010000 | ((host // 254) << 8) | (host % 254 + 1))
        b_ip = _ip4(0x0A020000 | ((host // 254) << 8) | (host % 254 + 1))
        plans.append(
            _CallPlan(
                index=k,
                call_id=f"{k:07d}-{crng.getrandbits(64):016x}@lc-voipgen",
                caller=f"caller-{k}",
                callee=f"target-{k}" if target else f"user-{k}",
                target=target,
                tcp=tcp,
                answered=answered,
                start=1_000_000 + k * gap + crng.randrange(0, max(1, gap // 2)),
                ring_ns=crng.randrange(mean_ring // 2, mean_ring * 3 // 2),
                rtp_a=rtp_a,
                rtp_b=rtp_b,
                a_ip=a_ip,
                b_ip=b_ip,
                a_port=crng.randrange(10000, 32767, 2),
                b_port=crng.randrange(10000, 32767, 2),
                rng=crng,
            )
        )
    plans.sort(key=lambda p: p.start)
    return plans


def _write_plans(
    path: str | os.PathLike[str], gen: _Gen, plans: list[_CallPlan], rtcp_interval_s: float
) -> dict:
    t_begin = time.monotonic()
    w = _Writer(path)
    info: dict[str, dict] = {}
    totals = {"calls": 0, "targets": 0, "sip": 0, "rtp": 0, "rtcp": 0, "tcp_ctl": 0}
    totals["target_packets"] = 0
    interval = round(rtcp_interval_s * 1e9)
    try:
        for i, c in enumerate(plans):
            packets, counts = gen.call_packets(c, interval)
            w.add(packets)
            n = sum(counts.values())
            info[c.call_id] = {
                "index": c.index,
                "caller": c.caller,
                "callee": c.callee,
                "target": c.target,
                "transport": "tcp" if c.tcp else "udp",
                **counts,
                "packets": n,
                "caller_media": (_dotted(c.a_ip), c.a_port),
                "callee_media": (_dotted(c.b_ip), c.b_port),
            }
            totals["calls"] += 1
            totals["targets"] += c.target
            totals["target_packets"] += n if c.target else 0
            for k, v in counts.items():
                totals[k] += v
            nxt = plans[i + 1].start - 3 * 100_000 if i + 1 < len(plans) else None
            if nxt is not None:
                w.flush_before(nxt)  # no later call has a packet before its start
    finally:
        w.close()
    totals["packets"] = w.packets
    assert w.packets == sum(totals[k] for k in ("sip", "rtp", "rtcp", "tcp_ctl"))
    seconds = time.monotonic() - t_begin
    return {
        "path": os.fspath(path),
        "calls": info,
        "targets": [cid for cid, v in info.items() if v["target"]],
        "totals": totals,
        "seconds": seconds,
        "packets_per_second": w.packets / seconds if seconds > 0 else float("inf"),
    }


def make_voip_capture(
    path: str | os.PathLike[str],
    calls: int,
    rtp_per_call: int,
    match_every: int = 10,
    seed: int = 0,
    concurrent: int = 50,
    tcp_share: float = 0.0,
    rtcp_interval_s: float = 5.0,
) -> dict:
    """Write a synthetic SIP + RTP capture of ``calls`` overlapping calls; what it wrote.

    Ethernet/IPv4, nanosecond pcap, timestamps non-decreasing from 2024-01-01. Each call
    has its own caller and callee addresses (10.1.x.y and 10.2.x.y), SIP on port 5060 and
    even media ports in 10000-32766 announced by the SDPs:

    * INVITE with SDP (c=, m=audio, PCMA/8000 and telephone-event), 100 Trying,
      180 Ringing, after 1-3 s 200 OK with the callee's SDP, ACK;
    * ``rtp_per_call`` RTP packets in all (half each way, the caller's one more when
      odd): 12-byte header (PT 8, marker on the first, random SSRC/seq/timestamp, seq +1
      and timestamp +160 per packet) and 160 bytes of payload, every 20 ms per direction,
      from and to the ports the SDPs announced; valid IP and UDP checksums;
    * per direction, an RTCP SR + SDES(CNAME) on port + 1 every ``rtcp_interval_s``
      seconds of media (the first after half an interval);
    * BYE from the caller after the media, 200 OK.

    About ``concurrent`` calls are up at a time. Call ``k`` (in order of the plan) calls
    ``target-<k>`` when ``k % match_every == 0`` (never with ``match_every=0``),
    otherwise ``user-<k>``; the caller is ``caller-<k>``. A ``tcp_share`` of the calls
    (spread evenly) carries its SIP over TCP instead: handshake, the INVITE split in two
    segments, 100 and 180 in one segment, FIN exchange at the end (RTP stays UDP).

    Returns a dict: ``calls`` maps each Call-ID to ``{"index", "caller", "callee",
    "target", "transport", "sip", "rtp", "rtcp", "tcp_ctl", "packets", "caller_media",
    "callee_media"}`` (``sip`` counts the packets carrying SIP, ``tcp_ctl`` the TCP
    packets without payload); ``targets`` lists the target Call-IDs; ``totals`` sums the
    counts (plus ``calls``, ``targets``, ``target_packets``, ``packets``); and
    ``path``, ``seconds``, ``packets_per_second``.
    """
    if calls < 1 or rtp_per_call < 0:
        raise ValueError("need calls >= 1 and rtp_per_call >= 0")
    if not 0.0 <= tcp_share <= 1.0:
        raise ValueError(f"tcp_share must be in [0, 1], not {tcp_share}")
    gen = _Gen(seed)
    plans = _plan_calls(gen, calls, rtp_per_call, match_every, concurrent, tcp_share, True)
    return _write_plans(path, gen, plans, rtcp_interval_s)


def make_undecided_calls_capture(
    path: str | os.PathLike[str],
    calls: int = 10000,
    rtp_per_call: int = 20,
    seed: int = 1,
    calls_per_second: float = 1000.0,
) -> dict:
    """Write ``calls`` calls that stay undecided: never answered, never ended.

    Per call: INVITE with SDP, 100 Trying, 180 Ringing with the callee's SDP (early
    media), then ``rtp_per_call`` RTP packets from the callee's to the caller's SDP
    address, 20 ms apart. No 200, ACK, BYE or CANCEL, so a hunter must keep every call
    buffered until the end of the file. Callees are all ``user-<k>`` (nothing matches a
    ``target-`` filter). Calls start ``calls_per_second`` apart (10,000 calls: 10 s).
    Returns the same dict as :func:`make_voip_capture`.
    """
    gen = _Gen(seed)
    gap = round(1e9 / calls_per_second)
    plans = _plan_calls(gen, calls, rtp_per_call, 0, 1, 0.0, False, interarrival_ns=gap)
    return _write_plans(path, gen, plans, 5.0)
