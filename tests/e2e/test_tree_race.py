"""Processors registering to each other at the same instant (a cycle race), end to end.

The registration check (:meth:`lc.processor.tree.Tree.check_child`) uses what each
processor knows when a child registers: its ancestors (learnt from its own upstream's
answer) and the child's descendants (what the child knew when it built its request).
Two processors started together with ``--upstream`` pointing at each other, each
registering while the other's registration is still in flight, both pass: neither has
an upstream yet, neither has a child yet. Started naturally the window is a few
milliseconds (the second registration usually comes after the first completed, and is
refused), so these tests force it: the processors run under a hook that makes every
registration check wait, after it passed, until every processor of the ring has passed
one (a barrier of files), so all the checks pass before any child is recorded.

Without a re-check the loop stays: every processor connected to the next, each one's
tree nesting one level deeper at every heartbeat (edge1 > edge2 > edge1 > ...), and
every batch going round the ring once. With it, the first heartbeats find the loop and
the link from its greatest processor id is cut, once: the others stay connected, a tree.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lc.common.credentials import add_processor, init_pki
from tests.conftest import ROOT, lc_env, run_lc, start_processor, tls_args
from tests.e2e.test_delivery import free_port, wait_for

pytestmark = pytest.mark.e2e

SAMPLE = ROOT / "captures" / "sip-call.pcap"
EDGE_FAST = ("--upstream-backoff-max", "1", "--upstream-breaker-open-time", "1")

# `lc process` with a barrier after each passed registration check (see the module doc).
HOOK = """
import sys, time
from pathlib import Path
from lc.processor import tree as _tree
_check, _dir, _names = _tree.Tree.check_child, Path({dir!r}), {names!r}
def check_child(self, child_id, info):
    _check(self, child_id, info)
    (_dir / self.processor_id).touch()
    end = time.monotonic() + 8
    while time.monotonic() < end and not all((_dir / n).exists() for n in _names):
        time.sleep(0.02)
_tree.Tree.check_child = check_child
from lc.cli.main import main
sys.argv[0] = "lc"
main()
"""


@pytest.fixture(scope="module")
def ring_pki(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ringpki") / "certs"
    init_pki(d, hunters=["h1"])
    for name in ("edge1", "edge2", "edge3"):
        add_processor(d, name, ["127.0.0.1"])
    return d


class Ring:
    """Processors ``names[i]`` with ``--upstream names[i + 1]`` (the last: the first),
    all started at once, each registration check held at the barrier."""

    def __init__(self, tmp: Path, pki: Path, names: list[str]) -> None:
        self.pki, self.names = pki, names
        self.ports = [free_port() for _ in names]
        barrier = tmp / "barrier"
        barrier.mkdir()
        hook = HOOK.format(dir=str(barrier), names=names)
        self.procs: list[subprocess.Popen] = []
        self.errs: list[Path] = []
        for i, name in enumerate(names):
            d = tmp / name
            d.mkdir()
            up = self.ports[(i + 1) % len(names)]
            args = [sys.executable, "-c", hook, "process", "--listen",
                    f"127.0.0.1:{self.ports[i]}", "--data-dir", str(d / "data"),
                    *tls_args(pki, f"processor-{name}"), "--upstream", f"127.0.0.1:{up}",
                    *EDGE_FAST]  # fmt: skip
            self.errs.append(d / "stderr")
            with open(self.errs[-1], "w") as f:
                self.procs.append(
                    subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=f, env=lc_env())
                )

    def addr(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[self.names.index(name)]}"

    def stderr(self, name: str) -> str:
        return self.errs[self.names.index(name)].read_text(errors="replace")

    def admin(self, name: str, *args: str) -> dict:
        r = run_lc(*args, "--processor", self.addr(name), *tls_args(self.pki, "admin"))
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def links(self) -> dict[str, tuple[list[str], str]]:
        """Per processor: its connected children, and the state of its upstream link."""
        out = {}
        for name in self.names:
            t = self.admin(name, "show", "topology")
            kids = [p["processor_id"] for p in t["processors"] if p["state"] == "connected"]
            out[name] = (kids, t["upstream_state"])
        return out

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def _settle(ring: Ring, want: dict[str, tuple[list[str], str]], timeout: float) -> None:
    """Wait until the links are ``want`` (the assertion shows the last seen)."""
    end, got = time.monotonic() + timeout, None
    while time.monotonic() < end:
        try:
            got = ring.links()
        except AssertionError:  # not listening yet
            got = None
        if got == want:
            return
        time.sleep(0.2)
    assert got == want


def _stays(ring: Ring, want: dict[str, tuple[list[str], str]], seconds: float) -> None:
    """``want`` holds at every look for ``seconds`` (heartbeats every 5 s, the cut
    side retrying its registration every second): no oscillation."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert ring.links() == want
        time.sleep(1.0)


