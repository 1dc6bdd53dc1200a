#!/usr/bin/env bash
# make demo: the whole product in one go on loopback, with real mutual TLS.
#   1. throwaway certificates (lc certs init)
#   2. a processor on 127.0.0.1 writing PCAP
#   3. a hunter replaying captures/sip-call.pcap, which exits once every packet is acknowledged
#   4. both shut down cleanly; then where the output is and what it holds.
set -euo pipefail
cd "$(dirname "$0")/.."
LC=${LC:-.venv/bin/lc}
OUT=${DEMO_OUT:-demo-out}
SAMPLE=captures/sip-call.pcap
rm -rf "$OUT"
mkdir -p "$OUT"

port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
addr=127.0.0.1:$port

echo "== 1. certificates: CA, processor, hunter 'demo-hunter', admin -> $OUT/pki"
"$LC" certs init --dir "$OUT/pki" --hunter demo-hunter >/dev/null
tls() { echo --tls-cert "$OUT/pki/$1.pem" --tls-key "$OUT/pki/$1.key" --tls-ca "$OUT/pki/ca.pem"; }

echo "== 2. processor on $addr"
# shellcheck disable=SC2046
"$LC" process --listen "$addr" --id demo-processor --data-dir "$OUT/data" $(tls processor) \
    --per-call-pcap-dir "$OUT/calls" 2>"$OUT/processor.log" &
proc=$!
trap 'kill $proc 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    grep -q "listening on" "$OUT/processor.log" 2>/dev/null && break
    kill -0 $proc 2>/dev/null || { cat "$OUT/processor.log"; exit 1; }
    sleep 0.1
done

echo "== 3. hunter replays $SAMPLE (waits for every acknowledgement)"
# shellcheck disable=SC2046
"$LC" hunt --processor "$addr" -r "$SAMPLE" $(tls hunter-demo-hunter)

# shellcheck disable=SC2046
echo "== 4. VoIP: a filter for one of the sample's three calls, then lc hunt voip replays it"
"$LC" set filter --id demo-call --type call_id --pattern '2-6983@127.0.0.1' \
    --processor "$addr" $(tls admin) >/dev/null
"$LC" hunt voip --processor "$addr" -r "$SAMPLE" $(tls hunter-demo-hunter) \
    --sip-port 5061,5070 --rtp-port-range 6000-6199
"$LC" list calls --processor "$addr" $(tls admin) >"$OUT/calls.json"
echo "call index (lc list calls):"
.venv/bin/python - "$OUT/calls.json" <<'PY'
import json, sys
for c in json.load(open(sys.argv[1])):
    print(f"  {c['call_id']}: {c['state']}, {c['from_user']} -> {c['to_user']}, "
          f"{c['sip_packets']} SIP + {c['rtp_packets']} RTP packets in {c['pcap_path']}")
PY

"$LC" show status --processor "$addr" $(tls admin) >"$OUT/status.json"
# shellcheck disable=SC2046
"$LC" list hunters --processor "$addr" $(tls admin) >"$OUT/hunters.json"

echo "== 5. stopping the processor (SIGTERM: writes and fsyncs what it acknowledged)"
kill -TERM $proc
wait $proc
trap - EXIT

.venv/bin/python - "$OUT" <<'PY'
import json, sys
from lc.common.pcapfile import open_capture
out = sys.argv[1]
st = json.load(open(f"{out}/status.json"))
hunters = json.load(open(f"{out}/hunters.json"))
print()
print("== result")
for h in hunters:
    print(f"hunter {h['hunter_id']}: {h['packets_received']} packets, {h['bytes_received']} bytes "
          f"received; state {h['state']}")
for path in st["output_files"]:
    with open_capture(path) as r:
        n = sum(1 for _ in r.records())
    print(f"output {path}: {n} packets (nanosecond pcap; open it with wireshark or tshark -r)")
print(f"processor wrote {st['packets_written']} packets, {st['bytes_written']} bytes "
      f"from {st['hunters_total']} hunter(s); status in {out}/status.json")
PY
