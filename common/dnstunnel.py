"""DNS tunneling statistics per registered domain, and a tunneling score (sans-IO).

A DNS tunnel (iodine, dnscat2, dns2tcp...) carries data in the query names of one
domain its operator controls: many distinct, long, random-looking subdomains,
often with record types that can carry a large answer (TXT, NULL, CNAME, MX).
:class:`TunnelDetector` keeps bounded statistics per registered domain of every
query it is shown, and :meth:`DomainStats.score` turns them into a score in
[0, 1]; a domain whose score reaches :data:`DEFAULT_THRESHOLD` is a tunnel
suspect. Statistics from several hunters merge (:meth:`DomainStats.merge`; the
compact form of :meth:`DomainStats.to_dict` / :meth:`DomainStats.from_dict`
travels to the processor), so a tunnel spread over several sensors is scored as
one.

The registered domain (what the statistics are kept for)
    The Public Suffix List (the ``publicsuffixlist`` package, offline), ICANN and
    private sections: ``a.b.example.co.uk`` belongs to ``example.co.uk`` (the "last
    two labels" rule would say ``co.uk``), ``x.cloudfront.net`` to itself. Unknown
    TLDs count as public suffixes (``t1.pirate.sea`` belongs to ``pirate.sea``). The
    *subdomain* is everything left of the registered domain. Names that are
    themselves a public suffix (``com``, a single label) have no registered domain
    and are not scored (``no_domain``); nor are reverse look-ups under ``arpa``
    (``reverse``), whose 32-nibble ip6.arpa names would otherwise look like data,
    nor multicast DNS names under ``local`` (``local``, RFC 6762: they never leave
    the link, and DNS-SD instance names such as ``Living Room TV._googlecast._tcp``
    hold spaces and UTF-8 that would count as odd bytes).
    Names are compared in lower case (resolvers that use 0x20 mixing randomise the
    case of what they send), and measured on their raw bytes (the ``\\DDD``
    escapes of :mod:`lc.common.dns` are undone first).

What is measured per query (on the subdomain, dots left out)
    ``L`` its length in bytes; ``H`` the Shannon entropy of its bytes (bits per
    byte); ``bits = L * H``, the information it could carry; its longest *token*,
    the longest run of bytes without ``.``, ``-`` or ``_``. The query is *odd* when
    its subdomain holds a byte that is not a letter, digit, ``-`` or ``_`` (the
    8-bit labels of iodine, the ``+/=`` of base64), and a *carrier* when it is odd
    or its longest token is at least 20 bytes long with ``H >= 3.5`` and mixes
    letters and digits (at least two of each): base32, hex and base64 strings do,
    words joined by hyphens and letter-only words do not. Query types TXT, NULL,
    CNAME, MX, KEY, ANY and the private-use types 65280-65534 are *tunnel types*.

Statistics per registered domain (:class:`DomainStats`)
    Sums and maxima only, so they merge by adding: queries; distinct subdomains
    (a HyperLogLog of 256 one-byte registers over a 64-bit BLAKE2b hash of the
    lower-cased subdomain: linear counting keeps small counts within a unit or
    two, 6.5% standard error above; 256 bytes whatever the traffic) and distinct
    carrier subdomains (another of 64 registers); the sum of ``L``, of ``bits``
    and of the carriers' ``bits`` (in integer thousandths of a bit, so that
    merging in any order gives the same sums); the longest ``L`` and label;
    carrier, odd and tunnel-type counts; first and last capture time; up to
    ``max_clients`` client addresses (queries from others are counted in
    ``clients_dropped``); and the sum of ``H``, for the mean entropy that
    :meth:`DomainStats.summary` shows with the other figures (not scored).

The score
    Components, each in [0, 1]:

    * ``info = min(1, mean bits per query / 128)``: 128 bits is 16 bytes of payload;
    * ``carrier``: the share of the domain's bits that came in carrier queries
      (iodine's short polls between data queries do not dilute it), times
      ``min(1, distinct carriers / 5)`` (one or two long random DKIM selectors
      among a site's few short names are not a channel);
    * ``odd`` and ``types``: the shares of queries that are odd, of a tunnel type;
    * ``evidence = min(1, (distinct subdomains - 1) / 9)``: 1 from ten on.

    Then::

        signal = 1 - (1 - 0.5 info) (1 - 0.8 carrier) (1 - 0.5 odd) (1 - 0.3 types)
        score  = evidence * signal                       (at most 0.965)

    What this improves on a plain weighted sum of mean entropy, distinct
    subdomains, high-entropy share, TXT/NULL share and length (lippycat's kind):

    * Information, not entropy: the entropy of a short label says nothing
      (``mail`` has the most that four bytes can have). Length times entropy is
      what a query can carry, and the carrier test wants a long unbroken
      letter-and-digit string, which hyphenated host names, CDN hashes of ten to
      sixteen characters and IP-embedding names are not.
    * Evidence gates instead of adding: a handful of strange names (three
      Netalyzr TXT probes, one DKIM look-up) cannot alert, and many distinct
      ordinary names (a CDN, a blocklist) add nothing by their number alone.
    * Independent signals combine like probabilities (noisy-OR): any can raise
      the score and none is required. Tunnel types alone give at most 0.3 (mail
      servers look up TXT and MX); information alone at most 0.5; an alert needs
      data carried in long random strings or odd bytes.
    * Per registered domain by the Public Suffix List, on raw bytes, and
      mergeable exactly (integer sums, maxima, HyperLogLog registers), so
      hunters' statistics add up at the processor.

    The query rate (``rate``, queries per second between the first and the last
    query, over at least one second) is reported with the components but not
    scored: tunnels can be slow, and resolvers burst.

The threshold, by measurement
    ``DEFAULT_THRESHOLD = 0.7``. tests/common/test_dnstunnel.py computes and
    prints these (``pytest -s -k threshold``); "plain" is a weighted sum of the
    kind above (0.3 entropy/4, 0.2 distinct/50, 0.2 share over 3.5 bits, 0.15
    TXT/NULL share, 0.15 length/50, normalisations chosen there), for comparison:

    =====================================  ============  ===========  =====  =====
    tunnel capture                         domain        q (distinct) score  plain
    =====================================  ============  ===========  =====  =====
    dns/dmachard_iodine                    biillpi.com   12 (12)      0.867  0.667
    dns/dmachard_dnscat2                   biillpi.com   12 (11)      0.927  0.685
    dns/dmachard_dns2tcp                   hsc.fr        22 (22)      0.923  0.792
    dns/elastic_dns-tunnel-iodine          pirate.sea    222 (216)    0.907  0.710
    =====================================  ============  ===========  =====  =====

    Ordinary traffic, 2,236 domains. Every domain of the 11 other captures of
    the corpus that hold DNS: highest ``berkeley.edu`` 0.069 (three Netalyzr TXT
    probes with long names; plain: 0.753, an alert). And a generated resolver
    workload of 20,000 queries (tests/common/dns_workload.py: popular-site-like
    names with ordinary subdomains, regional API names, Akamai and Google-video
    style CDN names with hundreds of distinct subdomains each, 16-hex object
    names, 32-hex CloudFront names, IP-embedding names, DNSBL look-ups,
    DKIM/DMARC/SPF TXT and MX look-ups with SES-style 32-character selectors,
    SRV discovery, long hyphenated corporate host names, UUID device names,
    browser probes, reverse and DNS-SD look-ups): highest 0.527, a site whose
    15 queries include two random DKIM selectors; then 0.500 for UUID device
    names (information alone; plain: 0.829, an alert) and 0.413 for 750
    IP-embedding Akamai names (plain: 0.785, an alert). By score: 1,849 domains
    under 0.1, 219 under 0.2, 128 under 0.3, 29 under 0.4, 8 under 0.5, 3 under
    0.6, none above. The threshold sits 0.17 above the highest ordinary domain
    and 0.17 below the lowest tunnel; the plain sum misses two of the four
    tunnels and alerts on six ordinary domains.

    Known to score as tunnels, because they are: services that ask their
    questions in DNS names, like file-hash reputation look-ups (anti-virus) and
    hash blocklists. The generated family of SHA-1 look-ups scores 0.927;
    expect to allow-list such domains.

Bounds and cost
    At most ``max_domains`` domains (least recently seen evicted first,
    ``domains_evicted``), each of a fixed size: about 1.9 KB measured with
    tracemalloc (the generated workload: 2,209 domains, three clients each,
    caches included). The suffix cache and the per-subdomain measures hold at
    most ``max_cache`` entries each and are emptied together when one is full
    (``cache_flushes``). The suffix cache is keyed by as few labels as decide the
    answer (the chain of labels that rules of the list end with, plus the
    domain's own label), so unique tunnel or CDN labels do not miss it.
    :meth:`TunnelDetector.observe` is :meth:`TunnelDetector.prepare` (what
    depends on the name alone: registered domain and subdomain measures, about 5 to
    8 us per name) then :meth:`TunnelDetector.observe_prepared` (plain adds and
    comparisons on the domain's statistics, about 1.1 us per query); a hunter keeps
    ``prepare``'s answer per distinct question and pays only the second per query
    (the generated workload, on the development VM with a load of 3 on its 2 vCPU).

Across hunters
    A hunter sends :meth:`TunnelDetector.snapshot` with ``reset=True`` in each
    heartbeat (what came since the last one); the processor adds every hunter's
    snapshots into its own detector with :meth:`TunnelDetector.merge_snapshot`
    (which checks them: they come from peers) and scores there. Statistics do not
    fade by themselves: a processor that wants a sliding window keeps one
    detector per period and merges the last few, which is exact.

Counters (:attr:`TunnelDetector.counters`)
    ``queries`` shown, ``scored`` (added to a domain), ``no_domain``,
    ``reverse``, ``local``, ``domains_evicted``, ``cache_flushes``, ``bad_names``.
"""

