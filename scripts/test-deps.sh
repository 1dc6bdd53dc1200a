#!/usr/bin/env bash
# Installs the external programs lc's tests use as real peers and oracles:
# tshark (independent dissector), tcpdump (reference capture), sipp (SIP peer),
# dnsmasq and dig (DNS server and client), dovecot (IMAP and POP3 server of the email
# tests), promtool (checks the metrics exposition), redis-server (--events-redis),
# sngrep (a HEP receiver for --hep-out), tcpreplay (live capture on lo in bench/live_bench.py)
# and tmux (a real terminal for lc watch and the replay progress bar).
set -euo pipefail
need=()
command -v tshark  >/dev/null 2>&1 || need+=(tshark)
command -v tcpdump >/dev/null 2>&1 || need+=(tcpdump)
command -v sipp    >/dev/null 2>&1 || need+=(sip-tester)
command -v curl    >/dev/null 2>&1 || need+=(curl)           # HTTP client (http mode)
command -v ab      >/dev/null 2>&1 || need+=(apache2-utils)  # ab -k: keep-alive load
command -v openssl >/dev/null 2>&1 || need+=(openssl)        # s_server: HTTPS peer
command -v gtlsclient >/dev/null 2>&1 || need+=(ngtcp2-client ngtcp2-server)  # QUIC peers (tls e2e)
command -v dnsmasq >/dev/null 2>&1 || need+=(dnsmasq-base)  # DNS server (lc hunt dns tests)
command -v dig     >/dev/null 2>&1 || need+=(bind9-dnsutils)  # DNS client
command -v dovecot >/dev/null 2>&1 || need+=(dovecot-imapd dovecot-pop3d)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)      # promtool check metrics
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v sngrep >/dev/null 2>&1 || need+=(sngrep)
command -v tcpreplay >/dev/null 2>&1 || need+=(tcpreplay)  # replays onto lo (live_bench)
command -v tmux    >/dev/null 2>&1 || need+=(tmux)           # a terminal for lc watch tests
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
    echo "lc tests need: ${need[*]} (Debian packages). Run as root, or: sudo apt-get install -y ${need[*]}" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "lc tests need: ${need[*]}; no apt-get here, install them with your package manager" >&2
    exit 1
fi
echo "installing test tools: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# tshark asks whether non-root users may capture; answer no without a prompt.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
