"""lc.common.pop3 against tshark, Zeek and Suricata on the public capture corpus.

Each POP3 connection is put back together (mailcorpus.sessions) and fed to a
:class:`Pop3Session` in frame order, with the frame number as the timestamp.
Oracles (made by other tools, never regenerated with lc):

* tshark's ``.expected.tsv``: commands and parameters per frame; the status
  lines in order; the IMF From/To/Subject/Message-ID of the retrieved messages in
  order. (tshark 4.0 puts a message's IMF in the frame that completes it only
  when the ``+OK`` line gives the size; otherwise in the message's first frame,
  so messages are compared in order, not by frame.)
* Zeek's printed pop3_request/pop3_reply events, per connection, in order.
* Suricata's expected eve.json values (user, LIST/UIDL lines, counts).
"""

from __future__ import annotations

import email.policy

import pytest
import yaml
from mailcorpus import need, read_oracle, run, sessions, unescape

from lc.common.mailmsg import MailMessage
from lc.common.pop3 import Pop3Command, Pop3Reply, Pop3Session

HEADER_FACTORY = email.policy.default.header_factory

CAPTURES = [
    "pop3/suricata_pop3-02-bug-7709.pcap",
    "pop3/suricata_pop3.pcap",
    "pop3/zeek_pop3-starttls.pcap",
    "pop3/zeek_pop3.pcap",
]


def pop3_runs(capture: str) -> list[tuple[Pop3Session, list]]:
    out = []
    for sess in sessions(need(capture), {110}):
        parser = Pop3Session()
        out.append((parser, run(parser, sess.segments)))
    return out


def as_tshark(text: str) -> str:
    """tshark shows every byte outside ASCII in these fields as U+FFFD."""
    raw = text.encode("utf-8", "surrogateescape")
    return "".join(chr(b) if b < 0x80 else "\ufffd" for b in raw)


@pytest.mark.parametrize("capture", CAPTURES)
def test_pop3_matches_tshark(capture: str) -> None:
    rows = read_oracle(need(capture + ".expected.tsv"))
    events = [e for _p, evs in pop3_runs(capture) for e in evs]
    commands = [e for e in events if isinstance(e, Pop3Command)]
    # Commands, frame by frame. tshark shows the line that answers an AUTH
    # challenge as a command and PASS's argument; lc keeps neither (secrets).
    theirs = {
        int(r["frame.number"]): (r["pop.request.command"], r["pop.request.parameter"])
        for r in rows
        if r["pop.request.command"].isalpha()  # not the base64 line after an AUTH challenge
    }
    ours = {}
    for c in commands:
        assert c.ts_ns not in ours, "one command per frame in these captures"
        ours[c.ts_ns] = (c.verb, c.arg)
    for frame, (verb, _arg) in theirs.items():
        if verb == "PASS":
            assert ours[frame] == ("PASS", "")
            theirs[frame] = ours[frame]
    assert ours == theirs
    # Status lines, in order.
    want = [
        (r["pop.response.indicator"] == "+OK", r["pop.response.description"])
        for r in rows
        if r["pop.response.indicator"]
    ]
    got = [(e.ok, as_tshark(e.text)) for e in events if isinstance(e, Pop3Reply)]
    assert got == want
    # Messages, in order. Without a size on the +OK line, tshark 4.0 dissects each
    # segment of a message as a message of its own, so one message's fields are
    # spread over the rows up to the next status line: gather them.
    imf_keys = ("imf.from", "imf.to", "imf.subject", "imf.message_id")
    gathered: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for r in rows:
        if r["pop.response.indicator"]:
            current = None
        if any(r[k] for k in imf_keys):
            if current is None:
                current = {}
                gathered.append(current)
            for k in imf_keys:
                if r[k] and k not in current:
                    current[k] = unescape(r[k]).replace("\r\n", "")
    msgs = [e for e in events if isinstance(e, MailMessage)]
    assert len(msgs) == len(gathered)
    for msg, imf in zip(msgs, gathered, strict=True):
        for key in imf_keys:
            name = key[4:].replace("_", "-")
            assert msg.fields.get(name, "") == imf.get(key, "")
        assert msg.subject == str(HEADER_FACTORY("subject", imf.get("imf.subject", "")))
        want = HEADER_FACTORY("from", imf["imf.from"]).addresses if "imf.from" in imf else ()
        assert [a.addr for a in msg.from_] == [a.addr_spec for a in want]