from __future__ import annotations

import base64
import math
from collections import Counter, OrderedDict
from hashlib import blake2b

from publicsuffixlist import PublicSuffixList

from lc.common.dns import DnsError, name_labels, name_text
from lc.common.errors import ValidationError

__all__ = [
    "DEFAULT_MAX_CLIENTS",
    "DEFAULT_MAX_DOMAINS",
    "DEFAULT_THRESHOLD",
    "TUNNEL_TYPES",
    "DomainStats",
    "TunnelDetector",
    "query_features",
    "registered_domain",
]

DEFAULT_THRESHOLD = 0.7
DEFAULT_MAX_DOMAINS = 10000
DEFAULT_MAX_CLIENTS = 16
DEFAULT_MAX_CACHE = 65536

#: Query types that can carry a large or arbitrary answer.
TUNNEL_TYPES = frozenset((5, 10, 15, 16, 25, 255, *range(65280, 65535)))

# Score parameters (see the module docstring).
INFO_BITS = 128.0
CARRIER_TOKEN = 20
CARRIER_ENTROPY = 3.5
CARRIER_DISTINCT = 5
EVIDENCE_UNIQUE = 10
W_INFO = 0.5
W_CARRIER = 0.8
W_ODD = 0.5
W_TYPES = 0.3

