"""``lc watch``: a live view of a processor, refreshed every ``--interval`` seconds.

On a terminal: a full-screen view (rich, the alternate screen) of the processor's write
rate, its hunters (state, rates, drops, spool), the active calls and the recent DNS
tunneling alerts; ``q`` or Ctrl-C quits and gives the terminal back as it was. When
stdout is not a terminal: one JSON snapshot per interval, one line each.

Every figure comes from the admin RPCs (GetStatus, ListHunters, ListCalls, ListAlerts);
rates are the difference between two successive polls. Strings from peers (hunter ids,
host names, Call-IDs, domains) go through ``wire_text`` into the JSON and ``log_text``
onto the screen, where they are rich ``Text`` (never markup): ``[red]x`` shows as typed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import click

from lc.cli.main import fail_json
from lc.cli.options import check_target, tls_from_flags, tls_options
from lc.common.errors import LcError
from lc.common.text import log_text, wire_text

__all__ = ["Poller", "render", "snapshot", "watch"]

_CALLS = 50  # active calls asked for (the newest)
_ALERTS = 20  # alerts kept (the most recently seen)
_HUNTERS = 500  # hunters kept in a snapshot (connected first, then the busiest)


# -- snapshots (JSON-ready dicts) ---------------------------------------------------------


def _rate(now: int, before: int | None, dt_s: float) -> float | None:
    if before is None or dt_s <= 0 or now < before:  # first poll, or a counter restarted
        return None
    return round((now - before) / dt_s, 1)


def _w(value: str, limit: int = 256) -> str:
    return wire_text(value, limit)


def _iso(ns: int) -> str:
    if not ns:
        return ""
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat(timespec="milliseconds")


def snapshot(
    status: Any,
    hunters: list[Any],
    calls: list[Any] | None,
    alerts: list[Any],
    at: float,
    previous: dict[str, Any] | None,
    now_ns: int | None = None,
) -> dict[str, Any]:
    """One JSON-ready view from the RPC answers, rates against the previous snapshot.

    ``at`` is a monotonic time; ``calls`` is None when the processor keeps no call index.
    """
    prev_at = previous["_at"] if previous else None
    dt_s = at - prev_at if prev_at is not None else 0.0
    pp = previous["processor"] if previous else {}
    proc = {
        "id": _w(status.processor_id),
        "version": _w(status.version),
        "listen": _w(status.listen),
        "uptime_seconds": round(status.uptime_seconds, 1),
        "flow": _w(status.flow),
        # Counted over the listed hunters, which include those below in a processor tree
        # (GetStatus counts only the hunters connected here): the header adds up with the
        # table under it.
        "hunters_connected": sum(h.state == "connected" for h in hunters),
        "hunters_stale": sum(h.state == "stale" for h in hunters),
        "hunters_total": len(hunters),
        "hunters_below": sum(bool(h.via) for h in hunters),
        "packets_written": status.packets_written,
        "bytes_written": status.bytes_written,
        "batches_written": status.batches_written,
        "write_queue_batches": status.write_queue_batches,
        "write_queue_bytes": status.write_queue_bytes,
        "events_written": sum(status.events_written.values()),
        "packets_per_second": _rate(status.packets_written, pp.get("packets_written"), dt_s),
        "bytes_per_second": _rate(status.bytes_written, pp.get("bytes_written"), dt_s),
    }
    before = {h["hunter_id"]: h for h in previous["hunters"]} if previous else {}
    rows = []
    for h in hunters:
        c = h.counters
        hid = _w(h.hunter_id)
        old = before.get(hid)  # its counters add up over the hunter's runs
        dropped = {k: v for k, v in sorted(c.dropped.items()) if v and k != "filtered"}
        spool = c.spool if c.HasField("spool") and c.spool.dir else None
        rows.append(
            {
                "hunter_id": hid,
                "state": _w(h.state),
                "mode": _w(h.mode),
                "hostname": _w(h.hostname),
                "interfaces": [_w(i) for i in h.interfaces[:16]],
                "epoch": h.epoch,
                "packets_received": h.packets_received,
                "bytes_received": h.bytes_received,
                "packets_per_second": _rate(
                    h.packets_received, old and old["packets_received"], dt_s
                ),
                "bytes_per_second": _rate(h.bytes_received, old and old["bytes_received"], dt_s),
                "captured": c.captured,
                "dropped": sum(dropped.values()),
                "dropped_by_reason": {_w(k, 64): v for k, v in dropped.items()},
                "queue_batches": c.queue_batches,
                "spool_batches": spool.records if spool else None,
                "spool_bytes": spool.bytes if spool else None,
                "breaker": _w(c.breaker),
                "flow": _w(c.flow),
            }
        )
    rows.sort(
        key=lambda r: (r["state"] != "connected", -(r["packets_per_second"] or 0), r["hunter_id"])
    )
    snap: dict[str, Any] = {
        "time": _iso(now_ns if now_ns is not None else time.time_ns()),
        "processor": proc,
        "hunters": rows[:_HUNTERS],
        "calls": None
        if calls is None
        else [
            {
                "call_id": _w(c.call_id),
                "state": _w(c.state),
                "method": _w(c.method),
                "from_user": _w(c.from_user),
                "to_user": _w(c.to_user),
                "start": _iso(c.start_ns),
                "packets": c.packets,
                "hunters": [_w(x) for x in c.hunters[:8]],
            }
            for c in calls[:_CALLS]
        ],
        "alerts": [
            {
                "domain": _w(a.domain),
                "score": round(a.score, 3),
                "queries": a.queries,
                "hunters": [_w(x) for x in a.hunters[:8]],
                "last_seen": _iso(a.last_seen_ns),
            }
            for a in sorted(alerts, key=lambda a: -a.last_seen_ns)[:_ALERTS]
        ],
        "_at": at,
    }
    return snap


def public(snap: dict[str, Any]) -> dict[str, Any]:
    """The snapshot without its private fields (what the JSON lines hold)."""
    return {k: v for k, v in snap.items() if not k.startswith("_")}


class Poller:
    """One channel to the processor, asked for a snapshot at each :meth:`poll`."""

    def __init__(self, processor: str, tls: Any, timeout: float) -> None:
        from lc.common.transport import open_channel, wait_ready
        from lc.proto import lc_pb2_grpc

        self.processor = processor
        self.timeout = timeout
        self.channel = open_channel(processor, tls)
        try:
            wait_ready(self.channel, processor, tls, timeout=10)
        except BaseException:
            self.channel.close()
            raise
        self.stub = lc_pb2_grpc.ManagementServiceStub(self.channel)
        self.previous: dict[str, Any] | None = None

    def poll(self) -> dict[str, Any]:
        """A snapshot; raises LcError when the processor does not answer."""
        import grpc

        from lc.common.transport import error_from_rpc
        from lc.proto import lc_pb2

        t = self.timeout
        try:
            status = self.stub.GetStatus(lc_pb2.StatusRequest(), timeout=t)
            at = time.monotonic()
            hunters = list(self.stub.ListHunters(lc_pb2.ListHuntersRequest(), timeout=t).hunters)
            try:
                req = lc_pb2.ListCallsRequest(active=True, limit=_CALLS)
                calls: list[Any] | None = list(self.stub.ListCalls(req, timeout=t).calls)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.FAILED_PRECONDITION:  # no call index
                    raise
                calls = None
            alerts = list(self.stub.ListAlerts(lc_pb2.ListAlertsRequest(), timeout=t).alerts)
        except grpc.RpcError as e:
            raise error_from_rpc(e, self.processor) from None
        snap = snapshot(status, hunters, calls, alerts, at, self.previous)
        self.previous = snap
        return snap

    def close(self) -> None:
        self.channel.close()


# -- the screen ---------------------------------------------------------------------------


def _n(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def _size(v: float | None) -> str:
    if v is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(v) < 1000 or unit == "TB":
            return f"{v:,.0f} {unit}" if unit == "B" else f"{v:,.1f} {unit}"
        v /= 1000
    return "-"  # not reached


def _rate_text(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f} {unit}" if unit != "B/s" else f"{_size(v)}/s"


def _uptime(s: float) -> str:
    s = int(s)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def render(snap: dict[str, Any], address: str, error: str = "") -> Any:
    """The screen for a snapshot (a rich renderable). Every string from a peer is made
    printable by log_text and put in as Text, so rich reads no markup in it."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    def t(value: object, limit: int = 64, style: str = "") -> Text:
        return Text(log_text(value, limit), style=style, no_wrap=True, overflow="ellipsis")

    p = snap["processor"]
    head = Text(no_wrap=True, overflow="ellipsis")
    head.append("lc watch ", style="bold")
    head.append(log_text(p["id"], 64), style="bold cyan")
    head.append(f" at {log_text(address, 80)}  up {_uptime(p['uptime_seconds'])}  ")
    head.append(f"flow {log_text(p['flow'], 16)}  ")
    head.append(f"{log_text(snap['time'], 40)}  ", style="dim")
    head.append("q: quit", style="dim")
    stats = Text()  # wraps on a narrow screen rather than cutting the hunter counts
    stats.append(
        f"written {_n(p['packets_written'])} pkts ({_size(p['bytes_written'])})  "
        f"write rate {_rate_text(p['packets_per_second'], 'pkt/s')}, "
        f"{_rate_text(p['bytes_per_second'], 'B/s')}  "
        f"queue {_n(p['write_queue_batches'])} batches  "
        f"hunters {p['hunters_connected']} connected, {p['hunters_stale']} stale, "
        f"{p['hunters_total']} known"
        + (f" ({p['hunters_below']} below)" if p["hunters_below"] else "")
    )
    parts: list[Any] = [head, stats]
    if error:
        parts.append(Text(f"! {log_text(error, 300)} (showing the last answer)", style="bold red"))

    ht = Table(title="Hunters", title_justify="left", expand=True, box=None, pad_edge=False)
    for name, kw in (
        # A ratio column only gets the width left over, none on an 80-column terminal:
        # the hunter's id must stay however narrow the screen.
        ("hunter", {"ratio": 2, "min_width": 8}),
        ("state", {}),
        ("mode", {}),
        ("interfaces", {"ratio": 1}),
        ("pkt/s", {"justify": "right"}),
        ("B/s", {"justify": "right"}),
        ("received", {"justify": "right"}),
        ("captured", {"justify": "right"}),
        ("dropped", {"justify": "right"}),
        ("queue", {"justify": "right"}),
        ("spool", {"justify": "right"}),
        ("breaker", {}),
    ):
        ht.add_column(name, no_wrap=True, overflow="ellipsis", **kw)
    for h in snap["hunters"]:
        state_style = {"connected": "green", "stale": "yellow"}.get(h["state"], "red")
        reasons = ", ".join(f"{k} {v:,}" for k, v in h["dropped_by_reason"].items())
        spool = (
            "-"
            if h["spool_batches"] is None
            else f"{_n(h['spool_batches'])} b, {_size(h['spool_bytes'])}"
        )
        ht.add_row(
            t(h["hunter_id"]),
            t(h["state"], 16, state_style),
            t(h["mode"], 16),
            t(",".join(h["interfaces"]), 80),
            t(_rate_text(h["packets_per_second"], "pkt/s").removesuffix(" pkt/s")),
            t(_rate_text(h["bytes_per_second"], "B/s")),
            t(_n(h["packets_received"])),
            t(_n(h["captured"])),
            t(
                f"{_n(h['dropped'])}" + (f" ({reasons})" if reasons else ""),
                80,
                "red" if h["dropped"] else "",
            ),
            t(_n(h["queue_batches"])),
            t(spool),
            t(h["breaker"], 16),
        )
    if not snap["hunters"]:
        ht.add_row(t("(no hunter has registered)", style="dim"))
    parts.append(ht)

    calls = snap["calls"]
    if calls is None:
        parts.append(
            Text("Active calls: no call index (lc process --per-call-pcap-dir)", style="dim")
        )
    else:
        ct = Table(
            title=f"Active calls ({len(calls)})",
            title_justify="left",
            expand=True,
            box=None,
            pad_edge=False,
        )
        for name in ("Call-ID", "state", "from", "to", "start", "packets", "hunters"):
            ct.add_column(
                name,
                no_wrap=True,
                overflow="ellipsis",
                justify="right" if name == "packets" else "left",
            )
        for c in calls:
            ct.add_row(
                t(c["call_id"], 48),
                t(c["state"], 16),
                t(c["from_user"], 32),
                t(c["to_user"], 32),
                t(c["start"][11:19]),
                t(_n(c["packets"])),
                t(",".join(c["hunters"]), 64),
            )
        parts.append(ct)

    at = Table(
        title=f"Recent alerts ({len(snap['alerts'])})",
        title_justify="left",
        expand=True,
        box=None,
        pad_edge=False,
    )
    for name in ("domain", "score", "queries", "hunters", "last seen"):
        at.add_column(
            name,
            no_wrap=True,
            overflow="ellipsis",
            justify="right" if name in ("score", "queries") else "left",
        )
    if not snap["alerts"]:
        at.add_row(t("(none)", style="dim"))
    for a in snap["alerts"]:
        at.add_row(
            t(a["domain"], 80, "yellow"),
            t(f"{a['score']:.3f}"),
            t(_n(a["queries"])),
            t(",".join(a["hunters"]), 64),
            t(a["last_seen"][:19].replace("T", " ")),
        )
    parts.append(at)
    return Group(*parts)


