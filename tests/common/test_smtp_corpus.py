"""lc.common.smtp against tshark, Zeek, Arkime and Suricata on the public capture corpus.

Each SMTP connection of a capture is put back together (mailcorpus.sessions) and
fed to an :class:`SmtpSession` in frame order, with the frame number as the
timestamp, so every event says in which frame it completed. The oracles, made by
other tools and never regenerated with lc (../shared/corpus/MANIFEST.md):

* tshark's ``.expected.tsv``: per frame, the commands and parameters, the reply
  codes and lines, and the IMF From/To/Cc/Subject/Message-ID/Date of the message
  completed in that frame. Frames must match both ways. Decoded values are
  checked against the standard library's header registry reading tshark's raw
  value.
* Zeek's smtp.log (helo, mailfrom, rcptto, date, from, to, cc, msg_id,
  in_reply_to, subject, last_reply, user_agent, tls).
* Arkime's expected session documents (smtpHello, src, dst, subject, id,
  contentType, header names, useragent, the smtp:starttls tag).
* Suricata's MD5 of the file attached to the message.

Where lc and an oracle differ on purpose, the exception is written next to the
comparison it affects.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import hashlib
import json

import pytest
from mailcorpus import cells, need, read_oracle, run, sessions, tshark, unescape

from lc.common.mailmsg import MailMessage
from lc.common.smtp import SmtpCommand, SmtpReply, SmtpSession

HEADER_FACTORY = email.policy.default.header_factory

CAPTURES = [
    "smtp/arkime_smtp-starttls.pcap",
    "smtp/arkime_smtp-subject-8859-b.pcap",
    "smtp/suricata_smtp-attachment-md5.pcap",
    "smtp/zeek_smtp-multi-addr.pcap",
    "smtp/zeek_smtp.pcap",
]
PORTS = {25, 587}


def smtp_events(capture: str) -> list[tuple[int, object]]:
    """``(client port, event)`` for every event of every SMTP connection in the capture."""
    out = []
    for sess in sessions(need(capture), PORTS):
        for e in run(SmtpSession(), sess.segments):
            out.append((sess.client[1], e))
    return out


def frame_of(e: object) -> int:
    return e.end_ns if isinstance(e, MailMessage) else e.ts_ns  # type: ignore[attr-defined]


def ours_per_frame(events: list[tuple[int, object]]) -> dict[int, dict[str, list[str]]]:
    out: dict[int, dict[str, list[str]]] = {}
    for _port, e in events:
        cell = out.setdefault(frame_of(e), {})
        if isinstance(e, SmtpCommand):
            if e.verb == ".":
                continue
            # tshark 4.0 takes the first four letters of STARTTLS as the command
            # and the rest as its parameter.
            verb, arg = ("STAR", "TLS") if e.verb == "STARTTLS" else (e.verb, e.arg)
            cell.setdefault("smtp.req.command", []).append(verb)
            if arg:
                cell.setdefault("smtp.req.parameter", []).append(arg)
        elif isinstance(e, SmtpReply):
            cell.setdefault("smtp.response.code", []).append(str(e.code))
            cell.setdefault("smtp.rsp.parameter", []).extend(x for x in e.lines if x)
        elif isinstance(e, MailMessage):
            for name in ("from", "to", "cc", "subject", "message-id", "date"):
                key = "imf." + name.replace("-", "_")
                value = e.fields.get(name)
                if value is not None:
                    cell.setdefault(key, []).append(value)
    return out


@pytest.mark.parametrize("capture", CAPTURES)
def test_smtp_matches_tshark(capture: str) -> None:
    rows = read_oracle(need(capture + ".expected.tsv"))
    events = smtp_events(capture)
    ours = ours_per_frame(events)
    theirs: dict[int, dict[str, list[str]]] = {}
    for row in rows:
        cell = {}
        for key, value in row.items():
            if key.startswith(("smtp.", "imf.")) and value:
                # tshark prints folded header values with their line breaks; the
                # parser unfolds (RFC 5322 2.2.3: the CRLF goes, the blanks stay).
                cell[key] = [unescape(v).replace("\r\n", "") for v in cells(value)]
        if cell:
            theirs[int(row["frame.number"])] = cell
    ours = {frame: cell for frame, cell in ours.items() if cell}
    assert sorted(ours) == sorted(theirs)
    for frame, cell in theirs.items():
        assert ours[frame] == cell, f"frame {frame}"


@pytest.mark.parametrize("capture", CAPTURES)
def test_decoded_headers_match_the_header_registry(capture: str) -> None:
    """Subjects and address lists as the stdlib's other parser reads tshark's raw values."""
    rows = read_oracle(need(capture + ".expected.tsv"))
    messages = [e for _p, e in smtp_events(capture) if isinstance(e, MailMessage)]
    raw_rows = [r for r in rows if r["imf.from"]]
    assert len(messages) == len(raw_rows)
    for msg, row in zip(messages, raw_rows, strict=True):
        subject = unescape(row["imf.subject"]).replace("\r\n", "")
        assert msg.subject == str(HEADER_FACTORY("subject", subject))
        for attr, key in (("from_", "imf.from"), ("to", "imf.to"), ("cc", "imf.cc")):
            raw = unescape(row[key]).replace("\r\n", "")
            want = HEADER_FACTORY(key[4:], raw).addresses if raw else ()
            got = getattr(msg, attr)
            assert [a.addr for a in got] == [a.addr_spec for a in want]
            for ours, theirs in zip(got, want, strict=True):
                # The registry drops the obsolete "addr (Name)" comment; getaddresses
                # and mail readers keep it as the name.
                if theirs.display_name:
                    assert ours.name == theirs.display_name


def zeek_log(path: str) -> list[dict[str, str]]:
    lines = need(path).read_text().splitlines()
    names = next(x for x in lines if x.startswith("#fields")).split("\t")[1:]
    return [dict(zip(names, x.split("\t"), strict=True)) for x in lines if not x.startswith("#")]


def zeek_set(value: str) -> set[str]:
    return set() if value in ("-", "(empty)") else set(value.split(","))


def test_smtp_matches_zeek_smtp_log() -> None:
    records = zeek_log("smtp/zeek_smtp.pcap.zeek-smtp.log")
    by_port: dict[int, list] = {}
    for port, e in smtp_events("smtp/zeek_smtp.pcap"):
        by_port.setdefault(port, []).append(e)
    assert len(records) == 2
    for rec in records:
        events = by_port[int(rec["id.orig_p"])]
        (msg,) = [e for e in events if isinstance(e, MailMessage)]
        replies = [e for e in events if isinstance(e, SmtpReply) and e.command]
        (end,) = [e for e in replies if e.command.verb == "."]
        assert msg.helo == rec["helo"]
        assert msg.mail_from == rec["mailfrom"]
        assert set(msg.rcpt_to) == zeek_set(rec["rcptto"])
        assert msg.date == rec["date"]
        assert msg.fields["from"] == rec["from"]
        # Zeek splits To and Cc on commas and keeps each item as written.
        assert {a.addr for a in msg.to} == {a.strip("<>") for a in zeek_set(rec["to"])}
        assert {a.addr for a in msg.cc} == zeek_set(rec["cc"])
        assert "<" + msg.message_id + ">" == rec["msg_id"]
        assert msg.in_reply_to == (rec["in_reply_to"] if rec["in_reply_to"] != "-" else "")
        assert msg.subject == rec["subject"]
        assert f"{end.code} {end.text}" == rec["last_reply"]
        assert msg.user_agent == rec["user_agent"]
        assert rec["tls"] == "F"


def arkime_email(capture: str) -> tuple[dict, list[str]]:
    doc = json.loads(need(capture + ".arkime.json").read_text())
    (body,) = [s["body"] for s in doc["sessions3"] if "smtp" in s["body"].get("protocol", [])]
    return body.get("email", {}), body.get("tags", [])


def test_smtp_subject_8859_matches_arkime() -> None:
    capture = "smtp/arkime_smtp-subject-8859-b.pcap"
    doc, _tags = arkime_email(capture)
    (msg,) = [e for _p, e in smtp_events(capture) if isinstance(e, MailMessage)]
    assert doc["subject"] == [msg.subject] == ["test å é î ø ü"]
    assert doc["smtpHello"] == [msg.helo]
    assert doc["id"] == [msg.message_id]
    # Arkime turns a folded line's break and indent into one space; lc unfolds by
    # removing the line break only (RFC 5322 2.2.3).
    assert doc["contentType"] == [" ".join(msg.fields["content-type"].split())]
    assert doc["useragent"] == [msg.user_agent]
    assert doc["mimeVersion"] == [msg.fields["mime-version"]]
    assert doc["header"] == sorted(msg.fields)
    # Arkime's src/dst are the envelope and header addresses together, lower-cased.
    assert set(doc["src"]) == {msg.mail_from.lower()} | {a.addr.lower() for a in msg.from_}
    assert set(doc["dst"]) == {r.lower() for r in msg.rcpt_to} | {a.addr.lower() for a in msg.to}


def test_smtp_starttls_matches_arkime() -> None:
    capture = "smtp/arkime_smtp-starttls.pcap"
    doc, tags = arkime_email(capture)
    (sess,) = sessions(need(capture), PORTS)
    parser = SmtpSession()
    run(parser, sess.segments)
    assert doc["smtpHello"] == [parser.helo]
    assert "smtp:starttls" in tags
    assert parser.upgraded
    assert parser.counters["ignored_bytes"] == sum(
        len(s.data) for s in sess.segments if s.frame > 10
    )


def test_attachment_bytes_match_suricata_md5() -> None:
    capture = "smtp/suricata_smtp-attachment-md5.pcap"
    want = need(capture + ".suricata-verify.target.md5").read_text().split()[0]
    (msg,) = [e for _p, e in smtp_events(capture) if isinstance(e, MailMessage)]
    assert msg.attachments == ("EICAR-Test-File",)
    # The stdlib parser (not lc's MIME walk) decodes the attachment from the bytes
    # lc kept: they must be the message as sent, unstuffed.
    parsed = email.message_from_bytes(msg.header + b"\r\n" + msg.body, policy=email.policy.default)
    (part,) = list(parsed.iter_attachments())  # type: ignore[attr-defined]
    assert hashlib.md5(part.get_payload(decode=True)).hexdigest() == want


def test_auth_secrets_never_come_out() -> None:
    (sess, _other) = sessions(need("smtp/zeek_smtp.pcap"), PORTS)
    secrets = [s.data.strip() for s in sess.segments if s.frame in (12, 14)]
    assert secrets == [b"Z3VycGFydGFwQHBhdHJpb3RzLmlu", b"cHVuamFiQDEyMw=="]
    parser = SmtpSession()
    events = run(parser, sess.segments)
    text = repr([e.ecs() if isinstance(e, MailMessage) else e for e in events])
    for secret in (*secrets, b"punjab@123"):
        assert secret.decode() not in text
    assert parser.counters["secret_lines"] == 2
    assert parser.auth_mechanism == "LOGIN"


MORE_FIELDS = {
    "imf.content.type": "content-type",
    "imf.ext.mailer": "x-mailer",
    "imf.user_agent": "user-agent",
    "imf.in_reply_to": "in-reply-to",
    "imf.reply_to": "reply-to",
    "imf.date": "date",
}


@pytest.mark.parametrize("capture", CAPTURES)
def test_more_fields_against_tshark_run_here(capture: str) -> None:
    """Header fields and MIME part dispositions the stored oracle lacks, from tshark."""
    names = ["frame.number", *MORE_FIELDS, "mime_multipart.header.content-disposition"]
    rows = tshark(capture, "imf", names)
    messages = {e.end_ns: e for _p, e in smtp_events(capture) if isinstance(e, MailMessage)}
    assert sorted(messages) == sorted(int(r["frame.number"]) for r in rows)
    for row in rows:
        msg = messages[int(row["frame.number"])]
        for key, name in MORE_FIELDS.items():
            assert msg.fields.get(name, "") == unescape(row[key]).replace("\r\n", ""), key
        # File names, read by the stdlib from the dispositions tshark found.
        want = []
        for disposition in cells(row["mime_multipart.header.content-disposition"]):
            m = email.message.Message()
            m["Content-Disposition"] = unescape(disposition).replace("\r\n", "")
            if m.get_filename():
                want.append(m.get_filename())
        assert list(msg.attachments) == want
    if capture.endswith("md5.pcap") or capture.endswith("zeek_smtp.pcap"):
        assert any(m.attachments for m in messages.values())