_HLL_P = 8  # distinct subdomains: 256 registers
_HLL_M = 1 << _HLL_P
_CHLL_P = 6  # distinct carrier subdomains: 64 registers
_CHLL_M = 1 << _CHLL_P
_HLL_POW = [2.0**-r for r in range(66)]

# Bytes allowed in an ordinary host name label (after lower-casing): a-z 0-9 - _
_LDH = bytes(range(0x61, 0x7B)) + b"0123456789-_"
# c * log2(c) for every count a 255-byte name can have.
_CLOG = [0.0] + [c * math.log2(c) for c in range(1, 256)]
_SPLIT = bytes.maketrans(b"-_", b"..")


try:  # the C helper behind Counter, without Counter's per-call overhead
    from _collections import _count_elements
except ImportError:  # pragma: no cover - other Pythons

    def _count_elements(mapping: dict[int, int], iterable: bytes) -> None:
        mapping.update(Counter(iterable))


def _entropy(data: bytes) -> float:
    """Shannon entropy of the bytes of ``data``, in bits per byte."""
    n = len(data)
    if n < 2:
        return 0.0
    counts: dict[int, int] = {}
    _count_elements(counts, data)
    clog = _CLOG
    return math.log2(n) - sum([clog[c] for c in counts.values()]) / n


_psl: PublicSuffixList | None = None
# Every suffix of every rule of the list ("com", "amazonaws.com", "*.ck", ...), as
# bytes: a name's registered domain depends only on its labels up to the first
# suffix that no rule ends with, one more for a wildcard, and one for the domain's
# own label. None when publicsuffixlist does not show its rules (then _DEPTH
# labels, one more than the longest rule, are always used).
_RULE_SUFFIXES: frozenset[bytes] | None = None
_DEPTH = 16


def _get_psl() -> PublicSuffixList:
    global _psl, _RULE_SUFFIXES, _DEPTH
    if _psl is None:
        _psl = PublicSuffixList()
        rules = getattr(_psl, "_publicsuffix", None)
        if isinstance(rules, set | frozenset) and all(isinstance(r, str) for r in rules):
            suffixes = set()
            for rule in rules:
                labels = rule.lstrip("!").encode("utf-8", "replace").split(b".")
                suffixes.update(b".".join(labels[-i:]) for i in range(1, len(labels) + 1))
            _RULE_SUFFIXES = frozenset(suffixes)
        else:  # pragma: no cover - another publicsuffixlist
            maxlabel = getattr(_psl, "_maxlabel", None)
            if isinstance(maxlabel, int) and 0 < maxlabel < 16:
                _DEPTH = maxlabel + 1
    return _psl