# -- the loops ----------------------------------------------------------------------------


class _Stop(Exception):
    """SIGTERM or SIGHUP: leave like on q."""


def _on_signal(signum: int, _frame: object) -> None:
    raise _Stop(signum)


@contextlib.contextmanager
def _keys() -> Iterator[int | None]:
    """stdin in cbreak mode (keys one by one, no echo; Ctrl-C still a signal), restored on
    the way out whatever happens; None when stdin is not a terminal."""
    import termios
    import tty

    fd = sys.stdin.fileno() if sys.stdin is not None else -1
    if fd < 0 or not os.isatty(fd):
        yield None
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _poll_or_error(poller: Poller) -> tuple[dict[str, Any] | None, str]:
    try:
        return poller.poll(), ""
    except LcError as e:
        return None, " ".join(str(e).split())
    except Exception as e:  # a bug: say so on the screen, keep going
        return None, f"{type(e).__name__}: {e}"


def _screen(
    poller: Poller, first: dict[str, Any], interval: float, count: int, address: str
) -> None:
    from rich.console import Console
    from rich.live import Live

    state: dict[str, Any] = {"snap": first, "error": "", "polls": 1}
    fresh = threading.Event()
    stop = threading.Event()
    lock = threading.Lock()

    def poll_loop() -> None:
        while not (count and state["polls"] >= count):
            if stop.wait(interval):
                return
            snap, error = _poll_or_error(poller)
            with lock:
                if snap is not None:
                    state["snap"] = snap
                state["error"] = error
                state["polls"] += 1
            fresh.set()

    poller_thread = threading.Thread(target=poll_loop, name="lc-watch-poll", daemon=True)
    with _keys() as fd, Live(console=Console(), screen=True, auto_refresh=False) as live:
        live.update(render(first, address), refresh=True)
        poller_thread.start()
        try:
            while True:
                if fresh.is_set():
                    fresh.clear()
                    with lock:
                        snap, error, polls = state["snap"], state["error"], state["polls"]
                    live.update(render(snap, address, error), refresh=True)
                    if count and polls >= count:
                        break
                if count == 1:
                    break
                if fd is None:
                    fresh.wait(0.1)
                    continue
                ready, _, _ = select.select([fd], [], [], 0.1)
                if ready:
                    key = os.read(fd, 1)
                    if key in (b"q", b"Q") or not key:
                        break
        finally:
            stop.set()


