"""lc.common.imap against tshark and Arkime on the public capture corpus.

Each IMAP connection is put back together (mailcorpus.sessions) and fed to an
:class:`ImapSession` in frame order, with the frame number as the timestamp.
Oracles (made by other tools, never regenerated with lc):

* tshark's ``.expected.tsv``: per frame, the request tags, commands and lines,
  the tagged responses (tag, status, first word), and the IMF From/To/Subject/
  Message-ID of every message literal (tshark dissects each FETCH literal as a
  message, in the frame that completes it).
* Arkime's expected session document: the From addresses, To/Cc addresses,
  subjects and the folder of the messages fetched. Arkime reads only the first
  line of a folded header, so its values are compared with what the first line
  of each field holds (and lc's full values must contain them).
"""

from __future__ import annotations

import email.policy
import json

import pytest
from mailcorpus import cells, need, read_oracle, run, sessions, tshark, unescape

from lc.common.imap import ImapCommand, ImapResponse, ImapSession
from lc.common.mailmsg import MailMessage, parse_addresses

HEADER_FACTORY = email.policy.default.header_factory
CAPTURES = ["imap/arkime_imap.pcap", "imap/zeek_imap-starttls.pcap"]


def imap_runs(capture: str) -> list[tuple[ImapSession, list]]:
    out = []
    for sess in sessions(need(capture), {143}):
        parser = ImapSession()
        out.append((parser, run(parser, sess.segments)))
    return out


@pytest.mark.parametrize("capture", CAPTURES)
def test_imap_matches_tshark(capture: str) -> None:
    rows = read_oracle(need(capture + ".expected.tsv"))
    events = [e for _p, evs in imap_runs(capture) for e in evs]
    ours: dict[int, dict[str, list[str]]] = {}
    for e in events:
        if isinstance(e, ImapCommand):
            cell = ours.setdefault(e.ts_ns, {})
            cell.setdefault("imap.request_tag", []).append(e.tag)
            cell.setdefault("imap.request.command", []).append(e.name)
        elif isinstance(e, ImapResponse):
            cell = ours.setdefault(e.ts_ns, {})
            cell.setdefault("imap.response_tag", []).append(e.tag)
            cell.setdefault("imap.response.status", []).append(e.status)
            cell.setdefault("imap.response.command", []).append(e.text.split(" ", 1)[0])
        elif isinstance(e, MailMessage):
            cell = ours.setdefault(e.end_ns, {})
            for name in ("from", "to", "subject", "message-id"):
                cell.setdefault("imf." + name.replace("-", "_"), []).append(e.fields[name])
    theirs: dict[int, dict[str, list[str]]] = {}
    lines: dict[int, str] = {}
    for row in rows:
        frame = int(row["frame.number"])
        cell = {}
        for key in ("imap.request_tag", "imap.request.command"):
            if row[key]:
                cell[key] = cells(row[key])
        # tshark reports the line after each literal as a response tagged ")";
        # only the real tagged responses are compared.
        tags = cells(row["imap.response_tag"])
        keep = [i for i, t in enumerate(tags) if t != ")"]
        if keep:
            cell["imap.response_tag"] = [tags[i] for i in keep]
            cell["imap.response.status"] = cells(row["imap.response.status"])
            cell["imap.response.command"] = cells(row["imap.response.command"])
        for key in ("imf.from", "imf.to", "imf.subject", "imf.message_id"):
            if row[key]:
                cell[key] = [unescape(v).replace("\r\n", "") for v in cells(row[key])]
        if cell:
            theirs[frame] = cell
        if row["imap.request"]:
            lines[frame] = row["imap.request"]
    assert sorted(ours) == sorted(theirs)
    for frame, cell in theirs.items():
        assert ours[frame] == cell, f"frame {frame}"
    # The request lines: as tshark shows them, but LOGIN keeps its user only.
    for e in events:
        if isinstance(e, ImapCommand):
            line = lines[e.ts_ns]
            if e.name == "LOGIN":
                assert line.startswith(f'{e.tag} LOGIN "{e.args}" ')
                assert "XXXXXX" in line and "XXXXXX" not in repr(events)
            else:
                assert f"{e.tag} {e.name} {e.args}".strip() == line


