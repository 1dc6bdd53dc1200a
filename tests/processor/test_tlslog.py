"""The reader of gRPC's log (lc.processor.tlslog): failed handshakes out, noise dropped."""

from __future__ import annotations

import logging

from lc.processor.tlslog import GrpcLogReader, HandshakeLog, explain

# What grpcio 1.85 writes for one client whose certificate is from another CA
# (GRPC_VERBOSITY=INFO, GRPC_TRACE=handshaker), trimmed.
FAILURE = b"""\
I1207 01:18:27.938925   10752 handshaker.cc:80] handshake_manager 0x7f08: adding handshaker security [0x7f08] at index 1
I1207 01:18:27.939244   10752 handshaker.cc:155] CallNextHandshakerLocked: error=OK shutdown=false index=1, args={endpoint=0x7f08, args={grpc.internal.endpoint_peer_address=ipv4:127.0.0.1:42080}}
I1207 01:18:27.940869   10752 ssl_transport_security.cc:2563] Handshake failed with error SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate
I1207 01:18:27.940905   10752 handshaker.cc:155] CallNextHandshakerLocked: error=UNKNOWN: Ssl handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate: OK
=== Source Location Trace: ===
src/core/util/status_helper.cc:68
 shutdown=false index=2, args={endpoint=0x7f08, args={grpc.internal.endpoint_local_address=ipv4:127.0.0.1:38179, grpc.internal.endpoint_peer_address=ipv4:127.0.0.1:42080, grpc.resource_quota=0x55}}
I1207 01:18:27.940923   10752 channel_trace.h:396] handshake manager 0x7f08: Failed with error: UNKNOWN: Ssl handshake failed
"""  # noqa: E501


def reader(show: bool = False):
    failures: list[tuple[str | None, str]] = []
    out: list[bytes] = []
    r = GrpcLogReader(lambda p, e: failures.append((p, e)), out.append, show_grpc=show)
    return r, failures, out


def test_a_failed_handshake_is_reported_once_with_its_peer():
    r, failures, out = reader()
    r.feed(FAILURE)
    r.flush()
    assert len(failures) == 1
    peer, error = failures[0]
    assert peer == "127.0.0.1:42080"
    assert "CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate" in error
    assert explain(error) == (
        "the client's certificate is not signed by our CA "
        "(CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate)"
    )
    assert out == []  # gRPC's own lines are dropped


def test_split_anywhere_gives_the_same_result():
    for cut in range(1, len(FAILURE), 37):
        r, failures, _ = reader()
        r.feed(FAILURE[:cut])
        r.feed(FAILURE[cut:])
        r.flush()
        assert [p for p, _ in failures] == ["127.0.0.1:42080"], cut


def test_other_output_passes_through_and_grpc_lines_with_show():
    r, failures, out = reader()
    r.feed(b"some library's message\n")
    assert out == [b"some library's message\n"] and failures == []
    r, failures, out = reader(show=True)
    r.feed(FAILURE)
    r.flush()
    assert b"".join(out) == FAILURE


def test_ssl_line_alone_is_reported_without_peer():
    r, failures, _ = reader()
    r.feed(FAILURE.splitlines(keepends=True)[2])
    r.flush()
    assert failures == [
        (
            None,
            "SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:"
            "CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate",
        )
    ]


def test_hostile_peer_text_is_escaped_and_rate_limited(caplog):
    now = [0.0]
    h = HandshakeLog(logging.getLogger("t"), interval=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "t"):
        h.failed("1.2.3.4:5", "odd\n\x1b[31mERROR forged")
        for _ in range(5):
            h.failed("1.2.3.4:6", "x")
        h.tick()
        assert len(caplog.records) == 1
        assert "\n" not in caplog.text.strip() and "\x1b" not in caplog.text
        now[0] = 10.5
        h.tick()
    assert len(caplog.records) == 2
    assert "5 more TLS handshakes failed in the last 10 s" in caplog.records[1].getMessage()
    assert h.failures == 6


def test_a_core_pausing_mid_failure_still_gives_one_report_with_its_peer():
    r, failures, out = reader()
    lines = FAILURE.splitlines(keepends=True)
    r.feed(b"".join(lines[:4]), now=0.0)  # up to the head of the failure record
    r.flush(now=0.6)  # quiet for a moment: nothing is reported yet
    assert failures == []
    r.feed(b"".join(lines[4:]), now=1.0)  # the rest, with the peer
    r.flush(now=5.0)
    assert [p for p, _ in failures] == ["127.0.0.1:42080"]
    assert out == []


# An edge processor's own uplink failing to reach its upstream (grpcio 1.85, trimmed): a
# client channel's handshake, not a client's of ours.
OWN_CONNECT = b"""\
I1207 04:25:08.253305   32518 handshaker.cc:155] CallNextHandshakerLocked: error=UNKNOWN: Failed to connect to remote host: Connection refused
=== Source Location Trace: ===
src/core/lib/event_engine/posix_engine/posix_engine.cc:309
 shutdown=false index=1, args={endpoint=(nil), args={grpc.client_channel_factory=0x7f09, grpc.default_authority=127.0.0.1:47999, grpc.server_uri=dns:///127.0.0.1:47999}, read_buffer.Length()=0, exit_early=0}
I1207 04:25:08.253394   32518 channel_trace.h:396] handshake manager 0x7f09: Failed with error: UNKNOWN: Failed to connect to remote host: Connection refused
"""  # noqa: E501


def test_own_outgoing_handshakes_are_not_reported_as_clients():
    own_ssl = FAILURE.replace(
        b"args={grpc.internal.endpoint_local_address",
        b"args={grpc.client_channel_factory=0x7f09, grpc.internal.endpoint_local_address",
    )
    assert own_ssl != FAILURE
    for data in (OWN_CONNECT, own_ssl):
        r, failures, out = reader()
        r.feed(data)
        r.flush()
        assert failures == [] and out == []
    r, failures, _ = reader()  # a real client's failure after ours is still reported
    r.feed(OWN_CONNECT + FAILURE)
    r.flush()
    assert [p for p, _ in failures] == ["127.0.0.1:42080"]
