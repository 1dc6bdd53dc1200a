"""A heartbeat the processor refuses (INVALID_ARGUMENT and the like: every later one
will be too) is said once as a warning, naming the processor's reason; a heartbeat lost
in transit stays a debug line. Before, both were debug lines, so a live ``lc hunt
http`` whose heartbeats were all refused said nothing while ``lc show hunter`` kept
its registration's counters."""

from __future__ import annotations

import logging

import grpc

from lc.link.outbox import Outbox
from lc.link.uplink import HunterIdentity, Uplink
from lc.proto import lc_pb2


class _Refused(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class _Stub:
    def __init__(self) -> None:
        self.answers: list[object] = []

    def Heartbeat(self, req, timeout: float):
        a = self.answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a


def test_a_refused_heartbeat_is_a_warning_once_per_reason(caplog) -> None:
    ident = HunterIdentity("h", 1, "host", "0", "http", ["eth0"])
    up = Uplink("127.0.0.1:9", None, ident, Outbox(), [("eth0", 1)],
                lambda: lc_pb2.HunterCounters())  # fmt: skip
    stub = _Stub()
    up._stub = lambda _cls: stub  # type: ignore[method-assign]
    too_many = _Refused(grpc.StatusCode.INVALID_ARGUMENT, "counters.mode: 74 entries\x1b[2J")
    lost = _Refused(grpc.StatusCode.UNAVAILABLE, "connection reset")
    ok = lc_pb2.HeartbeatResponse(registered=True)
    stub.answers = [too_many, too_many, lost, too_many, ok, too_many]
    with caplog.at_level(logging.DEBUG, logger="lc.link.uplink"):
        for _ in range(6):
            up._heartbeat()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # Once for the first run of refusals, once again after a heartbeat got through.
    assert (
        warnings
        == ["processor 127.0.0.1:9 refused a heartbeat: counters.mode: 74 entries\\x1b[2J"] * 2
    )
    assert any("connection reset" in r.getMessage() and r.levelno == logging.DEBUG
               for r in caplog.records)  # fmt: skip
