"""``lc watch``'s snapshot and screen, from real protobuf answers (no processor needed):
rates from successive polls, and peer strings shown literally (no markup, no escapes)."""

from __future__ import annotations

from rich.console import Console

from lc.cli.watch import public, render, snapshot
from lc.proto import lc_pb2

HOSTILE = "[red]x\x1b[2J[/]\n[bold]"


def answers(packets: int, hunter_packets: int, hunter_id: str = "h1"):
    status = lc_pb2.StatusResponse(
        processor_id="p1", packets_written=packets, bytes_written=packets * 100,
        hunters_connected=1, hunters_total=1, flow="CONTINUE", uptime_seconds=3725,
    )  # fmt: skip
    counters = lc_pb2.HunterCounters(
        captured=hunter_packets + 5,
        dropped={"kernel": 3, "filtered": 100, "queue_full": 0},
        queue_batches=2,
        spool=lc_pb2.SpoolCounters(dir="/s", records=4, bytes=2_500_000),
        breaker="closed",
    )
    hunter = lc_pb2.HunterInfo(
        hunter_id=hunter_id, state="connected", mode="voip", hostname=HOSTILE,
        interfaces=[f"file:{HOSTILE}.pcap"], packets_received=hunter_packets,
        bytes_received=hunter_packets * 100, counters=counters, epoch=7,
    )  # fmt: skip
    call = lc_pb2.CallInfo(
        call_id=HOSTILE, state="answered", from_user="[link=http://x]alice", to_user="bob",
        start_ns=1_700_000_000_000_000_000, packets=12, hunters=[hunter_id],
    )  # fmt: skip
    alert = lc_pb2.DnsTunnelAlert(
        domain="[blink]evil.example", score=0.91, queries=40, hunters=[hunter_id],
        last_seen_ns=1_700_000_000_000_000_000,
    )  # fmt: skip
    return status, [hunter], [call], [alert]


def test_rates_come_from_successive_polls():
    first = snapshot(*answers(1000, 600), at=10.0, previous=None)
    assert first["processor"]["packets_per_second"] is None  # nothing to compare with
    assert first["hunters"][0]["packets_per_second"] is None
    second = snapshot(*answers(1500, 900), at=12.0, previous=first)
    assert second["processor"]["packets_per_second"] == 250.0
    assert second["processor"]["bytes_per_second"] == 25000.0
    h = second["hunters"][0]
    assert h["packets_per_second"] == 150.0 and h["bytes_per_second"] == 15000.0
    assert h["dropped"] == 3 and h["dropped_by_reason"] == {"kernel": 3}  # filtered: no loss
    assert h["spool_batches"] == 4 and h["spool_bytes"] == 2_500_000
    # A counter that went back (a processor restarted) gives no rate, not a negative one.
    third = snapshot(*answers(10, 5), at=13.0, previous=second)
    assert third["processor"]["packets_per_second"] is None
    assert third["hunters"][0]["packets_per_second"] is None
    assert "_at" not in public(third) and set(public(third)) == {
        "time", "processor", "hunters", "calls", "alerts",
    }  # fmt: skip
    # No call index: calls is None (the screen says how to get one), not an empty list.
    status, hunters, _, alerts = answers(1, 1)
    assert snapshot(status, hunters, None, alerts, at=1.0, previous=None)["calls"] is None


def screen(snap, width: int = 400) -> tuple[str, str]:
    console = Console(record=True, width=width, force_terminal=True, color_system="truecolor")
    console.print(render(snap, "127.0.0.1:1", error="lost [red]link\x1b]0;t\x07"))
    return console.export_text(), console.export_text(styles=True)


def test_peer_strings_show_literally():
    snap = snapshot(*answers(1500, 900, hunter_id="[red]x"), at=2.0, previous=None)
    text, ansi = screen(snap)
    # Markup is not read: the brackets are on the screen as typed ...
    assert "[red]x" in text
    assert "[link=http://x]alice" in text and "[blink]evil.example" in text
    # ... and control characters are escaped (log_text), never sent to the terminal.
    assert "[red]x\\x1b[2J[/]\\n[bold]" in text
    assert "file:[red]x\\x1b[2J[/]\\n[bold].pcap" in text
    assert "lost [red]link\\x1b]0;t\\x07" in text
    for raw in ("\x1b[2J", "\x1b]0;", "\x07", "\n[bold]"):
        assert raw not in ansi
    # The figures: totals with separators, the spool, the drops with their reason.
    assert "written 1,500 pkts (150.0 kB)" in text and "hunters 1 connected" in text
    assert "3 (kernel 3)" in text and "4 b, 2.5 MB" in text and "01:02:05" in text


def test_hunter_counts_include_the_hunters_below_and_add_up_with_the_table():
    # At the top of a processor tree GetStatus counts only the hunters connected there
    # (none), while ListHunters also lists those below: the header must count the list.
    status, hunters, calls, alerts = answers(1000, 600)
    status.hunters_connected, status.hunters_total = 0, 0
    hunters[0].via.append("edge1")
    stale = lc_pb2.HunterInfo(hunter_id="h2", state="stale", via=["edge1", "edge2"])
    here = lc_pb2.HunterInfo(hunter_id="h3", state="disconnected")
    snap = snapshot(status, [*hunters, stale, here], calls, alerts, at=1.0, previous=None)
    p = snap["processor"]
    assert (p["hunters_connected"], p["hunters_stale"], p["hunters_total"]) == (1, 1, 3)
    assert p["hunters_below"] == 2 and len(snap["hunters"]) == 3
    text, _ = screen(snap)
    assert "hunters 1 connected, 1 stale, 3 known (2 below)" in text


def test_an_80_column_screen_keeps_the_hunter_ids_and_counts():
    # The hunter column took only the width left over: none at 80 columns, so the table
    # listed hunters without saying which; the stats line was cut before the counts.
    status, hunters, calls, alerts = answers(1000, 600, hunter_id="sensor1")
    hunters[0].hostname, hunters[0].interfaces[:] = "vm", ["eth0"]
    snap = snapshot(status, hunters, calls, alerts, at=1.0, previous=None)
    text, _ = screen(snap, width=80)
    rows = [line for line in text.splitlines() if "connect" in line and "vo" in line]
    assert len(rows) == 1 and rows[0].startswith("sensor1 "), text
    assert "hunters 1 connected, 0 stale, 1 known" in " ".join(text.split()), text
