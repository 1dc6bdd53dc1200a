"""The event log: one JSON object per line for every session event hunters send.

Hunters attach session events to their batches (a VoIP call that ended; later a DNS
transaction, a TLS handshake, an HTTP transaction, an email message). This sink
writes each as one line of JSON (orjson) with Elastic Common Schema field names, the
ones Packetbeat and Filebeat users already ingest:

==============================  ==================================================
field                           value
==============================  ==================================================
``@timestamp``                  the session's start (capture time, UTC, ns)
``event.kind``                  ``event``
``event.category``/``type``     ``["network"]`` / ``["connection", "end"]``
``event.module``/``dataset``    ``lc`` / ``lc.<dataset>`` (``lc.sip``)
``event.start``/``end``         first and last packet of the session
``event.duration``              end - start, in nanoseconds
``event.id``                    ``<hunter>:<epoch>:<sequence>:<n>``: the batch that
                                carried it and its place in it; stable across
                                resends, so a consumer can deduplicate
``observer.name``               the hunter id
``source.ip``/``port``          the session's initiator (client)
``destination.ip``/``port``     its responder (server)
``network.transport``           ``udp``, ``tcp``, ``sctp`` (else the IP protocol
                                number as text)
``network.type``                ``ipv4`` or ``ipv6``
``network.protocol``            the dataset (``sip``); for email the protocol (``smtp``)
``network.community_id``        Community ID v1 of the 5-tuple (seed 0), as Zeek,
                                Suricata and Packetbeat print it
``lc.session_id``               the session's id
``lc.filter_ids``               the filters the session matched (may be empty)
``lc.captured``                 its packets were forwarded (false: metadata only)
==============================  ==================================================

A VoIP call (dataset ``sip``) adds Packetbeat's SIP names where they exist and the
rest under ``lc.call``: ``sip.call_id``, ``sip.method`` (the initial one),
``sip.code`` (the final status of the initial request, if any),
``sip.from.uri.username``/``original``, ``sip.to.uri.username``/``original``;
``lc.call.state`` (answered, ended, failed, cancelled, ...), ``lc.call.packets`` and
``lc.call.bytes`` per protocol (``sip``, ``rtp``, ``rtcp``), ``lc.call.codecs``,
``lc.call.hunters`` and, when the processor writes per-call files,
``lc.call.pcap_path`` (from the call index).

Every string that came from a hunter goes through :func:`lc.common.text.wire_text`
(valid UTF-8, bounded). Files: ``DIR/events-YYYYMMDD-NNNNNN.jsonl`` (UTC date of
writing, a counter per day), mode 0640, never overwritten; a new file starts on a new
day and once the current one has passed ``rotate_size`` (checked after each committed
group, so a file ends on a group boundary).

Exactly once: the sink writes a batch's lines with one ``write`` (cut back if it
fails), its file and committed size go into the ledger's transaction (``sink_state``),
and on start the file is cut back to that size: after a crash the log holds exactly
the events of acknowledged batches, once each (a batch is deduplicated by the ledger
before any sink sees it).
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from lc.common.communityid import community_id
from lc.common.text import wire_text
from lc.common.tlsnames import cipher_name, version_fields
from lc.processor.ledger import SINK_STATE_SQL, Ledger
from lc.processor.sinks import Received, Statements
from lc.proto import lc_pb2

__all__ = ["DEFAULT_ROTATE_SIZE", "EventLog", "event_document"]

log = logging.getLogger(__name__)

DEFAULT_ROTATE_SIZE = 100 * 1024 * 1024
_NS = 1_000_000_000
_TRANSPORTS = {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 58: "ipv6-icmp"}
_SINK = "events"


def iso_ns(ts_ns: int) -> str:
    """``2026-11-22T14:30:00.123456789Z`` (UTC, nanoseconds)."""
    sec, ns = divmod(ts_ns, _NS)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{ns:09d}Z"


def _ip(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw))


def event_document(
    ev: lc_pb2.Event,
    hunter_id: str,
    event_id: str,
    call_info: Callable[[str], tuple[str, list[str]] | None] | None = None,
) -> dict[str, Any]:
    """The JSON object (ECS names, see the module docstring) of one event.

    ``call_info(call_id)`` gives (pcap path, hunters) from the call index, if any.
    The event must have passed :func:`lc.common.wire.event_problem`.
    """
    dataset = wire_text(ev.dataset, 64)
    start, end = ev.start_ns, max(ev.end_ns, ev.start_ns)
    hunter = wire_text(hunter_id, 256)
    doc: dict[str, Any] = {
        "@timestamp": iso_ns(start),
        "event": {
            "kind": "event",
            "category": ["network"],
            "type": ["connection", "end"],
            "module": "lc",
            "dataset": f"lc.{dataset}",
            "id": wire_text(event_id, 512),
            "start": iso_ns(start),
            "end": iso_ns(end),
            "duration": end - start,
        },
        "observer": {"name": hunter},
    }
    network: dict[str, Any] = {"protocol": dataset}
    if ev.HasField("flow") and ev.flow.src_ip and ev.flow.dst_ip:
        f = ev.flow
        doc["source"] = {"ip": _ip(f.src_ip), "port": f.src_port}
        doc["destination"] = {"ip": _ip(f.dst_ip), "port": f.dst_port}
        network["transport"] = _TRANSPORTS.get(f.ip_proto, str(f.ip_proto))
        network["type"] = "ipv4" if len(f.src_ip) == 4 else "ipv6"
        network["community_id"] = community_id(
            f.src_ip, f.dst_ip, f.ip_proto, f.src_port, f.dst_port
        )
    doc["network"] = network
    lc: dict[str, Any] = {
        "session_id": wire_text(ev.session_id),
        "filter_ids": [wire_text(x, 256) for x in ev.filter_ids],
        "captured": ev.captured,
    }
    render = DETAIL_RENDERERS.get(ev.WhichOneof("detail") or "")
    if render is not None:
        render(ev, doc, lc, hunter, call_info)
    doc["lc"] = lc
    return doc


def _call_fields(
    ev: lc_pb2.Event,
    doc: dict[str, Any],
    lc: dict[str, Any],
    hunter: str,
    call_info: Callable[[str], tuple[str, list[str]] | None] | None,
) -> None:
    """A VoIP call's fields: Packetbeat's ``sip.*`` names, the rest under ``lc.call``."""
    c = ev.call
    call_id = wire_text(c.call_id)
    sip: dict[str, Any] = {
        "call_id": call_id,
        "method": wire_text(c.method, 64),
        "from": {"uri": {"username": wire_text(c.from_user), "original": wire_text(c.from_uri)}},
        "to": {"uri": {"username": wire_text(c.to_user), "original": wire_text(c.to_uri)}},
    }
    if c.last_status:
        sip["code"] = c.last_status
    doc["sip"] = sip
    call: dict[str, Any] = {
        "state": wire_text(c.state, 64),
        "packets": {"sip": c.sip_packets, "rtp": c.rtp_packets, "rtcp": c.rtcp_packets},
        "bytes": {"sip": c.sip_bytes, "rtp": c.rtp_bytes, "rtcp": c.rtcp_bytes},
        "codecs": [wire_text(x, 64) for x in c.codecs],
        "hunters": [hunter],
    }
    info = call_info(c.call_id) if call_info is not None else None
    if info is not None:
        path, hunters = info
        if path:
            call["pcap_path"] = wire_text(path, 4096)
        if hunters:
            call["hunters"] = sorted({hunter, *(wire_text(h, 256) for h in hunters)})
    lc["call"] = call


def _tls_fields(
    ev: lc_pb2.Event,
    doc: dict[str, Any],
    lc: dict[str, Any],
    hunter: str,
    call_info: Callable[[str], tuple[str, list[str]] | None] | None,
) -> None:
    """A TLS handshake: ECS ``tls.*`` (``tls.client.ja4``, ``tls.server.ja4s``: the de
    facto names), the rest under ``lc.tls``."""
    t = ev.tls
    client: dict[str, Any] = {}
    server: dict[str, Any] = {}
    tls: dict[str, Any] = {"client": client, "server": server, "established": bool(t.cipher)}
    if t.server_name:
        client["server_name"] = wire_text(t.server_name, 256)
    if t.ja3:
        client["ja3"] = wire_text(t.ja3, 64)
    if t.ja4:
        client["ja4"] = wire_text(t.ja4, 64)
    if t.client_ciphers:
        client["supported_ciphers"] = [cipher_name(c) for c in t.client_ciphers]
    if t.ja3s:
        server["ja3s"] = wire_text(t.ja3s, 64)
    if t.ja4s:
        server["ja4s"] = wire_text(t.ja4s, 64)
    version = version_fields(t.server_version or t.client_version)
    if version is not None:
        tls["version_protocol"], tls["version"] = version
    if t.cipher:
        tls["cipher"] = cipher_name(t.cipher)
    if t.next_protocol:
        tls["next_protocol"] = wire_text(t.next_protocol, 64)
    doc["tls"] = tls
    lc["tls"] = {
        "alpn": [wire_text(a, 64) for a in t.alpn],
        "client_version": t.client_version,
        "server_version": t.server_version,
        "ja4_r": wire_text(t.ja4_r, 4096),
        "quic": t.quic,
        "hello_retry": t.hello_retry,
        "packets": t.packets,
        "bytes": t.bytes,
    }


def _body_fields(out: dict[str, Any], lc_http: dict[str, Any], side: str, body: bytes) -> None:
    """A captured body: ECS ``http.<side>.body.content`` when it is UTF-8 text, else
    base64 under ``lc.http.<side>_body_base64``."""
    try:
        out["content"] = body.decode("utf-8")
    except UnicodeDecodeError:
        lc_http[f"{side}_body_base64"] = base64.b64encode(body).decode("ascii")


def _http_fields(ev: lc_pb2.Event, doc: dict[str, Any], lc: dict[str, Any], *_: Any) -> None:
    """An HTTP transaction: ECS ``http.*``, ``url.*``, ``user_agent.original``; JA4H,
    matched keywords and the rest under ``lc.http``."""
    h = ev.http
    doc["event"]["category"] = ["network", "web"]
    doc["event"]["type"] = ["access"] if h.status else ["info"]
    http: dict[str, Any] = {"version": wire_text(h.version, 16)}
    lc_http: dict[str, Any] = {"transaction": h.transaction}
    if h.method:
        req: dict[str, Any] = {"method": wire_text(h.method, 64), "body": {}}
        req["body"]["bytes"] = h.request_body_bytes
        if h.referrer:
            req["referrer"] = wire_text(h.referrer, 8192)
        if h.request_body:
            _body_fields(req["body"], lc_http, "request", h.request_body)
        http["request"] = req
        url: dict[str, Any] = {
            "original": wire_text(h.target, 8192),
            "path": wire_text(h.path, 8192),
        }
        if h.host:
            url["domain"] = wire_text(h.host, 256)
        if h.query:
            url["query"] = wire_text(h.query, 8192)
        doc["url"] = url
        if h.user_agent:
            doc["user_agent"] = {"original": wire_text(h.user_agent, 1024)}
        if h.ja4h:
            lc_http["ja4h"] = wire_text(h.ja4h, 128)
    if h.status:
        resp: dict[str, Any] = {"status_code": h.status, "body": {"bytes": h.response_body_bytes}}
        if h.content_type:
            resp["mime_type"] = wire_text(h.content_type, 128)
        if h.response_body:
            _body_fields(resp["body"], lc_http, "response", h.response_body)
        http["response"] = resp
        lc_http["reason"] = wire_text(h.reason, 256)
    doc["http"] = http
    if h.duration_ns:
        doc["event"]["duration"] = h.duration_ns
    if h.keywords:
        lc_http["keywords"] = [wire_text(k, 256) for k in h.keywords]
    if h.truncated:
        lc_http["body_truncated"] = True
    lc["http"] = lc_http


def _dns_fields(
    ev: lc_pb2.Event,
    doc: dict[str, Any],
    lc: dict[str, Any],
    hunter: str,
    call_info: Callable[[str], tuple[str, list[str]] | None] | None,
) -> None:
    """A DNS transaction (ECS ``dns.*``, RTT as ``event.duration``), or a tunneling
    alert (``event.kind: alert``, the alert under ``lc.dns_tunnel``)."""
    d = ev.dns
    if d.HasField("alert"):
        a = d.alert
        event = doc["event"]
        event["kind"] = "alert"
        event["category"] = ["network", "intrusion_detection"]
        event["type"] = ["indicator"]
        event["severity"] = 73
        event["risk_score"] = round(a.score * 100, 1)
        event["reason"] = f"DNS tunneling suspected under {wire_text(a.domain, 256)}"
        doc["dns"] = {"question": {"registered_domain": wire_text(a.domain, 256)}}
        lc["dns_tunnel"] = {
            "domain": wire_text(a.domain, 256),
            "score": round(a.score, 6),
            "components": {wire_text(k, 64): round(v, 6) for k, v in sorted(a.components.items())},
            "clients": [wire_text(c, 64) for c in a.clients],
            "hunters": [wire_text(h, 256) for h in a.hunters],
            "first_seen": iso_ns(a.first_seen_ns),
            "last_seen": iso_ns(a.last_seen_ns),
            "queries": a.queries,
            "unique_subdomains": a.unique_subdomains,
        }
        return
    from lc.common.dns import opcode_name, rcode_name, type_name

    question: dict[str, Any] = {
        "name": wire_text(d.qname, 1024),
        "type": type_name(d.qtype),
        "class": "IN" if d.qclass == 1 else f"CLASS{d.qclass}",
    }
    if d.registered_domain:
        question["registered_domain"] = wire_text(d.registered_domain, 1024)
        if d.subdomain:
            question["subdomain"] = wire_text(d.subdomain, 1024)
    dns: dict[str, Any] = {
        "id": d.id,
        "type": "answer" if d.answered else "query",
        "op_code": opcode_name(d.opcode),
        "header_flags": [wire_text(f, 8) for f in d.header_flags],
        "question": question,
    }
    if d.answered:
        dns["response_code"] = rcode_name(d.rcode)
        dns["answers"] = [
            {
                "name": wire_text(a.name, 1024),
                "type": type_name(a.type),
                "class": "IN" if getattr(a, "class") == 1 else f"CLASS{getattr(a, 'class')}",
                "ttl": a.ttl,
                "data": wire_text(a.data, 1024),
            }
            for a in d.answers
        ]
        if d.resolved_ips:
            dns["resolved_ip"] = [wire_text(x, 64) for x in d.resolved_ips]
        if d.rtt_ns:
            doc["event"]["duration"] = d.rtt_ns
    doc["dns"] = dns
    lc["dns"] = {
        "answered": d.answered,
        "rtt_ns": d.rtt_ns,
        "queries": d.queries,
        "responses": d.responses,
        "tunnel_score": round(d.tunnel_score, 6),
    }


def _email_fields(
    ev: lc_pb2.Event,
    doc: dict[str, Any],
    lc: dict[str, Any],
    hunter: str,
    call_info: object = None,
) -> None:
    """One email message (or implicit-TLS session): ECS ``email.*``, the rest under
    ``lc.smtp``, ``lc.imap``, ``lc.email`` (and ``tls.*`` for implicit TLS)."""
    e = ev.email
    email: dict[str, Any] = {}

    def put(obj: dict[str, Any], key: str, value: Any) -> None:
        if value:
            obj[key] = value

    def addrs(values) -> list[str]:
        return [wire_text(v, 320) for v in values]

    if e.from_address:
        email["from"] = {"address": addrs(e.from_address)}
    if e.to_address:
        email["to"] = {"address": addrs(e.to_address)}
    if e.cc_address:
        email["cc"] = {"address": addrs(e.cc_address)}
    if e.reply_to:
        email["reply_to"] = {"address": addrs(e.reply_to)}
    put(email, "subject", wire_text(e.subject, 1024))
    put(email, "message_id", wire_text(e.message_id, 1024))
    if e.origination_ns > 0:
        secs, ns = divmod(e.origination_ns, 1_000_000_000)
        try:
            stamp = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            email["origination_timestamp"] = f"{stamp}.{ns // 1_000_000:03d}Z"
        except (OverflowError, OSError, ValueError):
            pass
    put(email, "content_type", wire_text(e.content_type, 256))
    if e.attachments:
        email["attachments"] = [{"file": {"name": wire_text(a, 256)}} for a in e.attachments]
    put(email, "direction", wire_text(e.direction, 16))
    put(email, "x_mailer", wire_text(e.x_mailer, 256))
    if email:
        doc["email"] = email
    smtp: dict[str, Any] = {}
    put(smtp, "helo", wire_text(e.helo, 256))
    put(smtp, "mail_from", wire_text(e.mail_from, 320))
    if e.rcpt_to:
        smtp["rcpt_to"] = addrs(e.rcpt_to)
    if smtp:
        lc["smtp"] = smtp
    if e.mailbox:
        lc["imap"] = {"mailbox": wire_text(e.mailbox, 1024)}
    mail: dict[str, Any] = {"protocol": wire_text(e.protocol, 16)}
    if e.protocol in _MAIL_PROTOCOLS:  # ECS names the application protocol, not "email"
        doc["network"]["protocol"] = e.protocol
    put(mail, "command", wire_text(e.command, 64))
    put(mail, "user", wire_text(e.user, 256))
    put(mail, "size", e.size)
    put(mail, "truncated", e.truncated)
    mail["complete"] = e.complete
    put(mail, "upgraded", e.upgraded)
    put(mail, "body", wire_text(e.body, 1 << 20))
    lc["email"] = mail
    if e.tls_sni or e.tls_version:
        tls: dict[str, Any] = {}
        put(tls, "client", {"server_name": wire_text(e.tls_sni, 256)} if e.tls_sni else None)
        if e.tls_version:
            tls["version_code"] = e.tls_version
        doc["tls"] = tls


_MAIL_PROTOCOLS = frozenset(("smtp", "imap", "pop3", "smtps", "imaps", "pop3s"))


#: The fields of each kind of event detail (``Event.detail``), added to ``doc`` and to its
#: ``lc`` object. A mode that adds a detail to the wire contract adds its renderer here.
DETAIL_RENDERERS: dict[str, Callable[..., None]] = {
    "call": _call_fields,
    "dns": _dns_fields,
    "http": _http_fields,
    "email": _email_fields,
    "tls": _tls_fields,
}


class EventLog:
    """The event log sink (see the module docstring).

    Raises:
        OSError: the directory cannot be created or its file opened.
    """

    name = "events"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        ledger: Ledger,
        rotate_size: int = DEFAULT_ROTATE_SIZE,
        call_info: Callable[[str], tuple[str, list[str]] | None] | None = None,
        clock: Callable[[], float] = time.time,
        fsync: bool = False,
    ) -> None:
        if rotate_size < 1:
            raise ValueError(f"rotate_size must be positive, not {rotate_size}")
        self.directory = os.path.abspath(os.fspath(directory))
        self.ledger = ledger
        self.rotate_size = rotate_size
        self.call_info = call_info
        self._clock = clock
        self._fsync = fsync
        self.events = 0  # lines written (this run)
        self.files: list[str] = []
        self.notes: list[str] = []  # what resuming did, for the log
        os.makedirs(self.directory, mode=0o750, exist_ok=True)
        self._fd = -1
        self._path = ""
        self._size = 0
        self._day = ""
        got = ledger.sink_state(_SINK, self.directory)
        if got is not None:
            self._resume(*got)
        if self._fd < 0:
            self._open_next()
        # (file, size) of what is committed: a reader of the log (the Redis forwarder)
        # reads no further. Files named before it are complete. Replaced whole, never
        # changed in place, so another thread reads it without a lock.
        self.committed_at = (self._path, self._size)

    # -- files --------------------------------------------------------------------------
    def _today(self) -> str:
        return time.strftime("%Y%m%d", time.gmtime(self._clock()))

    def _resume(self, path: str, size: int) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        except OSError as e:
            self.notes.append(f"not continuing {path}: {e.strerror or e}")
            return
        try:
            have = os.fstat(fd).st_size
            if have < size:
                raise OSError(f"it holds {have} bytes, fewer than the {size} committed")
            os.ftruncate(fd, size)
        except OSError as e:
            os.close(fd)
            self.notes.append(f"not continuing {path}: {e.strerror or e}")
            return
        self._fd, self._path, self._size = fd, path, size
        self._day = _day_of(path)
        self.files.append(path)
        self.notes.append(f"continuing {path} at {size} bytes")
        if self._due():
            self._rotate()

    def _due(self) -> bool:
        return self._size > 0 and (self._size >= self.rotate_size or self._day != self._today())

    def _open_next(self) -> None:
        day = self._today()
        n = 1
        if self._day == day and self._path:
            n = _counter_of(self._path) + 1
        while True:
            path = os.path.join(self.directory, f"events-{day}-{n:06d}.jsonl")
            n += 1
            if os.path.exists(path):
                continue
            self.ledger.sink_state_opening(_SINK, self.directory, path)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o640)
            except FileExistsError:
                continue
            break
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._path, self._size, self._day = fd, path, 0, day
        self.files.append(path)

    def _rotate(self) -> None:
        try:
            self._open_next()
        except OSError as e:  # keep writing the current one; try again after the next group
            log.error("cannot start a new event log file in %s: %s", self.directory, e)

    @property
    def path(self) -> str:
        return self._path

    # -- the sink -----------------------------------------------------------------------
    def mark(self) -> object:
        return self._size

    def write(self, batch: Received) -> None:
        events = batch.cols.events
        if not events:
            return
        base = f"{batch.hunter_id}:{batch.epoch}:{batch.sequence}:"
        dumps = orjson.dumps
        lines = [
            dumps(event_document(ev, batch.hunter_id, base + str(i), self.call_info))
            for i, ev in events
        ]
        data = b"\n".join(lines) + b"\n"
        size = self._size
        try:
            done = os.write(self._fd, data)
            while done < len(data):
                done += os.write(self._fd, memoryview(data)[done:])
        except OSError:
            os.ftruncate(self._fd, size)
            raise
        self._size = size + len(data)
        self.events += len(lines)

    def rollback(self, mark: object) -> None:
        size = int(mark)  # type: ignore[call-overload]
        if size < self._size:
            os.ftruncate(self._fd, size)
            self._size = size

    def prepare(self) -> Statements:
        if self._fsync:
            os.fsync(self._fd)
        return [(SINK_STATE_SQL, [(_SINK, self.directory, self._path, self._size)])]

    def committed(self) -> None:
        self.committed_at = (self._path, self._size)
        if self._due():
            self._rotate()
            self.committed_at = (self._path, self._size)

    def close(self) -> Statements:
        if self._fd < 0:
            return ()
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        return [(SINK_STATE_SQL, [(_SINK, self.directory, self._path, self._size)])]


def _uri(user: str, uri: str) -> dict[str, str]:
    return {"username": wire_text(user), "original": wire_text(uri)}


def _day_of(path: str) -> str:
    parts = os.path.basename(path).split("-")
    return parts[1] if len(parts) >= 3 else ""


def _counter_of(path: str) -> int:
    stem = os.path.basename(path).rsplit(".", 1)[0]
    try:
        return int(stem.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0
