"""Adding a mode touches no pipeline code: a toy protocol mode defined here, registered,
run end to end by `lc hunt toy` (in this process, the real CLI and hunter) against a
real `lc process`, with a keyword filter set through `lc set filter`.

The toy protocol: one text line per UDP datagram on port 7777, ``VERB SESSION TEXT``
(HELLO, DATA, BYE). A conversation is a SESSION; it is captured whole when one of its
lines holds a keyword filter's bytes, and it ends at BYE. What this file adds is exactly
what a real mode adds: a parser, a dissector, a config with one flag, a registry entry.
"""

from __future__ import annotations

import json
import os
import signal
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest

from lc.common.errors import ParseError
from lc.common.pcapfile import open_capture
from lc.hunter import modes
from lc.hunter.modes.base import ModeSpec, option, positive_int
from lc.hunter.modes.sessions import Dissector, SessionMode
from lc.hunter.session import Session, SessionLimits
from tests.conftest import need, run_lc, start_processor, tls_args

pytestmark = pytest.mark.e2e

# -- the mode: what a new protocol brings --------------------------------------------------


def parse_toy(payload: bytes) -> tuple[str, str, bytes]:
    """``VERB SESSION TEXT`` (a parser as sans-IO as lc.common's)."""
    line = bytes(payload).rstrip(b"\r\n")
    verb, _, rest = line.partition(b" ")
    session, _, text = rest.partition(b" ")
    if verb not in (b"HELLO", b"DATA", b"BYE") or not session.isalnum():
        raise ParseError(f"not a toy line: {line[:40]!r}")
    return verb.decode(), session.decode(), text


@dataclass(slots=True)
class ToyConfig:
    port: int = option("--toy-port", "7777", positive_int, "UDP port of the toy protocol.", "N")


class ToyDissector(Dissector):
    protocol = "toy"
    tags = ("toy",)
    message_tag = 0
    noun = ("conversation", "conversations")
    streams = False  # UDP only

    def __init__(self, cfg: ToyConfig) -> None:
        self.ports = frozenset({cfg.port})

    def parse(self, payload):
        return parse_toy(payload)

    def session_key(self, msg):
        return msg[1]

    def filter_values(self, msg, ctx):
        return {"keyword": [msg[2]]}, []

    def after_message(self, s: Session, msg, ts: int) -> None:
        if msg[0] == "BYE":
            s.end_ns = ts


TOY = ModeSpec(
    name="toy",
    help="A toy line protocol over UDP (a test of the mode seam).",
    filter_types=("keyword", "ip_address"),
    default_policy="deny",
    config=ToyConfig,
    factory=lambda ctx, cfg: SessionMode(ctx, ToyDissector(cfg), SessionLimits(grace_ns=10**9)),
)

# -- traffic -----------------------------------------------------------------------------


def udp(src: int, sport: int, dport: int, payload: bytes) -> bytes:
    u = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(u), 1, 0, 64, 17, 0,
        bytes([10, 0, 0, src]), bytes([10, 0, 1, 1]),
    )  # fmt: skip
    return b"\x02" * 12 + b"\x08\x00" + ip + u


def write_pcap(path: Path, frames: list[bytes]) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for k, fr in enumerate(frames):
            f.write(
                struct.pack("<IIII", 1_700_000_000 + k // 10, (k % 10) * 1000, len(fr), len(fr))
            )
            f.write(fr)


def conversation(name: str, src: int, texts: list[bytes]) -> list[bytes]:
    lines = [b"HELLO " + name.encode() + b" hi\n"]
    lines += [b"DATA " + name.encode() + b" " + t + b"\n" for t in texts]
    lines.append(b"BYE " + name.encode() + b" -\n")
    return [udp(src, 40000 + src, 7777, line) for line in lines]


def test_a_toy_mode_runs_end_to_end_without_touching_the_pipeline(tmp_path, pki, capsys):
    from lc.cli.main import main

    need("tshark")
    wanted = conversation("alpha", 1, [b"nothing yet", b"the SeCrEt word", b"after"])
    other = conversation("beta", 2, [b"plain", b"text"])
    frames = []
    for a, b in zip(wanted, other, strict=False):  # interleaved conversations
        frames += [a, b]
    frames += wanted[len(other) :]
    frames += [udp(3, 5000, 9999, b"not toy"), udp(4, 40004, 7777, b"GARBAGE \x00\xff\n")]
    cap = tmp_path / "toy.pcap"
    write_pcap(cap, frames)

    p = start_processor(tmp_path, tls_args(pki, "processor"))
    modes.register(TOY)
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    umask = os.umask(0o022)  # main() tightens the umask of the process it runs in
    os.umask(umask)
    try:
        r = run_lc("set", "filter", "--id", "kw", "--type", "keyword", "--pattern", "secret",
                   "--processor", p.addr, *tls_args(pki, "admin"))  # fmt: skip
        assert r.returncode == 0, r.stderr
        with pytest.raises(SystemExit) as done:
            main(["hunt", "toy", "--toy-port", "7777", "--processor", p.addr,
                  *tls_args(pki, "hunter-h1"), "-r", str(cap)])  # fmt: skip
        summary = capsys.readouterr().out
        assert done.value.code == 0, summary
    finally:
        modes.unregister("toy")
        signal.signal(signal.SIGINT, handlers[0])
        os.umask(umask)
        signal.signal(signal.SIGTERM, handlers[1])
        p.stop()
    assert "conversations: 2 seen, 1 matched, 1 never matched" in summary
    assert "1 malformed" in summary and f"replayed {cap}: {len(frames)} packets" in summary

    # The unified PCAP holds exactly the wanted conversation, whole, in order.
    out = p.data_dir / "capture.pcap"
    with open_capture(out) as rd:
        got = [bytes(d) for _, _, d, _ in rd.records()]
    assert got == wanted
    fields = run_tshark(out)
    assert [bytes.fromhex(x).split(b" ")[1] for x in fields] == [b"alpha"] * len(wanted)

    # One event for it: captured, with the keyword filter's id, in the ECS event log.
    (log,) = (p.data_dir / "events").glob("*.jsonl")
    (line,) = log.read_text().splitlines()
    ev = json.loads(line)
    assert ev["event"]["dataset"] == "lc.toy" and ev["lc"]["session_id"] == "alpha"
    assert ev["lc"]["captured"] is True and ev["lc"]["filter_ids"] == ["kw"]
    assert ev["observer"]["name"] == "h1"
    assert ev["source"] == {"ip": "10.0.0.1", "port": 40001}
    assert ev["destination"] == {"ip": "10.0.1.1", "port": 7777}
    assert ev["network"]["transport"] == "udp" and ev["network"]["community_id"].startswith("1:")


def run_tshark(path: Path) -> list[str]:
    import subprocess

    r = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "data.data", "-d", "udp.port==7777,data"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return r.stdout.split()