def _key_depth(labels: tuple[bytes, ...]) -> int:
    """How many of the last labels decide the registered domain (see above)."""
    rs = _RULE_SUFFIXES
    if rs is None:
        return _DEPTH
    k = len(labels)
    d = 0
    suffix = b""
    while d < k:
        cand = labels[k - 1 - d] + (b"." + suffix if suffix else b"")
        if cand not in rs:
            break
        suffix = cand
        d += 1
    if d == 0:
        return 2  # an unlisted TLD counts as a public suffix (the implicit "*" rule)
    return d + (2 if b"*." + suffix in rs else 1)


_shared_cache: dict[bytes, tuple[int, str]] = {}


def registered_domain(name: str) -> tuple[str, str] | None:
    """``(registered domain, subdomain)`` of a name written as :mod:`lc.common.dns`
    writes names, both lower-cased and in that form (the subdomain is ``""`` for
    the registered domain itself): the ECS ``dns.question.registered_domain`` and
    ``subdomain``. None when the name has no registered domain (a public suffix
    itself, a single label, the root).

    Raises :class:`~lc.common.dns.DnsError` for a name that is not in that form.
    Answers are kept per name (a hunter asks for each packet of a transaction), at
    most ``DEFAULT_MAX_CACHE``.
    """
    hit = _domain_cache.get(name, _MISS)
    if hit is not _MISS:
        return hit  # type: ignore[return-value]
    if len(_shared_cache) >= DEFAULT_MAX_CACHE:
        _shared_cache.clear()
    got = _split(name.lower(), _shared_cache)
    if got is None:
        out = None
    else:
        labels, nreg, domain = got
        out = domain, name_text(labels[:-nreg]) if len(labels) > nreg else ""
    if len(_domain_cache) >= DEFAULT_MAX_CACHE:
        _domain_cache.clear()
    _domain_cache[name] = out
    return out


_MISS = object()
_domain_cache: dict[str, tuple[str, str] | None] = {}


def _split(
    lname: str, cache: dict[bytes, tuple[int, str]]
) -> tuple[tuple[bytes, ...], int, str] | None:
    """The labels of a lower-cased name, how many of them the registered domain has
    and its text; None when it has none. ``cache`` maps the last labels to ``(count,
    text)`` (``(0, "")`` for none): the answer depends on no more labels than the
    longest rule of the list has."""
    if "\\" in lname or not lname.isascii():
        labels = name_labels(lname)
    else:
        if lname in (".", ""):
            return None
        labels = tuple(lname.encode("ascii").rstrip(b".").split(b"."))
    return _split_labels(labels, cache)


def _split_labels(
    labels: tuple[bytes, ...] | list[bytes], cache: dict[bytes, tuple[int, str]]
) -> tuple[tuple[bytes, ...] | list[bytes], int, str] | None:
    """:func:`_split` of a name given as its lower-cased labels."""
    if len(labels) < 2:
        return None
    key = b".".join(labels[-_key_depth(labels) :])
    hit = cache.get(key)
    if hit is None:
        reg = _get_psl().privatesuffix(key.decode("ascii", "replace"))
        nreg = 0 if reg is None else reg.count(".") + 1
        hit = cache[key] = (nreg, name_text(labels[-nreg:]) if nreg else "")
    if not hit[0]:
        return None
    return labels, hit[0], hit[1]


def query_features(sub: bytes) -> tuple[int, float, int, int, bool, bool]:
    """``(L, H, token, longest_label, carrier, odd)`` of a lower-cased subdomain
    (labels joined by dots), as defined in the module docstring."""
    labels = sub.split(b".")
    flat = b"".join(labels)
    n = len(flat)
    h = _entropy(flat)
    longest_label = max(map(len, labels))
    tok = max(sub.translate(_SPLIT).split(b"."), key=len)
    token = len(tok)
    odd = bool(flat.translate(None, _LDH))
    carrier = odd
    if not odd and token >= CARRIER_TOKEN and h >= CARRIER_ENTROPY:
        digits = token - len(tok.translate(None, b"0123456789"))
        carrier = 2 <= digits <= token - 2
    return n, h, token, longest_label, carrier, odd