def test_two_processors_upstream_to_each_other_at_once_leave_one_link(tmp_path, ring_pki):
    ring = Ring(tmp_path, ring_pki, ["edge1", "edge2"])
    try:
        # Both registrations passed their check before either was recorded.
        wait_for(lambda: all((tmp_path / "barrier" / n).exists() for n in ring.names), 30,
                 "both registration checks")  # fmt: skip
        # edge2 is the greater id: its link to edge1 is the one cut; edge1 -> edge2 stays.
        want = {"edge1": ([], "connected"), "edge2": (["edge1"], "connecting")}
        _settle(ring, want, 20)
        _stays(ring, want, 12)
        assert "cut the link" in ring.stderr("edge1")
        line = next(x for x in ring.stderr("edge2").splitlines() if "cycle:" in x)
        assert "edge1" in line and "edge2" in line, line
        # A hunter at edge1: its packets reach edge2 and come back to edge1 no more.
        h = run_lc("hunt", "--processor", ring.addr("edge1"), *tls_args(ring_pki, "hunter-h1"),
                   "-r", str(SAMPLE))  # fmt: skip
        assert h.returncode == 0, h.stderr
        at1 = ring.admin("edge1", "show", "status")
        n = int(at1["packets_written"])
        assert n > 0
        wait_for(lambda: int(ring.admin("edge2", "show", "status")["packets_written"]) == n, 15,
                 "edge1's packets at edge2")  # fmt: skip
        time.sleep(6)  # a heartbeat round: nothing comes back
        at1 = ring.admin("edge1", "show", "status")
        assert int(at1["batches_duplicate"]) == 0
        hunters = {h["hunter_id"]: h.get("via", []) for h in ring.admin("edge2", "list", "hunters")}
        assert hunters == {"h1": ["edge1"]}
    finally:
        ring.stop()


def test_three_processors_in_a_ring_at_once_leave_a_chain(tmp_path, ring_pki):
    ring = Ring(tmp_path, ring_pki, ["edge1", "edge2", "edge3"])
    try:
        wait_for(lambda: all((tmp_path / "barrier" / n).exists() for n in ring.names), 30,
                 "the three registration checks")  # fmt: skip
        # edge1 -> edge2 -> edge3 -> edge1: the link from edge3 (the greatest) is cut.
        want = {
            "edge1": ([], "connected"),
            "edge2": (["edge1"], "connected"),
            "edge3": (["edge2"], "connecting"),
        }
        _settle(ring, want, 30)
        _stays(ring, want, 12)
        top = ring.admin("edge3", "show", "topology")
        assert [(p["processor_id"], p["depth"]) for p in top["processors"]] == [("edge2", 1)]
        deeper = top["processors"][0]["processors"]
        assert [(p["processor_id"], p["depth"], p["processors"]) for p in deeper] == [
            ("edge1", 2, [])
        ]
        assert "cycle:" in ring.stderr("edge3")
    finally:
        ring.stop()


def test_a_chain_learnt_before_the_processors_above_registered_is_completed(tmp_path, ring_pki):
    """edge2 registers with edge1 while edge1 has no upstream yet (the top is down): it
    learns only [edge1] and 7 levels. Once edge1 is under the top (--max-tree-depth 2),
    edge1's heartbeat answers tell edge2 the chain as it is now (edge1, top; 0 levels),
    so edge3 below edge2, three levels under the top, is refused."""
    pki = ring_pki
    for d in ("e1", "e2", "e3", "top"):
        (tmp_path / d).mkdir()
    top_port = free_port()
    up = ("--upstream-backoff-max", "1", "--upstream-breaker-open-time", "1")
    e1 = start_processor(tmp_path / "e1", tls_args(pki, "processor-edge1"),
                         "--upstream", f"127.0.0.1:{top_port}", *up)  # fmt: skip
    e2 = start_processor(tmp_path / "e2", tls_args(pki, "processor-edge2"),
                         "--upstream", e1.addr, *up)  # fmt: skip
    procs = [e2, e1]

    def kids(p) -> list[tuple[str, str]]:
        r = run_lc("show", "topology", "--processor", p.addr, *tls_args(pki, "admin"))
        assert r.returncode == 0, r.stderr
        return [(c["processor_id"], c["state"]) for c in json.loads(r.stdout)["processors"]]

    try:
        wait_for(lambda: kids(e1) == [("edge2", "connected")], 20, "edge2 under edge1")
        top = start_processor(tmp_path / "top", tls_args(pki, "processor"), "--listen",
                              f"127.0.0.1:{top_port}", "--max-tree-depth", "2")  # fmt: skip
        procs.append(top)
        wait_for(lambda: kids(top) == [("edge1", "connected")], 20, "edge1 under the top")
        time.sleep(11)  # two heartbeats: edge1's answer from the top, then edge2's from edge1
        e3 = start_processor(tmp_path / "e3", tls_args(pki, "processor-edge3"),
                             "--upstream", e2.addr, *up)  # fmt: skip
        procs.insert(0, e3)
        wait_for(lambda: "depth limit" in e3.stderr(), 20, "edge3 refused")
        line = next(x for x in e3.stderr().splitlines() if "depth limit" in x)
        assert "'edge3' has 0 processor level(s) below it, and 'edge2' allows 0" in line, line
        assert kids(e2) == []
    finally:
        for p in procs:
            p.stop()