def test_pop3_matches_zeek_events() -> None:
    lines = need("pop3/zeek_pop3.pcap.zeek-pop3-events.txt").read_text().splitlines()
    per_uid: dict[str, list[tuple[str, str, str]]] = {}
    for line in lines:
        if line.startswith("#"):
            continue
        uid, event, _orig, first, second = line.split(", ", 4)
        per_uid.setdefault(uid, []).append((event, first, second))
    want = [evs for evs in per_uid.values()]  # connections in order of their first event
    got = []
    for _parser, events in pop3_runs("pop3/zeek_pop3.pcap"):
        seq = []
        for e in events:
            if isinstance(e, Pop3Command):
                seq.append(("pop3_request", e.verb, e.arg))
            elif isinstance(e, Pop3Reply):
                seq.append(("pop3_reply", "OK" if e.ok else "ERR", e.text))
        if seq:
            got.append(seq)
    # Zeek interleaves requests and replies as they arrive; compare each kind in order.
    for ours, theirs in zip(got, want, strict=True):
        for kind in ("pop3_request", "pop3_reply"):
            assert [x for x in ours if x[0] == kind] == [x for x in theirs if x[0] == kind]


def test_pop3_bug_7709_matches_suricata() -> None:
    capture = "pop3/suricata_pop3-02-bug-7709.pcap"
    (first, failed), (second, events) = [
        (p, evs) for p, evs in pop3_runs(capture) if p.counters["commands"]
    ]
    pass_reply = next(e for e in failed if isinstance(e, Pop3Reply) and e.command)
    assert pass_reply.command.verb == "USER"
    pass_reply = [e for e in failed if isinstance(e, Pop3Reply) and e.command][1]
    assert (pass_reply.command.verb, pass_reply.ok, pass_reply.text) == (
        "PASS",
        False,
        "the password incorrect",
    )
    replies = {e.command.verb: e for e in events if isinstance(e, Pop3Reply) and e.command}
    assert first.user == "test@tt.com" and second.user == "test"
    assert replies["PASS"].ok and replies["QUIT"].ok
    assert (replies["LIST"].text, replies["LIST"].lines) == (
        "5 21639",
        ("1 247", "2 6668", "3 6668", "4 1388", "5 6668"),
    )
    assert (replies["UIDL"].text, replies["UIDL"].lines) == (
        "",
        tuple(f"{i} test.tt.com.cmailserver.{i}" for i in range(1, 6)),
    )
    (msg,) = [e for e in events if isinstance(e, MailMessage)]
    assert msg.subject == "回复: 回复: 测试1下" and msg.command == "RETR" and msg.user == "test"


def test_pop3_top_matches_suricata() -> None:
    capture = "pop3/suricata_pop3.pcap"
    spec = yaml.safe_load(need(capture + ".suricata-verify.test.yaml").read_text())
    checks = [c["filter"] for c in spec["checks"]]
    counts = {
        c["match"]["pop3.request.command"]: c["count"]
        for c in checks
        if "pop3.request.command" in c["match"]
    }
    counts["*"] = next(c["count"] for c in checks if c["match"] == {"event_type": "pop3"})
    ((parser, events),) = pop3_runs(capture)
    replies = [e for e in events if isinstance(e, Pop3Reply)]
    assert len(replies) == counts["*"] == 56
    ok = {}
    for r in replies:
        if r.command and r.ok:
            ok[r.command.verb] = ok.get(r.command.verb, 0) + 1
    for verb in ("PASS", "STAT", "LIST", "RSET", "UIDL", "TOP"):
        assert ok[verb] == counts[verb], verb
    assert parser.user == "moises.nunez@ingenierianumar.com"
    tops = [e for e in events if isinstance(e, MailMessage)]
    assert len(tops) == 49 and all(m.command == "TOP" and m.body == b"" for m in tops)


def test_pop3_stls_upgrades() -> None:
    ((parser, events),) = pop3_runs("pop3/zeek_pop3-starttls.pcap")
    assert parser.upgraded and not parser.gave_up
    assert [e.command.verb for e in events if isinstance(e, Pop3Reply) and e.command] == ["STLS"]


def test_pop3_auth_secret_never_comes_out() -> None:
    secret = "AGRpZ2l0YWxpbnZlc3RpZ2F0b3JAbmV0d29ya3NpbXMuY29tAG5hcGllcjEyMw=="
    rows = read_oracle(need("pop3/zeek_pop3.pcap.expected.tsv"))
    assert secret in [r["pop.request.command"] for r in rows]
    for parser, events in pop3_runs("pop3/zeek_pop3.pcap"):
        text = repr([e.ecs() if isinstance(e, MailMessage) else e for e in events])
        assert secret[:20] not in text and "napier123" not in text
        if parser.auth_mechanism:
            assert parser.auth_mechanism == "PLAIN"
            assert parser.counters["secret_lines"] == 1