def test_imap_messages_decode_like_the_header_registry() -> None:
    for _p, events in imap_runs("imap/arkime_imap.pcap"):
        for m in events:
            if isinstance(m, MailMessage):
                # lc strips the blanks around a subject; the registry keeps a trailing one.
                want_subject = str(HEADER_FACTORY("subject", m.fields["subject"])).strip()
                assert m.subject == want_subject
                want = HEADER_FACTORY("to", m.fields["to"]).addresses
                assert [a.addr for a in m.to] == [a.addr_spec for a in want]


def first_line(header: bytes, name: bytes) -> str:
    for line in header.split(b"\r\n"):
        if line.lower().startswith(name.lower() + b":"):
            return line[len(name) + 1 :].lstrip().decode()
    return ""


def test_imap_matches_arkime() -> None:
    doc = json.loads(need("imap/arkime_imap.pcap.arkime.json").read_text())
    (body,) = [s["body"] for s in doc["sessions3"] if "imap" in s["body"].get("protocol", [])]
    arkime = body["email"]
    ((parser, events),) = [r for r in imap_runs("imap/arkime_imap.pcap") if r[1]]
    msgs = [e for e in events if isinstance(e, MailMessage)]
    assert len(msgs) == 26  # 13 + 12 header fetches and one RFC822
    assert arkime["folder"] == sorted({m.mailbox for m in msgs}) == ["INBOX"]
    assert parser.mailbox == ""  # the session ends with CLOSE
    assert sorted(arkime["src"]) == sorted({a.addr.lower() for m in msgs for a in m.from_})
    first_dst = {
        a.addr.lower()
        for m in msgs
        for field in (b"To", b"Cc")
        for a in parse_addresses(first_line(m.header, field))
        if "@" in a.addr  # a name cut by the fold is not an address
    }
    assert sorted(arkime["dst"]) == sorted(first_dst)
    assert first_dst <= {a.addr.lower() for m in msgs for a in (*m.to, *m.cc)}
    assert sorted(arkime["subject"]) == sorted({first_line(m.header, b"Subject") for m in msgs})
    for m in msgs:
        assert m.subject.startswith(first_line(m.header, b"Subject").rstrip())


def test_imap_starttls_upgrades() -> None:
    ((parser, events),) = imap_runs("imap/zeek_imap-starttls.pcap")
    assert parser.upgraded and not parser.gave_up
    assert [(e.command.name, e.status) for e in events if isinstance(e, ImapResponse)] == [
        ("CAPABILITY", "OK"),
        ("STARTTLS", "OK"),
    ]


MORE_FIELDS = {
    "imf.cc": "cc",
    "imf.date": "date",
    "imf.content.type": "content-type",
    "imf.in_reply_to": "in-reply-to",
    "imf.reply_to": "reply-to",
}


def test_more_fields_against_tshark_run_here() -> None:
    """Fields the stored oracle lacks, from tshark, for every message literal."""
    capture = "imap/arkime_imap.pcap"
    rows = tshark(capture, "imf", ["frame.number", *MORE_FIELDS])
    per_frame: dict[int, list[MailMessage]] = {}
    for _p, events in imap_runs(capture):
        for e in events:
            if isinstance(e, MailMessage):
                per_frame.setdefault(e.end_ns, []).append(e)
    assert sorted(per_frame) == sorted(int(r["frame.number"]) for r in rows)
    for row in rows:
        msgs = per_frame[int(row["frame.number"])]
        for key, name in MORE_FIELDS.items():
            # One cell per frame: the values of the messages that have the field.
            want = [unescape(v).replace("\r\n", "") for v in cells(row[key])]
            assert [m.fields[name] for m in msgs if name in m.fields] == want, key
