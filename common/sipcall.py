"""The SIP call-state table: one set of rules for the hunter's VoIP mode and the
processor's call index.

A *call* is a Call-ID: an INVITE dialog, or a transaction without a dialog
(REGISTER, MESSAGE, OPTIONS, SUBSCRIBE/NOTIFY, ...). Its state follows its SIP
messages, read from a summary (anything with ``method``, ``status`` and
``cseq_method``: :class:`SipSummary`, the wire's ``lc_pb2.SipSummary``, or a parsed
:class:`lc.common.sip.SipMessage`). Sans-IO and clock-free: times are the capture
timestamps the caller passes.

Events come from the summary: requests by method, responses by status and CSeq
method; ``request``/``request 2xx``/``request >=300`` concern a call whose initial
method is not INVITE, a non-INVITE transaction. A call first seen through RTP/RTCP
starts ``ringing``.

=========== ====================== =========== =====================================
state       event                  new state   note
=========== ====================== =========== =====================================
(new)       first packet           ringing     INVITE, REGISTER... or media
ringing     INVITE 2xx             answered
ringing     INVITE 487             cancelled   "terminated": a CANCEL, seen or not
ringing     INVITE >=300 (not 487) failed      end = the response's time; a 401/407
                                               challenge too: the retried INVITE
                                               that follows brings it back
ringing     CANCEL                 cancelled   end = the CANCEL's time
ringing     BYE                    ended       end = the BYE's time
ringing     request 2xx            ended       non-INVITE transaction done
ringing     request >=300          failed
answered    BYE                    ended       re-INVITE answers and failures,
                                               CANCEL of a re-INVITE: no change
failed      INVITE                 ringing     retry, e.g. after 401/407; end cleared
failed      INVITE 2xx             answered    another fork answered
failed      request                ringing     retry, e.g. REGISTER after 401
cancelled   INVITE 2xx             answered    the 200 crossed the CANCEL
                                               (RFC 3261 section 9.1): call is up
ended       request                ringing     a refresh reusing the Call-ID
=========== ====================== =========== =====================================

Any pair not listed leaves the state as it is: 1xx responses, retransmissions, ACK,
PRACK, UPDATE, INFO and other in-dialog requests change nothing. A call has *ended*
while its state is ``ended``, ``failed`` or ``cancelled`` (:data:`FINAL`): ``end_ns``
is set when it enters one of them and cleared when it leaves them, so a call that a
later message revives (a retry after a challenge, a 200 that crossed the CANCEL, a
refresh) is going again. The initial ``method`` is the first request's method (ACK,
BYE, CANCEL, PRACK, UPDATE or INFO first, i.e. a call caught in mid-dialog, count as
INVITE).

Typical use, per call::

    call = CallState()
    ...
    if call.apply(summary, ts_ns):   # True when the state changed
        if call.ended: ...           # schedule the end (grace for late RTP)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "ACTIVE",
    "FINAL",
    "STATES",
    "CallState",
    "SipLike",
    "SipSummary",
    "initial_method",
    "message_event",
    "next_state",
]

STATES = ("ringing", "answered", "ended", "failed", "cancelled")
ACTIVE = frozenset(("ringing", "answered"))
FINAL = frozenset(("ended", "failed", "cancelled"))

# Requests that exist only inside an INVITE dialog: a call first seen through one
# of them was caught mid-dialog.
_IN_DIALOG = frozenset(("ACK", "BYE", "CANCEL", "PRACK", "UPDATE", "INFO"))

# (state, event) -> new state; pairs not listed leave the state unchanged.
_TRANSITIONS: dict[tuple[str, str], str] = {
    ("ringing", "invite_2xx"): "answered",
    ("ringing", "invite_487"): "cancelled",
    ("ringing", "invite_fail"): "failed",
    ("ringing", "cancel"): "cancelled",
    ("ringing", "bye"): "ended",
    ("ringing", "request_2xx"): "ended",
    ("ringing", "request_fail"): "failed",
    ("answered", "bye"): "ended",
    ("failed", "invite"): "ringing",
    ("failed", "invite_2xx"): "answered",
    ("failed", "request"): "ringing",
    ("cancelled", "invite_2xx"): "answered",
    ("ended", "request"): "ringing",
}


class SipLike(Protocol):
    """What the table reads of a SIP message."""

    @property
    def method(self) -> str: ...  # request method; "" for a response

    @property
    def status(self) -> int: ...  # response status; 0 for a request

    @property
    def cseq_method(self) -> str: ...  # the CSeq method (what a response answers)


@dataclass(frozen=True, slots=True)
class SipSummary:
    """What a hunter says about one SIP message (the wire's ``SipSummary``)."""

    method: str = ""  #: request method; "" for a response
    status: int = 0  #: response status; 0 for a request
    cseq_method: str = ""  #: the CSeq method (what a response answers)
    from_user: str = ""
    to_user: str = ""
    from_uri: str = ""
    to_uri: str = ""


def message_event(call_method: str, sip: SipLike) -> str | None:
    """The table's event a SIP message is for a call whose initial method is
    ``call_method``, or None if it is none."""
    status = sip.status
    if status:
        cm = sip.cseq_method.upper()
        if cm == "INVITE":
            if status < 200:
                return "invite_1xx"
            if status < 300:
                return "invite_2xx"
            return "invite_487" if status == 487 else "invite_fail"
        if cm and cm == call_method and status >= 200:
            return "request_2xx" if status < 300 else "request_fail"
        return None
    m = sip.method.upper()
    if m == "INVITE":
        return "invite"
    if m == "CANCEL":
        return "cancel"
    if m == "BYE":
        return "bye"
    if m and m == call_method:
        return "request"
    return None


def next_state(state: str, call_method: str, sip: SipLike) -> str:
    """The state a call in ``state`` whose initial method is ``call_method`` goes to.

    See the table in the module docstring; anything it does not list keeps ``state``.
    """
    event = message_event(call_method, sip)
    if event is None:
        return state
    return _TRANSITIONS.get((state, event), state)


def initial_method(sip: SipLike) -> str:
    """The call's method as its first SIP message tells it (see module docstring)."""
    m = (sip.method or sip.cseq_method).upper()
    return "INVITE" if m in _IN_DIALOG else m


@dataclass(slots=True)
class CallState:
    """One call's place in the table: its initial method, state and end time."""

    method: str = ""  #: the initial method; "" until a SIP message was seen
    state: str = "ringing"
    end_ns: int | None = None  #: set while the state is final (capture time it ended)

    @property
    def ended(self) -> bool:
        return self.state in FINAL

    def apply(self, sip: SipLike, ts_ns: int) -> bool:
        """Apply one SIP message captured at ``ts_ns``; True when the state changed."""
        if not self.method:
            self.method = initial_method(sip)
        old = self.state
        new = next_state(old, self.method, sip)
        if new == old:
            return False
        self.state = new
        if new in FINAL:
            if old not in FINAL:
                self.end_ns = ts_ns
        else:
            self.end_ns = None
        return True
