"""--events-redis against a real redis-server: events arrive; none are lost while Redis is
down, across its restart and across the processor's."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, need, run_lc, start_processor, tls_args

SIP_CALL = ROOT / "captures" / "sip-call.pcap"
EVENTS_PER_REPLAY = 3  # the capture's calls, each one event with --no-filter-policy allow


class RedisServer:
    """A redis-server of its own on a free port, persisting every write (appendfsync
    always), so what it accepted survives its restart."""

    def __init__(self, tmp: Path) -> None:
        need("redis-server")
        self.dir = tmp / "redis"
        self.dir.mkdir()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "always",
             "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except Exception:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(20)
            self.proc = None

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, db=3, socket_timeout=5)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/3"

    def entries(self) -> list[dict[bytes, bytes]]:
        return [fields for _, fields in self.client().xrange("lc:events")]


def replay(proc, pki, hunter: str) -> None:
    r = run_lc(
        "hunt", "voip", "--processor", proc.addr, *tls_args(pki, f"hunter-{hunter}"),
        "-r", str(SIP_CALL), "--no-filter-policy", "allow", "--id", hunter, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "acknowledged 1494, dropped 0, unacknowledged 0" in r.stdout, r.stdout


def logged_ids(data_dir: Path) -> list[str]:
    ids = []
    for f in sorted((data_dir / "events").glob("events-*.jsonl")):
        for line in f.read_text().splitlines():
            ids.append(json.loads(line)["event"]["id"])
    return ids


def wait_for(cond, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def metric(url: str, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:
        m = re.search(rf"^{name} (\S+)$", r.read().decode(), re.M)
    assert m, name
    return float(m.group(1))


@pytest.mark.e2e
def test_events_reach_redis_through_outages(tmp_path, pki):
    pki_hunters = ["h1", "h2", "live"]  # the session PKI's hunter certificates
    rs = RedisServer(tmp_path)
    rs.start()
    extra = ["--events-redis", rs.url, "--events-redis-maxlen", "1000", "--metrics-listen", "0"]
    proc = start_processor(tmp_path, tls_args(pki, "processor"), *extra)
    try:
        murl = re.search(r"metrics on (\S+)", proc.stderr()).group(1)
        # 1. Redis up: the events of a replay arrive, with their id, dataset and document.
        replay(proc, pki, pki_hunters[0])
        wait_for(lambda: len(rs.entries()) == EVENTS_PER_REPLAY, "the first events")
        e = rs.entries()[0]
        doc = json.loads(e[b"json"])
        assert e[b"id"].decode() == doc["event"]["id"]
        assert e[b"dataset"] == b"lc.sip" and doc["sip"]["call_id"]
        # 2. Redis down: a replay is written and acknowledged as before (its events queue
        # in the event log); Redis restarted, they arrive.
        rs.stop()
        t0 = time.monotonic()
        replay(proc, pki, pki_hunters[1])
        assert time.monotonic() - t0 < 30
        wait_for(lambda: metric(murl, "lc_processor_redis_connected") == 0, "redis seen down")
        assert metric(murl, "lc_processor_redis_errors_total") >= 1
        rs.start()
        wait_for(lambda: len({x[b"id"] for x in rs.entries()}) == 2 * EVENTS_PER_REPLAY, "more")
        # 3. Redis down again, a replay, the processor stopped; Redis back first, then the
        # processor: the events of that replay leave from the log, by the saved cursor.
        rs.stop()
        replay(proc, pki, pki_hunters[2])
        proc.stop()
        rs.start()
        proc = start_processor(tmp_path, tls_args(pki, "processor"), *extra)
        wait_for(lambda: len({x[b"id"] for x in rs.entries()}) == 3 * EVENTS_PER_REPLAY, "all")
        murl = re.search(r"metrics on (\S+)", proc.stderr()).group(1)
        time.sleep(0.5)
        assert metric(murl, "lc_processor_redis_connected") == 1
        got = [x[b"id"].decode() for x in rs.entries()]
    finally:
        proc.stop()
        rs.stop()
    want = logged_ids(proc.data_dir)
    assert len(want) == 3 * EVENTS_PER_REPLAY
    assert set(got) == set(want)  # none lost; a duplicate only ever repeats an id
    assert sorted(set(got), key=got.index) == want  # and in the log's order


@pytest.mark.e2e
def test_events_redis_flags_are_checked(tmp_path):
    base = ["process", "--insecure", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path)]
    r = run_lc(*base, "--events-redis", "http://x:1/0")
    assert r.returncode == 3 and "--events-redis" in r.stderr, r.stderr
    r = run_lc(*base, "--events-redis", "redis://127.0.0.1:1/0", "--no-events")
    assert r.returncode == 3 and "--no-events" in r.stderr, r.stderr
    r = run_lc(*base, "--events-redis", "redis://127.0.0.1:1/0", "--events-redis-maxlen", "0")
    assert r.returncode == 3 and "--events-redis-maxlen" in r.stderr, r.stderr