_HLL_SHIFT = 64 - _HLL_P
_HLL_REST = (1 << _HLL_SHIFT) - 1
_CHLL_SHIFT = 64 - _CHLL_P
_CHLL_REST = (1 << _CHLL_SHIFT) - 1

Measure = tuple[int, int, int, bool, bool, int, int, int, int, int]
#: :meth:`TunnelDetector.prepare`: a name's registered domain and subdomain measures.
Prepared = tuple[str, Measure]


def _measure(sub: bytes) -> Measure:
    """What a query adds to its domain's statistics: ``(L, bits in thousandths,
    longest label, carrier, odd, HLL register, rank, carrier-HLL register, rank,
    H in thousandths)``.
    Depends on ``sub`` only, so :class:`TunnelDetector` keeps it for names seen
    again."""
    n, h, _token, longest, carrier, odd = query_features(sub)
    x = int.from_bytes(blake2b(sub, digest_size=8).digest(), "big")
    rank = _HLL_SHIFT - (x & _HLL_REST).bit_length() + 1
    crank = _CHLL_SHIFT - (x & _CHLL_REST).bit_length() + 1
    return (
        n,
        round(n * h * 1000),
        longest,
        carrier,
        odd,
        x >> _HLL_SHIFT,
        rank,
        x >> _CHLL_SHIFT,
        crank,
        round(h * 1000),
    )


def _hll_estimate(regs: bytearray) -> int:
    """Distinct items counted by HyperLogLog registers (linear counting when small)."""
    m = len(regs)
    zeros = regs.count(0)
    if zeros == m:
        return 0
    est = 0.7213 / (1 + 1.079 / m) * m * m / sum([_HLL_POW[r] for r in regs])
    if est <= 2.5 * m and zeros:
        est = m * math.log(m / zeros)
    return max(1, round(est))


