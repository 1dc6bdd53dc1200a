"""Helpers for the mail parser tests: the corpus's TCP sessions, and tshark's oracles.

A capture is read with :mod:`lc.common.pcapfile`, each frame decoded with
:func:`lc.common.decode.decode_packet` and each TCP direction put back together by
:class:`lc.common.tcpstream.TcpReassembler` (read-only use of those modules). A
session is the list of ``Segment``s of one connection in frame order: which side
sent it, its capture timestamp, its frame number and the bytes that became
contiguous with it. Connections are numbered in order of their first frame,
which is how tshark numbers ``tcp.stream`` when no connection is reused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from lc.common.decode import IPPROTO_TCP, decode_packet
from lc.common.errors import ParseError
from lc.common.mailmsg import MailMessage, MailSession
from lc.common.pcapfile import open_capture
from lc.common.tcpstream import TcpReassembler

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
IN_CI = os.environ.get("CI", "").lower() == "true"


@dataclass(frozen=True)
class Segment:
    frame: int
    ts_ns: int
    from_client: bool
    data: bytes


@dataclass
class Session:
    stream: int  # tshark's tcp.stream, in order of first frame
    client: tuple[bytes, int]  # (address, port)
    server: tuple[bytes, int]
    segments: list[Segment]

    def client_bytes(self) -> bytes:
        return b"".join(s.data for s in self.segments if s.from_client)

    def server_bytes(self) -> bytes:
        return b"".join(s.data for s in self.segments if not s.from_client)


def need(rel: str) -> Path:
    """The corpus file ``rel``; skips (or fails in CI) when it is missing."""
    path = CORPUS / rel
    if not path.is_file():
        reason = f"capture corpus file not found: {path}"
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: the corpus is required)")
        pytest.skip(reason)
    return path


def sessions(path: Path, server_ports: set[int]) -> list[Session]:
    """Every TCP connection of ``path`` whose one end uses a port in ``server_ports``."""
    reasm = TcpReassembler()
    out: dict[tuple, Session] = {}
    order = 0
    with open_capture(path) as reader:
        for number, (ts, iface, data, _orig) in enumerate(reader.records(), 1):
            try:
                d = decode_packet(reader.interfaces[iface].linktype, data)
            except ParseError:
                continue
            if d.proto != IPPROTO_TCP or d.is_fragment:
                continue
            if d.dport in server_ports:
                client, server, from_client = (d.src, d.sport), (d.dst, d.dport), True
            elif d.sport in server_ports:
                client, server, from_client = (d.dst, d.dport), (d.src, d.sport), False
            else:
                continue
            conn = (client, server)
            sess = out.get(conn)
            if sess is None:
                sess = out[conn] = Session(order, client, server, [])
                order += 1
            payload = data[d.payload_offset : d.payload_offset + d.payload_len]
            got = reasm.feed(ts, (conn, from_client), d.tcp_seq, d.tcp_flags, payload)
            for _off, chunk in got.chunks:
                sess.segments.append(Segment(number, ts, from_client, chunk))
    return list(out.values())


def read_oracle(path: Path) -> list[dict[str, str]]:
    """The rows of a tshark TSV oracle, in file order."""
    lines = path.read_bytes().decode("utf-8", "surrogateescape").split("\n")
    assert lines[0].startswith("# oracle="), f"{path}: line 1 is not the oracle comment"
    header = lines[1].split("\t")
    rows = []
    for line in lines[2:]:
        if not line:
            continue
        cells = line.split("\t")
        assert len(cells) == len(header), f"{path}: row has {len(cells)} cells: {line[:80]!r}"
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def cells(value: str) -> list[str]:
    """A tshark cell with several occurrences (joined by ``|``) as a list."""
    return value.split("|") if value else []


def unescape(value: str) -> str:
    """tshark prints CR and LF inside header values as the two-character escapes."""
    return value.replace("\\r", "\r").replace("\\n", "\n").replace("\\t", "\t")


# --- running sessions -------------------------------------------------------------------


def run(session: MailSession, segments: list[Segment]) -> list:
    """Feeds ``segments`` in order (frame numbers as timestamps) and closes the session.

    Every event carries the frame number of the data that completed it as its
    timestamp (``end_ns`` for messages), which is what the tshark comparisons use.
    """
    events: list = []
    for seg in segments:
        events += session.feed(seg.from_client, seg.data, seg.frame)
    events += session.close()
    return events


def canon(event: object) -> tuple:
    """An event without its timestamps, for comparing runs."""
    if isinstance(event, MailMessage):
        return (
            "MailMessage",
            event.protocol,
            event.command,
            event.header,
            event.body,
            event.size,
            event.truncated,
            event.complete,
            event.helo,
            event.mail_from,
            event.rcpt_to,
            event.mailbox,
            event.user,
        )
    out = [type(event).__name__]
    for f in fields(event):  # type: ignore[arg-type]
        if f.name == "ts_ns":
            continue
        value = getattr(event, f.name)
        if f.name == "command" and value is not None:
            value = canon(value)
        out.append((f.name, value))
    return tuple(out)


def by_kind(events: list) -> dict[str, list[tuple]]:
    """Events per type, each list in order, without timestamps.

    The order between the two directions' events depends on how their bytes
    were interleaved; the order within each kind does not.
    """
    out: dict[str, list[tuple]] = {}
    for e in events:
        c = canon(e)
        out.setdefault(c[0], []).append(c)
    return out


def split_segments(segments: list[Segment], cuts: list[int]) -> list[Segment]:
    """The same bytes, each segment cut again at the given offsets (mod its length)."""
    out = []
    for i, seg in enumerate(segments):
        n = len(seg.data)
        points = sorted({c % (n + 1) for c in cuts[i % max(len(cuts), 1) :][:3]}) if cuts else []
        last = 0
        for p in [*points, n]:
            if p > last:
                out.append(Segment(seg.frame, seg.ts_ns, seg.from_client, seg.data[last:p]))
            last = max(last, p)
    return out


def tshark(capture: str, display_filter: str, names: list[str]) -> list[dict[str, str]]:
    """Runs tshark on a corpus capture for fields the stored oracles do not have."""
    path = need(capture)
    exe = shutil.which("tshark")
    if exe is None:
        if IN_CI:
            pytest.fail("tshark is not installed (scripts/test-deps.sh installs it)")
        pytest.skip("tshark is not installed")
    args = [exe, "-n", "-r", str(path), "-Y", display_filter, "-T", "fields"]
    for opt in ("header=y", "separator=/t", "quote=n", "occurrence=a", "aggregator=|"):
        args += ["-E", opt]
    for name in names:
        args += ["-e", name]
    done = subprocess.run(args, capture_output=True, timeout=120, check=True)
    lines = done.stdout.decode("utf-8", "surrogateescape").split("\n")
    header = lines[0].split("\t")
    return [dict(zip(header, x.split("\t"), strict=True)) for x in lines[1:] if x]
