"""Filter engine: build time and match cost with 100,000 filters of one type.

For ``sip_user`` (about 90% exact patterns, 10% ``foo*`` / ``*foo`` / ``*foo*``),
``ip_address`` (IPv4 and IPv6 CIDRs of mixed prefix lengths) and ``phone_number``
(numbers in mixed notations), prints the time ``compile_filters`` takes (validation
included) and the cost of matching one message: six SIP user fields (From, To,
Request-URI, P-Asserted-Identity, P-Preferred-Identity, Contact), a packet's two
addresses, or six phone-like users. Most messages match nothing, about one in ten
matches something. Then the cost of a whole SIP message through ``match_fields``
against all 300,000 filters at once. Figures are medians of several runs; the script
prints them and asserts nothing.

    .venv/bin/python bench/filter_bench.py [--filters N] [--messages M] [--runs K]

Targets (2-core development machine): sip_user build <= 3 s, match <= 10 us/message.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import random
import statistics
import string
import time
from collections.abc import Callable

from lc.common.filters import Filter, FilterSet, compile_filters

_ALPHA = string.ascii_lowercase + string.digits


def _word(rnd: random.Random, lo: int = 6, hi: int = 12) -> str:
    return "".join(rnd.choices(_ALPHA, k=rnd.randint(lo, hi)))


def _number(rnd: random.Random) -> str:
    """An international number as digits, e.g. 4930xxxxxxx (10-13 digits)."""
    cc = rnd.choice(["1", "44", "49", "33", "39", "61", "81", "353"])
    return cc + str(rnd.randint(1, 9)) + "".join(rnd.choices(string.digits, k=rnd.randint(8, 10)))


_FIRST = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
_LAST = ["smith", "jones", "brown", "garcia", "miller", "davis", "lopez", "wilson", "moore"]


def _name(rnd: random.Random) -> str:
    return f"{rnd.choice(_FIRST)}.{rnd.choice(_LAST)}{rnd.randint(1, 9999)}"


def _sip_number(rnd: random.Random) -> str:
    return ("+" if rnd.random() < 0.5 else "00") + _number(rnd)


def sip_user_filters(
    n: int, rnd: random.Random, stress: bool = False
) -> tuple[list[Filter], list[str]]:
    """~90% exact, ~10% wildcard patterns; also returns the exact users.

    Realistic mix: users are numbers (60%) and names (40%); wildcards are number
    blocks ``+4930123456*`` (60%), number ends ``*1234567`` (20%) and name parts
    ``*smith*`` (20%). ``stress``: every user and every wildcard core is random alphanumeric text,
    which walks far more of the automaton per character.
    """
    filters, users = [], []
    for i in range(n):
        r = rnd.random()
        if r < 0.9:
            u = _word(rnd) if stress else _sip_number(rnd) if rnd.random() < 0.6 else _name(rnd)
            users.append(u)
            pattern = u
        elif stress:
            pattern = rnd.choice(["{}*", "*{}", "*{}*"]).format(_word(rnd, 5, 8))
        elif r < 0.96:
            pattern = "+" + _number(rnd)[: rnd.randint(9, 11)] + "*"
        elif r < 0.98:
            pattern = "*" + "".join(rnd.choices(string.digits, k=rnd.randint(7, 9)))
        else:
            pattern = "*" + _word(rnd, 4, 7) + "*"
        filters.append(Filter(id=f"s{i}", type="sip_user", pattern=pattern))
    return filters, users


def sip_messages(
    n: int, rnd: random.Random, known: list[str], stress: bool = False
) -> list[list[str]]:
    """Six user fields per message; about one message in ten holds a filtered user."""
    out = []
    for _ in range(n):
        if stress:
            users = [_word(rnd) for _ in range(6)]
        else:
            users = [_sip_number(rnd) if rnd.random() < 0.6 else _name(rnd) for _ in range(6)]
        if rnd.random() < 0.1:
            users[rnd.randrange(6)] = rnd.choice(known)
        out.append(users)
    return out


def ip_filters(n: int, rnd: random.Random) -> tuple[list[Filter], list[int]]:
    # Mostly hosts and small networks, as watch lists are; short prefixes would make
    # nearly every random address match.
    v4_lengths = [20, 22, 23, 24, 24, 24, 25, 26, 27, 28, 29, 30, 31, 32, 32, 32, 32]
    v6_lengths = [32, 48, 56, 64, 64, 128]
    filters, v4_nets = [], []
    for i in range(n):
        if rnd.random() < 0.9:
            plen = rnd.choice(v4_lengths)
            net = ipaddress.IPv4Network((rnd.getrandbits(32) >> (32 - plen) << (32 - plen), plen))
            v4_nets.append(int(net.network_address))
        else:
            plen = rnd.choice(v6_lengths)
            addr = (0x2001_0DB8 << 96 | rnd.getrandbits(96)) >> (128 - plen) << (128 - plen)
            net = ipaddress.IPv6Network((addr, plen))
        filters.append(Filter(id=f"i{i}", type="ip_address", pattern=str(net)))
    return filters, v4_nets


def ip_packets(n: int, rnd: random.Random, v4_nets: list[int]) -> list[list[bytes]]:
    out = []
    for _ in range(n):
        if rnd.random() < 0.9:
            src, dst = rnd.getrandbits(32), rnd.getrandbits(32)
            if rnd.random() < 0.1:
                dst = rnd.choice(v4_nets)
            out.append([src.to_bytes(4, "big"), dst.to_bytes(4, "big")])
        else:
            out.append([rnd.getrandbits(128).to_bytes(16, "big") for _ in range(2)])
    return out


def _notation(rnd: random.Random, digits: str) -> str:
    """The same number written one of several ways."""
    r = rnd.random()
    if r < 0.3:
        return "+" + digits
    if r < 0.5:
        return "00" + digits
    if r < 0.7:
        return f"+{digits[:2]} {digits[2:5]} {digits[5:]}"
    if r < 0.85:
        return f"tel:+{digits[:2]}-{digits[2:5]}-{digits[5:]};ext=1"
    return f"sip:+{digits}@example.com"


def phone_filters(n: int, rnd: random.Random) -> tuple[list[Filter], list[str]]:
    filters, numbers = [], []
    for i in range(n):
        digits = _number(rnd)
        numbers.append(digits)
        filters.append(Filter(id=f"p{i}", type="phone_number", pattern=_notation(rnd, digits)))
    return filters, numbers


def phone_messages(n: int, rnd: random.Random, known: list[str]) -> list[list[str]]:
    out = []
    for _ in range(n):
        users = ["+" + _number(rnd) if rnd.random() < 0.7 else _word(rnd) for _ in range(6)]
        if rnd.random() < 0.1:
            digits = rnd.choice(known)
            # a national form: drop the country code, add a trunk 0
            users[rnd.randrange(6)] = "0" + digits[2:] if rnd.random() < 0.5 else "+" + digits
        out.append(users)
    return out


def time_build(filters: list[Filter], runs: int) -> tuple[float, FilterSet]:
    times, fs = [], None
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        fs = compile_filters(filters)
        times.append(time.perf_counter() - t0)
    assert fs is not None
    return statistics.median(times), fs


def time_match(fn: Callable[[object], set[str]], items: list, runs: int) -> tuple[float, int]:
    """Median µs per item over ``runs`` passes, and how many items matched something."""
    per_item, matched = [], 0
    for _ in range(runs):
        matched = 0
        t0 = time.perf_counter()
        for item in items:
            if fn(item):
                matched += 1
        per_item.append((time.perf_counter() - t0) / len(items) * 1e6)
    return statistics.median(per_item), matched


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--filters", type=int, default=100_000)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--build-runs", type=int, default=3)
    args = ap.parse_args()
    rnd = random.Random(7)
    n, m = args.filters, args.messages

    print(f"filter engine, {n:,} filters per type, {m:,} messages, median of {args.runs} runs")
    print(f"{'type':<14} {'build s':>8} {'µs/message':>11} {'matched':>9}  what a message is")

    for stress in (False, True):
        f, known = sip_user_filters(n, rnd, stress)
        build, fs = time_build(f, args.build_runs)
        msgs = sip_messages(m, rnd, known, stress)
        us, hit = time_match(lambda u, fs=fs: fs.match_fields({"sip_user": u}), msgs, args.runs)
        wild = sum("*" in x.pattern for x in f)
        label = "sip_user" if not stress else "sip_user/rand"
        what = "numbers and names" if not stress else "random alphanumeric, worst case"
        print(
            f"{label:<14} {build:>8.2f} {us:>11.2f} {hit:>9,}  6 users, {what} "
            f"({n - wild:,} exact, {wild:,} wildcard patterns)"
        )
        if not stress:
            sip_f, msgs_real = f, msgs

    ip_f, v4_nets = ip_filters(n, rnd)
    build, fs_ip = time_build(ip_f, args.build_runs)
    pkts = ip_packets(m, rnd, v4_nets)
    us, hit = time_match(fs_ip.match_ip, pkts, args.runs)
    lengths = len({f.pattern.partition("/")[2] + (":" in f.pattern) * "v6" for f in ip_f})
    print(
        f"{'ip_address':<14} {build:>8.2f} {us:>11.2f} {hit:>9,}  src+dst raw bytes "
        f"({lengths} prefix-length tables)"
    )

    ph_f, ph_known = phone_filters(n, rnd)
    build, fs_ph = time_build(ph_f, args.build_runs)
    pmsgs = phone_messages(m, rnd, ph_known)
    us, hit = time_match(lambda u: fs_ph.match_fields({"phone_number": u}), pmsgs, args.runs)
    print(f"{'phone_number':<14} {build:>8.2f} {us:>11.2f} {hit:>9,}  6 users (+E.164 or names)")

    build, fs_all = time_build(sip_f + ip_f + ph_f, 1)
    whole = [
        {"sip_user": u, "phone_number": u, "ip_address": p}
        for u, p in zip(msgs_real, pkts, strict=True)
    ]
    us, hit = time_match(fs_all.match_fields, whole, args.runs)
    print(
        f"{'all three':<14} {build:>8.2f} {us:>11.2f} {hit:>9,}  one SIP message: 6 users "
        "as sip_user and phone_number, src+dst"
    )


if __name__ == "__main__":
    main()