def _json_lines(poller: Poller, first: dict[str, Any], interval: float, count: int) -> None:
    line: dict[str, Any] = public(first)
    done = 0
    while True:
        t0 = time.monotonic()
        sys.stdout.write(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n")
        sys.stdout.flush()
        done += 1
        if count and done >= count:
            return
        time.sleep(max(0.0, interval - (time.monotonic() - t0)))
        snap, error = _poll_or_error(poller)
        line = public(snap) if snap is not None else {"time": _iso(time.time_ns()), "error": error}


@click.command(name="watch")
@click.option(
    "--processor",
    envvar="LC_PROCESSOR",
    metavar="HOST:PORT",
    help="Processor to watch (env LC_PROCESSOR).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    metavar="S",
    help="Seconds between two refreshes.",
)
@click.option(
    "--count",
    type=click.IntRange(min=0),
    default=0,
    metavar="N",
    help="Stop after N refreshes (default: until q, Ctrl-C or SIGTERM).",
)
@tls_options
def watch(processor, interval, count, tls_cert, tls_key, tls_ca, insecure) -> None:
    """A live view of a processor: hunters, active calls, alerts, write rate.

    Full screen on a terminal (q or Ctrl-C quits); one JSON line per refresh otherwise.
    """
    try:
        check_target(processor, "--processor")
        tls = tls_from_flags(tls_cert, tls_key, tls_ca, insecure)
        poller = Poller(processor, tls, timeout=max(5.0, 2 * interval))
    except LcError as e:
        sys.exit(fail_json(e))
    try:
        first = poller.poll()  # refused (not an admin certificate, ...): fail as admin commands
    except LcError as e:
        poller.close()
        sys.exit(fail_json(e))
    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        if sys.stdout.isatty():
            _screen(poller, first, interval, count, processor)
        else:
            _json_lines(poller, first, interval, count)
    except (KeyboardInterrupt, _Stop):
        pass
    except BrokenPipeError:  # `lc watch | head`: the reader is gone; so are we, quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        poller.close()
