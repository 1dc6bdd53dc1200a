#!/usr/bin/env bash
# make-sample-capture.sh: record captures/sip-call.pcap, the SIP + RTP sample lc's demo uses.
#
# On the loopback interface it runs
#   * tcpdump -i lo, writing only the UDP ports below;
#   * a sipp UAS (built-in "uas" scenario) on 127.0.0.1:5070, echoing RTP (-rtp_echo)
#     on media port 6000;
#   * a sipp UAC (built-in "uac_pcap" scenario) on 127.0.0.1:5061 that places CALLS calls,
#     one at a time; each call plays the G.711 A-law sample and an RFC 2833 DTMF digit
#     shipped with sipp (Debian package sip-tester) as RTP, then hangs up.
# Then it stops tcpdump with SIGINT, waits for it and moves the file into place.
#
# Usage:   sudo scripts/make-sample-capture.sh [OUTPUT]      (default captures/sip-call.pcap)
#          CALLS=3 sudo scripts/make-sample-capture.sh
# Needs:   root (tcpdump on lo, and sipp sends the recorded RTP through a raw socket),
#          sipp, tcpdump; capinfos/tshark only to print a summary at the end.
# Takes about 10 seconds per call. Every step is bounded by a timeout, and every process
# the script starts is stopped on exit, including on error or Ctrl-C.
set -euo pipefail

CALLS=${CALLS:-3}
UAS_PORT=5070
UAC_PORT=5061
UAS_MEDIA_PORT=6000  # the UAS echoes RTP received here (and on +2) back to its sender
UAC_MEDIA_PORT=6100  # base of the UAC's RTP ports
FILTER="udp and (port $UAS_PORT or port $UAC_PORT or portrange $UAS_MEDIA_PORT-$((UAS_MEDIA_PORT + 3)) or portrange $UAC_MEDIA_PORT-$((UAC_MEDIA_PORT + 99)))"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$here/captures/sip-call.pcap}

die() { echo "make-sample-capture: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (tcpdump on lo, raw sockets for sipp's RTP playback)"
for tool in sipp tcpdump; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (Debian packages: sip-tester, tcpdump)"
done
case "$CALLS" in '' | *[!0-9]* | 0) die "CALLS must be a positive integer, not '$CALLS'" ;; esac

# Where the sipp package keeps the recorded media the uac_pcap scenario plays.
g711=$(dpkg -L sip-tester 2>/dev/null | grep -m1 '/g711a\.pcap$' || true)
[ -n "$g711" ] || g711=$(find /usr/share -name g711a.pcap -print -quit 2>/dev/null || true)
[ -n "$g711" ] && [ -f "$g711" ] || die "g711a.pcap (shipped with sip-tester) not found"
media_dir=$(dirname "$g711")
[ -f "$media_dir/dtmf_2833_1.pcap" ] || die "dtmf_2833_1.pcap not found next to $g711"

work=$(mktemp -d "${TMPDIR:-/tmp}/lc-sample-capture.XXXXXX")
tcpdump_pid= uas_pid=
cleanup() {
    for pid in $uas_pid $tcpdump_pid; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# uac_pcap plays "pcap/g711a.pcap" and "pcap/dtmf_2833_1.pcap" relative to its working
# directory; Debian ships them flat in $media_dir, so give sipp a pcap/ that points there.
ln -s "$media_dir" "$work/pcap"

# 1. tcpdump; -Z root keeps it from switching to the tcpdump user, which could not write
#    into $work. -U flushes every packet, so SIGINT loses nothing.
timeout 300 tcpdump -i lo -U -Z root -w "$work/capture.pcap" "$FILTER" \
    2>"$work/tcpdump.log" &
tcpdump_pid=$!
for _ in $(seq 100); do
    grep -q 'listening on' "$work/tcpdump.log" 2>/dev/null && break
    kill -0 "$tcpdump_pid" 2>/dev/null || die "tcpdump failed: $(cat "$work/tcpdump.log")"
    sleep 0.1
done
grep -q 'listening on' "$work/tcpdump.log" || die "tcpdump did not start listening within 10 s"

# 2. The UAS: answers each call, echoes the caller's RTP, exits after CALLS calls.
call_time=12  # seconds per call: about 8 s of speech, 1 s of DTMF, pauses and signalling
bound=$((CALLS * call_time + 30))
(cd "$work" && exec timeout "$bound" sipp -sn uas -i 127.0.0.1 -p "$UAS_PORT" \
    -mi 127.0.0.1 -mp "$UAS_MEDIA_PORT" -rtp_echo -m "$CALLS" -nostdin \
    -timeout "$bound" >"$work/uas.log" 2>&1) &
uas_pid=$!
sleep 1
kill -0 "$uas_pid" 2>/dev/null || die "sipp UAS failed: $(tail -5 "$work/uas.log")"

# 3. The UAC: CALLS calls, at most one at a time (-l 1), one new call per second at most.
if ! (cd "$work" && timeout "$bound" sipp -sn uac_pcap 127.0.0.1:"$UAS_PORT" \
    -i 127.0.0.1 -p "$UAC_PORT" -mi 127.0.0.1 -mp "$UAC_MEDIA_PORT" \
    -m "$CALLS" -l 1 -r 1 -nostdin -timeout "$bound" -timeout_error \
    >"$work/uac.log" 2>&1); then
    die "sipp UAC failed or timed out: $(tail -20 "$work/uac.log")"
fi

# 4. Let the UAS see the last BYE and the echoed RTP drain, then stop the UAS and tcpdump.
for _ in $(seq 50); do kill -0 "$uas_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$uas_pid" 2>/dev/null; then
    kill -TERM "$uas_pid" 2>/dev/null || true
fi
wait "$uas_pid" 2>/dev/null || true
uas_pid=
sleep 0.5
kill -INT "$tcpdump_pid"
wait "$tcpdump_pid" || true
tcpdump_pid=
cat "$work/tcpdump.log" >&2

mkdir -p "$(dirname "$out")"
mv -f "$work/capture.pcap" "$out"
chmod 0644 "$out"
echo "wrote $out" >&2
if command -v capinfos >/dev/null 2>&1; then
    capinfos -c -s -u "$out" >&2
fi
