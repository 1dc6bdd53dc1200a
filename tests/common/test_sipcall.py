"""Tests for lc.common.sipcall: the one SIP call-state table.

The expected states are written out by hand from RFC 3261 call flows (the table in
the module's docstring), and the same flows are run through every kind of summary the
table reads: the dataclass, the wire's SipSummary and a parsed SIP message.
"""

from __future__ import annotations

import pytest

from lc.common.sip import parse_sip
from lc.common.sipcall import (
    FINAL,
    STATES,
    CallState,
    SipSummary,
    initial_method,
    message_event,
    next_state,
)
from lc.proto import lc_pb2


def req(method: str) -> SipSummary:
    return SipSummary(method=method, cseq_method=method)


def resp(status: int, cseq_method: str) -> SipSummary:
    return SipSummary(status=status, cseq_method=cseq_method)


# (message, expected state, ended after it)
FLOWS = {
    "answered then BYE": [
        (req("INVITE"), "ringing", False),
        (resp(100, "INVITE"), "ringing", False),
        (resp(180, "INVITE"), "ringing", False),
        (resp(200, "INVITE"), "answered", False),
        (req("ACK"), "answered", False),
        (req("INVITE"), "answered", False),  # re-INVITE
        (resp(488, "INVITE"), "answered", False),  # its failure: the call stays up
        (req("BYE"), "ended", True),
        (resp(200, "BYE"), "ended", True),
    ],
    "challenged, retried, answered": [
        (req("INVITE"), "ringing", False),
        (resp(407, "INVITE"), "failed", True),
        (req("ACK"), "failed", True),
        (req("INVITE"), "ringing", False),  # the retry revives it
        (resp(200, "INVITE"), "answered", False),
    ],
    "cancelled": [
        (req("INVITE"), "ringing", False),
        (req("CANCEL"), "cancelled", True),
        (resp(200, "CANCEL"), "cancelled", True),
        (resp(487, "INVITE"), "cancelled", True),
    ],
    "200 crossed the CANCEL": [
        (req("INVITE"), "ringing", False),
        (req("CANCEL"), "cancelled", True),
        (resp(200, "INVITE"), "answered", False),
    ],
    "busy": [
        (req("INVITE"), "ringing", False),
        (resp(486, "INVITE"), "failed", True),
        (resp(200, "INVITE"), "answered", False),  # another fork answered
    ],
    "REGISTER with a challenge and a refresh": [
        (req("REGISTER"), "ringing", False),
        (resp(401, "REGISTER"), "failed", True),
        (req("REGISTER"), "ringing", False),
        (resp(200, "REGISTER"), "ended", True),
        (resp(200, "OPTIONS"), "ended", True),  # another transaction: no change
        (req("REGISTER"), "ringing", False),  # a refresh reusing the Call-ID
    ],
}


def as_wire(s: SipSummary) -> lc_pb2.SipSummary:
    return lc_pb2.SipSummary(method=s.method, status=s.status, cseq_method=s.cseq_method)


def as_parsed(s: SipSummary):
    """A parsed SIP message saying the same."""
    start = f"{s.method} sip:bob@example.com SIP/2.0" if s.method else f"SIP/2.0 {s.status} X"
    raw = (
        f"{start}\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n"
        "From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n"
        f"Call-ID: c1\r\nCSeq: 1 {s.cseq_method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    msg = parse_sip(raw)
    assert (msg.method, msg.status, msg.cseq_method) == (s.method, s.status, s.cseq_method)
    return msg


@pytest.mark.parametrize(
    "kind", [lambda s: s, as_wire, as_parsed], ids=["dataclass", "wire", "parsed"]
)
@pytest.mark.parametrize("flow", FLOWS)
def test_call_flows(flow, kind):
    call = CallState()
    end = None
    for i, (msg, state, ended) in enumerate(FLOWS[flow]):
        ts = 1_000 + i
        before = call.state
        changed = call.apply(kind(msg), ts)
        assert changed == (state != before)
        assert call.state == state, f"step {i}"
        assert call.ended == ended == (state in FINAL)
        if ended and (end is None or before not in FINAL):
            end = ts
        if not ended:
            end = None
        assert call.end_ns == end, f"step {i}"
    assert call.method == FLOWS[flow][0][0].method


def test_a_call_first_seen_mid_dialog_is_an_invite_call():
    for m in ("ACK", "BYE", "CANCEL", "PRACK", "UPDATE", "INFO"):
        assert initial_method(req(m)) == "INVITE"
    assert initial_method(resp(200, "register")) == "REGISTER"
    call = CallState()
    assert call.apply(req("BYE"), 5) and (call.method, call.state, call.end_ns) == (
        "INVITE", "ended", 5,
    )  # fmt: skip


def test_every_state_and_message_lands_in_a_state():
    summaries = [req(m) for m in ("INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "")] + [
        resp(s, m)
        for s in (100, 180, 200, 302, 401, 407, 486, 487, 500, 603)
        for m in ("INVITE", "BYE", "REGISTER", "")
    ]
    for state in STATES:
        for method in ("INVITE", "REGISTER", "MESSAGE", ""):
            for s in summaries:
                assert next_state(state, method, s) in STATES


def test_events():
    assert message_event("INVITE", resp(183, "INVITE")) == "invite_1xx"
    assert message_event("INVITE", resp(487, "INVITE")) == "invite_487"
    assert message_event("REGISTER", resp(200, "OPTIONS")) is None
    assert message_event("REGISTER", resp(100, "REGISTER")) is None
    assert message_event("MESSAGE", req("MESSAGE")) == "request"
    assert message_event("INVITE", req("ACK")) is None