class DomainStats:
    """Mergeable statistics of the queries of one registered domain."""

    __slots__ = (
        "carrier_mbits",
        "carriers",
        "chll",
        "clients",
        "clients_dropped",
        "first_ns",
        "hll",
        "last_ns",
        "max_clients",
        "max_label",
        "max_len",
        "odd",
        "queries",
        "sum_len",
        "sum_mbits",
        "sum_mentropy",
        "tunnel_types",
    )

    def __init__(self, max_clients: int = DEFAULT_MAX_CLIENTS) -> None:
        self.queries = 0
        self.hll = bytearray(_HLL_M)
        self.chll = bytearray(_CHLL_M)
        self.sum_len = 0
        self.sum_mentropy = 0
        self.sum_mbits = 0
        self.max_len = 0
        self.max_label = 0
        self.carriers = 0
        self.carrier_mbits = 0
        self.odd = 0
        self.tunnel_types = 0
        self.first_ns = 0
        self.last_ns = 0
        self.max_clients = max_clients
        self.clients: set[str] = set()
        self.clients_dropped = 0

    # --- adding ------------------------------------------------------------------------
    def add(self, sub: bytes, qtype: int, ts_ns: int, client: str | None = None) -> None:
        """Counts one query whose lower-cased subdomain is ``sub``."""
        self.add_features(_measure(sub), qtype in TUNNEL_TYPES, ts_ns, client)

    def add_features(
        self,
        f: Measure,
        tunnel_type: bool,
        ts_ns: int,
        client: str | None,
    ) -> None:
        """Counts one query given :func:`_measure` of its subdomain and whether its
        type is one of :data:`TUNNEL_TYPES`."""
        n, mbits, longest, carrier, odd, idx, rank, cidx, crank, mentropy = f
        self.queries += 1
        if rank > self.hll[idx]:
            self.hll[idx] = rank
        self.sum_len += n
        self.sum_mentropy += mentropy
        self.sum_mbits += mbits
        if n > self.max_len:
            self.max_len = n
        if longest > self.max_label:
            self.max_label = longest
        if carrier:
            self.carriers += 1
            self.carrier_mbits += mbits
            if crank > self.chll[cidx]:
                self.chll[cidx] = crank
        if odd:
            self.odd += 1
        if tunnel_type:
            self.tunnel_types += 1
        if self.queries == 1 or ts_ns < self.first_ns:
            self.first_ns = ts_ns
        if ts_ns > self.last_ns:
            self.last_ns = ts_ns
        if client is not None and client not in self.clients:
            if len(self.clients) < self.max_clients:
                self.clients.add(client)
            else:
                self.clients_dropped += 1

    def merge(self, other: DomainStats) -> None:
        """Adds ``other``'s queries to these (both are for the same domain)."""
        if not other.queries:
            return
        if not self.queries or other.first_ns < self.first_ns:
            self.first_ns = other.first_ns
        self.queries += other.queries
        self.hll = bytearray(map(max, self.hll, other.hll))
        self.chll = bytearray(map(max, self.chll, other.chll))
        self.sum_len += other.sum_len
        self.sum_mentropy += other.sum_mentropy
        self.sum_mbits += other.sum_mbits
        self.max_len = max(self.max_len, other.max_len)
        self.max_label = max(self.max_label, other.max_label)
        self.carriers += other.carriers
        self.carrier_mbits += other.carrier_mbits
        self.odd += other.odd
        self.tunnel_types += other.tunnel_types
        self.last_ns = max(self.last_ns, other.last_ns)
        self.clients_dropped += other.clients_dropped
        for c in sorted(other.clients - self.clients):
            if len(self.clients) < self.max_clients:
                self.clients.add(c)
            else:
                self.clients_dropped += 1

    # --- reading -----------------------------------------------------------------------
    @property
    def unique(self) -> int:
        """Distinct subdomains seen (HyperLogLog estimate; exact-ish when small), at
        most the queries counted (linear counting overestimates a few items that
        fell in distinct registers: 32 for 30)."""
        return min(self.queries, _hll_estimate(self.hll))

    @property
    def unique_carriers(self) -> int:
        """Distinct carrier subdomains seen (a smaller HyperLogLog), at most the
        carrier queries counted."""
        return min(self.carriers, _hll_estimate(self.chll))

    def components(self) -> dict[str, float]:
        """The score's inputs, each in [0, 1], and ``rate`` (queries per second)."""
        q = self.queries
        if not q:
            return dict.fromkeys(("info", "carrier", "odd", "types", "evidence", "rate"), 0.0)
        span = (self.last_ns - self.first_ns) / 1e9
        return {
            "info": min(1.0, self.sum_mbits / 1000 / q / INFO_BITS),
            "carrier": (
                self.carrier_mbits
                / self.sum_mbits
                * min(1.0, self.unique_carriers / CARRIER_DISTINCT)
                if self.sum_mbits
                else 0.0
            ),
            "odd": self.odd / q,
            "types": self.tunnel_types / q,
            "evidence": min(1.0, max(0, self.unique - 1) / (EVIDENCE_UNIQUE - 1)),
            "rate": q / max(span, 1.0),
        }

    def score(self) -> float:
        """The tunneling score in [0, 1] (formula in the module docstring)."""
        c = self.components()
        signal = 1 - (
            (1 - W_INFO * c["info"])
            * (1 - W_CARRIER * c["carrier"])
            * (1 - W_ODD * c["odd"])
            * (1 - W_TYPES * c["types"])
        )
        return round(c["evidence"] * signal, 6)

    def summary(self) -> dict[str, object]:
        """What an alert shows besides the components: the statistics as figures."""
        q = max(1, self.queries)
        return {
            "queries": self.queries,
            "unique_subdomains": self.unique,
            "unique_carriers": self.unique_carriers,
            "mean_length": round(self.sum_len / q, 1),
            "max_length": self.max_len,
            "max_label": self.max_label,
            "mean_entropy": round(self.sum_mentropy / 1000 / q, 3),
            "tunnel_types": self.tunnel_types,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "clients": sorted(self.clients),
            "clients_dropped": self.clients_dropped,
        }

    # --- compact form ------------------------------------------------------------------
    def to_dict(self) -> dict[str, object]:
        """A JSON-able form (the HLL as base64); :meth:`from_dict` reads it back."""
        return {
            "q": self.queries,
            "hll": base64.b64encode(bytes(self.hll)).decode("ascii"),
            "chll": base64.b64encode(bytes(self.chll)).decode("ascii"),
            "len": self.sum_len,
            "mentropy": self.sum_mentropy,
            "mbits": self.sum_mbits,
            "max_len": self.max_len,
            "max_label": self.max_label,
            "carriers": self.carriers,
            "carrier_mbits": self.carrier_mbits,
            "odd": self.odd,
            "types": self.tunnel_types,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "clients": sorted(self.clients),
            "clients_dropped": self.clients_dropped,
        }

    @classmethod
    def from_dict(cls, d: dict[str, object], max_clients: int = DEFAULT_MAX_CLIENTS) -> DomainStats:
        """Reads :meth:`to_dict`'s form (from a peer: every field is checked).

        Raises :class:`~lc.common.errors.ValidationError` when a field is missing
        or out of range.
        """
        try:
            s = cls(max_clients)
            for attr, key, m in (("hll", "hll", _HLL_M), ("chll", "chll", _CHLL_M)):
                regs = base64.b64decode(str(d[key]), validate=True)
                if len(regs) != m or max(regs) > 66 - m.bit_length():  # 64 - p + 1
                    raise ValueError(f"bad {key} registers")
                setattr(s, attr, bytearray(regs))
            for attr, key in (
                ("queries", "q"),
                ("sum_len", "len"),
                ("sum_mentropy", "mentropy"),
                ("max_len", "max_len"),
                ("max_label", "max_label"),
                ("carriers", "carriers"),
                ("odd", "odd"),
                ("tunnel_types", "types"),
                ("first_ns", "first_ns"),
                ("last_ns", "last_ns"),
                ("clients_dropped", "clients_dropped"),
                ("sum_mbits", "mbits"),
                ("carrier_mbits", "carrier_mbits"),
            ):
                value = d[key]
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ValueError(f"{key} is not a non-negative integer")
                setattr(s, attr, value)
            if max(s.carriers, s.odd, s.tunnel_types) > s.queries:
                raise ValueError("a share count exceeds the query count")
            if s.carrier_mbits > s.sum_mbits:
                raise ValueError("carrier_mbits exceeds mbits")
            clients = d["clients"]
            if not isinstance(clients, list) or not all(isinstance(c, str) for c in clients):
                raise ValueError("clients is not a list of strings")
            s.clients = set(clients[:max_clients])
            s.clients_dropped += max(0, len(clients) - max_clients)
        except (KeyError, TypeError, ValueError) as e:
            raise ValidationError(f"bad DNS tunneling statistics: {e}") from None
        return s


