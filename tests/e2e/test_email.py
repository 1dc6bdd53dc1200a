"""`lc hunt email` live on loopback with real mail servers and clients.

An SMTP server (aiosmtpd) driven by smtplib, an IMAP and POP3 server (Debian's dovecot,
with a test user and mailbox made here) driven by imaplib and poplib. One hunter runs
with pushed filters of every email type and one local flag; a tcpdump reference capture
and tshark say which TCP connections exist (``tcp.stream``) and what they carried. Each
filter must select exactly its sessions, with every payload packet of them, and the
event log must carry the envelope and the decoded headers of their messages.
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import os
import poplib
import shutil
import smtplib
import subprocess
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from lc.common.pcapfile import open_capture
from tests.conftest import LC, lc_env, need, run_lc, start_processor, tls_args
from tests.voip_tools import free_port, stop_process, tcpdump_capture

pytestmark = pytest.mark.e2e

USER, PASSWORD = "alice", "secret1"
# The message in alice's mailbox: an RFC 2047 subject, a keyword in the body.
STORED = (
    b"From: Bob <bob@example.org>\r\nTo: alice@example.net\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= quarterly\r\nMessage-ID: <m1@example.org>\r\n"
    b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nThe password is swordfish.\r\n"
)


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def set_filter(p, pki, type_: str, pattern: str, fid: str) -> None:
    r = run_lc("set", "filter", "--id", fid, "--type", type_, "--pattern", pattern,
               "--processor", p.addr, *tls_args(pki, "admin"))  # fmt: skip
    assert r.returncode == 0, r.stderr


def show_hunter(p, pki, hid: str) -> dict | None:
    r = run_lc("show", "hunter", "--id", hid, "--processor", p.addr, *tls_args(pki, "admin"))
    return json.loads(r.stdout) if r.returncode == 0 else None


@contextlib.contextmanager
def dovecot(tmp: Path, imap_port: int, pop3_port: int):
    """dovecot in the foreground on 127.0.0.1, user alice with one message."""
    need("dovecot")
    root = tmp / "dovecot"
    maildir = root / "home" / USER / "Maildir"
    for d in ("cur", "new", "tmp"):
        (maildir / d).mkdir(parents=True)
    (root / "run").mkdir()
    (root / "state").mkdir()
    (maildir / "new" / "1.lc-test").write_bytes(STORED)
    (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    # dovecot's auth process (user dovecot) reads it, whatever umask this process has.
    (root / "passwd").chmod(0o644)
    conf = root / "dovecot.conf"
    warm_port = free_port()  # a port the hunter does not follow: for the warm-up login
    conf.write_text(f"""base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home={root}/home/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imap_warmup {{
    address = 127.0.0.1
    port = {warm_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
""")
    for path in [root, *root.rglob("*")]:
        if "home" in path.parts:
            os.chown(path, 65534, 65534)
    # The mail processes run as nobody: every directory above the mailbox must be open.
    for parent in [root, *root.parents]:
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o111)
    proc = subprocess.Popen(
        [shutil.which("dovecot") or "dovecot", "-F", "-c", str(conf)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for(lambda: _accepts(imap_port) and _accepts(pop3_port), 15, "dovecot listening")
        # Its auth service may still be starting (a loaded machine answers the first logins
        # "Temporary authentication failure"): log in once where the hunter is not looking.
        wait_for(lambda: _logs_in(warm_port), 30, "dovecot authenticating")
        yield proc
    finally:
        stop_process(proc)


def _logs_in(port: int) -> bool:
    try:
        m = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    except OSError:
        return False
    try:
        m.login(USER, PASSWORD)
        m.logout()
        return True
    except (imaplib.IMAP4.error, OSError):  # NO [UNAVAILABLE], or no answer in time
        with contextlib.suppress(OSError):
            m.shutdown()
        return False


def _accepts(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def smtp_server(port: int):
    """aiosmtpd on 127.0.0.1 (its own thread), keeping what it received."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Sink

    class Keep(Sink):
        def __init__(self) -> None:
            self.got: list = []

        async def handle_DATA(self, server, session, envelope):
            self.got.append((envelope.mail_from, list(envelope.rcpt_tos)))
            return "250 OK"

    handler = Keep()
    ctl = Controller(handler, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        yield handler
    finally:
        ctl.stop()


def send(port: int, mail_from: str, rcpts: list[str], subject: str, body: str) -> int:
    """One SMTP session; the client's port."""
    msg = EmailMessage()
    msg["From"] = f"Sender <{mail_from}>"
    msg["To"] = ", ".join(rcpts)
    msg["Subject"] = subject  # non-ASCII: RFC 2047 encoded by the email package
    msg["Message-ID"] = f"<{mail_from.split('@')[0]}-{port}@lc.test>"
    msg.set_content(body)
    with smtplib.SMTP("127.0.0.1", port) as s:
        s.ehlo("client.lc.test")
        sport = s.sock.getsockname()[1]
        s.send_message(msg, from_addr=mail_from, to_addrs=rcpts)
    return sport


def send_pipelined(port: int) -> int:
    """One SMTP session written as a PIPELINING client does: each transaction's MAIL,
    RCPTs and DATA in one segment; a reset transaction first, then two messages (one
    with a dot-stuffed line); the client's port."""
    import socket

    c = socket.create_connection(("127.0.0.1", port))
    f = c.makefile("rb")

    def replies(n: int) -> list[bytes]:
        out = []
        while len(out) < n:
            line = f.readline()
            if line[3:4] != b"-":
                out.append(line[:3])
        return out

    try:
        assert replies(1) == [b"220"]
        c.sendall(b"EHLO pipe.lc.test\r\n")
        assert replies(1) == [b"250"]
        c.sendall(b"MAIL FROM:<pat@example.org>\r\nRCPT TO:<q1@example.com>\r\nRSET\r\n")
        assert replies(3) == [b"250"] * 3
        c.sendall(b"MAIL FROM:<pat@example.org>\r\nRCPT TO:<q2@example.com>\r\n"
                  b"RCPT TO:<quinn@example.com>\r\nDATA\r\n")  # fmt: skip
        assert replies(4) == [b"250", b"250", b"250", b"354"]
        c.sendall(b"From: pat@example.org\r\nTo: q2@example.com\r\nSubject: one\r\n\r\n"
                  b"..a dotted line\r\n.\r\n")  # fmt: skip
        assert replies(1) == [b"250"]
        c.sendall(b"MAIL FROM:<pat@example.org>\r\nRCPT TO:<q3@example.com>\r\nDATA\r\n")
        assert replies(3) == [b"250", b"250", b"354"]
        c.sendall(b"From: pat@example.org\r\nSubject: two\r\n\r\nbye\r\n.\r\nQUIT\r\n")
        assert replies(2) == [b"250", b"221"]
        return c.getsockname()[1]
    finally:
        f.close()
        c.close()


def tshark_streams(path: Path, port: int) -> dict[int, dict]:
    """tshark's view of the reference: per client port, its tcp.stream and its frames."""
    r = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-Y", f"tcp.port == {port}", "-T", "fields",
         "-e", "frame.number", "-e", "tcp.stream", "-e", "tcp.srcport", "-e", "tcp.dstport",
         "-e", "tcp.len"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    frames = [bytes(d) for _, _, d, _ in open_capture(path).records()]
    out: dict[int, dict] = {}
    for line in r.stdout.splitlines():
        num, stream, sp, dp, _ = line.split("\t")
        client = int(sp) if int(dp) == port else int(dp)
        st = out.setdefault(client, {"stream": int(stream), "payload": []})
        st["payload"].append(frames[int(num) - 1])  # every frame: SYN to the last ACK
    return out


def test_live_mail_sessions_each_filter_type_selects_its_sessions(tmp_path, pki):
    if os.geteuid() != 0:
        pytest.skip("live capture on lo needs root")
    need("tcpdump")
    need("tshark")
    pytest.importorskip("aiosmtpd")
    smtp_port, imap_port, pop3_port = free_port(), free_port(), free_port()
    p = start_processor(tmp_path, tls_args(pki, "processor"))
    filters = [
        ("email_address", "carol@example.com", "addr"),  # one RCPT of several
        ("email_subject", "*Grüße*", "subj"),  # decoded subject (IMAP FETCH)
        ("keyword", "moonbase", "kw"),  # SMTP body
        ("email_command", "RETR", "cmd"),  # POP3
        ("email_address", "quinn@example.com", "pipe"),  # a pipelined RCPT
        ("email_mailbox", "Archive", "mbox"),  # IMAP SELECT
    ]
    for t, pat, fid in filters:
        set_filter(p, pki, t, pat, fid)
    ref = tmp_path / "ref.pcap"
    h = subprocess.Popen(
        [*LC, "hunt", "email", "--processor", p.addr, *tls_args(pki, "hunter-live"),
         "-i", "lo", "--smtp-port", str(smtp_port), "--imap-port", str(imap_port),
         "--pop3-port", str(pop3_port), "--sender", "*@local-flag.test",
         "--heartbeat-interval", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=lc_env(),
    )  # fmt: skip
    sessions: dict[str, int] = {}
    try:
        wait_for(
            lambda: (
                (i := show_hunter(p, pki, "live")) is not None
                and i["state"] == "connected"
                and i.get("last_heartbeat_ns", 0) > 0
            ),
            30,
            "the hunter capturing",
        )
        info = show_hunter(p, pki, "live")
        assert info is not None
        assert [(f["id"], f["type"], f["pattern"]) for f in info["local_filters"]] == [
            ("local:sender:1", "email_address", "*@local-flag.test")
        ]
        bpf = f"tcp and (port {smtp_port} or port {imap_port} or port {pop3_port})"
        with (
            tcpdump_capture(ref, bpf),
            smtp_server(smtp_port) as server,
            dovecot(tmp_path, imap_port, pop3_port),
        ):
            sessions["smtp_addr"] = send(
                smtp_port, "dave@example.org",
                ["bob@example.com", "carol@example.com", "erin@example.com"],
                "Quarterly €uro report", "Figures attached.",
            )  # fmt: skip
            sessions["smtp_none"] = send(
                smtp_port, "dave@example.org", ["bob@example.com"], "Lunch", "Noon?"
            )
            sessions["smtp_kw"] = send(
                smtp_port, "frank@example.org", ["bob@example.com"], "Plans",
                "Meet me at the MoonBase at nine.",
            )  # fmt: skip
            sessions["smtp_local"] = send(
                smtp_port, "gina@local-flag.test", ["bob@example.com"], "Hi", "Hello."
            )
            sessions["smtp_pipelined"] = send_pipelined(smtp_port)
            m = imaplib.IMAP4("127.0.0.1", imap_port)
            sessions["imap_mbox"] = m.sock.getsockname()[1]
            m.login(USER, PASSWORD)
            assert m.create("Archive")[0] == "OK"
            m.append("Archive", None, None, STORED)
            m.select("Archive")
            m.logout()
            m = imaplib.IMAP4("127.0.0.1", imap_port)
            sessions["imap_subj"] = m.sock.getsockname()[1]
            m.login(USER, PASSWORD)
            m.select("INBOX")
            m.fetch("1", "(RFC822)")
            m.logout()
            m = imaplib.IMAP4("127.0.0.1", imap_port)
            sessions["imap_none"] = m.sock.getsockname()[1]
            m.login(USER, PASSWORD)
            m.select("INBOX")
            m.fetch("1", "(FLAGS)")
            m.logout()
            pop = poplib.POP3("127.0.0.1", pop3_port)
            sessions["pop_cmd"] = pop.sock.getsockname()[1]
            pop.user(USER)
            pop.pass_(PASSWORD)
            pop.retr(1)
            pop.quit()
            pop = poplib.POP3("127.0.0.1", pop3_port)
            sessions["pop_none"] = pop.sock.getsockname()[1]
            pop.user(USER)
            pop.pass_(PASSWORD)
            pop.stat()
            pop.quit()
            assert len(server.got) == 6
            time.sleep(1)
        time.sleep(1)
    finally:
        rc = stop_process(h, timeout=40)
        _, herr = h.communicate()
        p.stop()
    assert rc == 0, herr

    wanted = {"smtp_addr", "smtp_kw", "smtp_local", "imap_subj", "pop_cmd", "smtp_pipelined",
              "imap_mbox"}  # fmt: skip
    oracle: dict[str, dict] = {}
    for port in (smtp_port, imap_port, pop3_port):
        by_client = tshark_streams(ref, port)
        for name, client in sessions.items():
            if client in by_client:
                oracle[name] = by_client[client]
    assert set(oracle) == set(sessions)
    got = [bytes(d) for _, _, d, _ in open_capture(p.data_dir / "capture.pcap").records()]
    got_set = set(got)
    for name in sessions:
        payload = oracle[name]["payload"]
        assert payload, name
        if name in wanted:
            # Every packet of the connection, whatever filter decided.
            missing = [i for i, b in enumerate(payload) if b not in got_set]
            assert not missing, (name, missing, len(payload))
        else:
            assert not got_set & set(payload), name

    (log,) = (p.data_dir / "events").glob("*.jsonl")
    events = [json.loads(line) for line in log.read_text().splitlines()]
    by_port = {}
    for ev in events:
        assert ev["event"]["dataset"] == "lc.email" and ev["lc"]["captured"] is True
        by_port.setdefault(ev["source"]["port"], []).append(ev)
    assert set(by_port) == {sessions[n] for n in wanted}
    (a,) = by_port[sessions["smtp_addr"]]
    assert a["lc"]["filter_ids"] == ["addr"]
    assert a["email"]["subject"] == "Quarterly €uro report"
    assert a["email"]["from"]["address"] == ["dave@example.org"]
    assert a["email"]["to"]["address"] == [
        "bob@example.com", "carol@example.com", "erin@example.com"
    ]  # fmt: skip
    assert a["email"]["direction"] == "outbound"
    assert a["lc"]["smtp"]["mail_from"] == "dave@example.org"
    assert a["lc"]["smtp"]["rcpt_to"] == ["bob@example.com", "carol@example.com",
                                          "erin@example.com"]  # fmt: skip
    assert a["lc"]["smtp"]["helo"] == "client.lc.test"
    assert a["lc"]["email"]["command"] == "DATA"
    (k,) = by_port[sessions["smtp_kw"]]
    assert k["lc"]["filter_ids"] == ["kw"] and "body" not in k["lc"]["email"]
    (loc,) = by_port[sessions["smtp_local"]]
    assert loc["lc"]["filter_ids"] == ["local:sender:1"]
    (i,) = by_port[sessions["imap_subj"]]
    assert i["lc"]["filter_ids"] == ["subj"] and i["email"]["subject"] == "Grüße quarterly"
    assert i["lc"]["imap"]["mailbox"] == "INBOX" and i["email"]["direction"] == "inbound"
    assert i["email"]["message_id"] == "m1@example.org"
    assert i["email"]["origination_timestamp"] == "2024-01-01T10:00:00.000Z"
    (r,) = by_port[sessions["pop_cmd"]]
    assert r["lc"]["filter_ids"] == ["cmd"] and r["lc"]["email"]["command"] == "RETR"
    assert r["lc"]["email"]["user"] == USER and PASSWORD not in json.dumps(events)
    one, two = by_port[sessions["smtp_pipelined"]]  # the reset transaction made none
    assert one["lc"]["filter_ids"] == two["lc"]["filter_ids"] == ["pipe"]
    assert one["lc"]["smtp"] == {"helo": "pipe.lc.test", "mail_from": "pat@example.org",
                                 "rcpt_to": ["q2@example.com", "quinn@example.com"]}  # fmt: skip
    assert two["lc"]["smtp"]["rcpt_to"] == ["q3@example.com"]
    assert (one["email"]["subject"], two["email"]["subject"]) == ("one", "two")
    (ap,) = by_port[sessions["imap_mbox"]]  # the APPEND to Archive
    assert ap["lc"]["filter_ids"] == ["mbox"] and ap["lc"]["imap"]["mailbox"] == "Archive"
    assert ap["lc"]["email"]["command"] == "APPEND" and ap["email"]["direction"] == "outbound"
    assert ap["email"]["subject"] == "Grüße quarterly"