class TunnelDetector:
    """Tunneling statistics over all the DNS queries shown to it, per registered
    domain, bounded (see the module docstring)."""

    def __init__(
        self,
        max_domains: int = DEFAULT_MAX_DOMAINS,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        max_cache: int = DEFAULT_MAX_CACHE,
    ) -> None:
        for name, value in (
            ("max_domains", max_domains),
            ("max_clients", max_clients),
            ("max_cache", max_cache),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValidationError(f"{name} must be a positive integer, got {value!r}")
        self.max_domains = max_domains
        self.max_clients = max_clients
        self.max_cache = max_cache
        self.domains: OrderedDict[str, DomainStats] = OrderedDict()
        self._counters: dict[str, int] = dict.fromkeys(
            (
                "queries",
                "scored",
                "no_domain",
                "reverse",
                "local",
                "domains_evicted",
                "cache_flushes",
                "bad_names",
            ),
            0,
        )
        self._cache: dict[bytes, tuple[int, str]] = {}
        # subdomain -> _measure(subdomain): ordinary names come back again and again
        self._measured: dict[bytes, Measure] = {}
        self._queries = self._scored = 0  # not yet in counters (see counters)
        _get_psl()

    def observe(self, qname: str, qtype: int, ts_ns: int, client: str | None = None) -> str | None:
        """Counts one query (call it for queries, QR=0, not for their responses).

        ``qname`` is written as :mod:`lc.common.dns` writes names; ``client`` is the
        querier's address as text (or None). Returns the registered domain it was
        counted under, or None when it was not (counted by reason). Never raises.
        Same as :meth:`observe_prepared` of :meth:`prepare`.
        """
        return self.observe_prepared(self.prepare(qname), qtype in TUNNEL_TYPES, ts_ns, client)

    def prepare(self, qname: str, labels: list[bytes] | None = None) -> Prepared | str:
        """What counting a query for ``qname`` needs that depends on the name alone:
        ``(registered domain, measures of its subdomain)``, or the name of the counter
        that a query for it goes to instead (``reverse``, ``local``, ``no_domain``,
        ``bad_names``). A caller that sees the same names again (a hunter's name
        cache) keeps it and calls :meth:`observe_prepared` per query. ``labels``:
        the name's labels lower-cased, when the caller has them (saves reading them
        back from the text). Never raises."""
        lname = qname.lower()
        if lname.endswith((".arpa", ".arpa.")) or lname == "arpa":
            return "reverse"
        if lname.endswith((".local", ".local.")):
            return "local"
        cache = self._cache
        if len(cache) >= self.max_cache or len(self._measured) >= self.max_cache:
            cache.clear()
            self._measured.clear()
            self._counters["cache_flushes"] += 1
        try:
            got = _split(lname, cache) if labels is None else _split_labels(labels, cache)
        except DnsError:
            return "bad_names"
        if got is None:
            return "no_domain"
        labels, nreg, domain = got
        sub = b".".join(labels[:-nreg])
        f = self._measured.get(sub)
        if f is None:
            f = self._measured[sub] = _measure(sub)
        return domain, f

    @property
    def counters(self) -> dict[str, int]:
        """The detector's counters (module docstring)."""
        c = self._counters
        if self._queries:
            c["queries"] += self._queries
            self._queries = 0
        if self._scored:
            c["scored"] += self._scored
            self._scored = 0
        return c

    def observe_prepared(
        self, p: Prepared | str, tunnel_type: bool, ts_ns: int, client: str | None = None
    ) -> str | None:
        """Counts one query given :meth:`prepare` of its name and whether its type is
        one of :data:`TUNNEL_TYPES`; returns what :meth:`observe` returns. The hot
        path of a hunter (once per query it sees): :meth:`DomainStats.add_features`
        inline, the two counters every query moves kept as plain ints."""
        self._queries += 1
        if type(p) is str:
            self._counters[p] += 1
            return None
        domain, f = p
        domains = self.domains
        st = domains.get(domain)
        if st is None:
            if len(domains) >= self.max_domains:
                domains.popitem(last=False)
                self._counters["domains_evicted"] += 1
            st = domains[domain] = DomainStats(self.max_clients)
            st.first_ns = st.last_ns = ts_ns
        else:
            domains.move_to_end(domain)
        self._scored += 1
        n, mbits, longest, carrier, odd, idx, rank, cidx, crank, mentropy = f
        st.queries += 1
        hll = st.hll
        if rank > hll[idx]:
            hll[idx] = rank
        st.sum_len += n
        st.sum_mentropy += mentropy
        st.sum_mbits += mbits
        if n > st.max_len:
            st.max_len = n
        if longest > st.max_label:
            st.max_label = longest
        if carrier or odd or tunnel_type:  # (the few)
            if carrier:
                st.carriers += 1
                st.carrier_mbits += mbits
                if crank > st.chll[cidx]:
                    st.chll[cidx] = crank
            if odd:
                st.odd += 1
            if tunnel_type:
                st.tunnel_types += 1
        if ts_ns > st.last_ns:
            st.last_ns = ts_ns
        elif ts_ns < st.first_ns:
            st.first_ns = ts_ns
        if client is not None:
            clients = st.clients
            if client not in clients:
                if len(clients) < st.max_clients:
                    clients.add(client)
                else:
                    st.clients_dropped += 1
        return domain

    def score(self, domain: str) -> float:
        """The score of ``domain`` (0.0 when it has no statistics)."""
        stats = self.domains.get(domain)
        return stats.score() if stats is not None else 0.0

    def top(self, n: int = 10) -> list[tuple[str, float]]:
        """The ``n`` highest-scoring domains, highest first."""
        scored = ((d, s.score()) for d, s in self.domains.items())
        return sorted(scored, key=lambda x: (-x[1], x[0]))[:n]

    def suspects(self, threshold: float = DEFAULT_THRESHOLD) -> list[tuple[str, float]]:
        """Every domain scoring at least ``threshold``, highest first."""
        return [(d, s) for d, s in self.top(len(self.domains)) if s >= threshold]

    def snapshot(self, reset: bool = False) -> dict[str, dict[str, object]]:
        """Every domain's statistics in compact form (for the heartbeat); with
        ``reset`` the detector starts afresh, so each snapshot holds what came
        since the last one and the receiver adds them up."""
        out = {d: s.to_dict() for d, s in self.domains.items()}
        if reset:
            self.domains.clear()
        return out

    def merge_snapshot(self, snapshot: dict[str, dict[str, object]]) -> None:
        """Adds a snapshot (e.g. from a hunter) to these statistics. Raises
        :class:`~lc.common.errors.ValidationError` for a malformed one (nothing is
        added then)."""
        parsed = [(str(d), DomainStats.from_dict(s, self.max_clients)) for d, s in snapshot.items()]
        for domain, stats in parsed:
            self.merge_domain(domain, stats)

    def merge_domain(self, domain: str, stats: DomainStats) -> None:
        """Adds one domain's statistics, evicting the least recent when full."""
        mine = self.domains.get(domain)
        if mine is None:
            if len(self.domains) >= self.max_domains:
                self.domains.popitem(last=False)
                self._counters["domains_evicted"] += 1
            fresh = DomainStats(self.max_clients)
            fresh.merge(stats)
            self.domains[domain] = fresh
        else:
            mine.merge(stats)
            self.domains.move_to_end(domain)
