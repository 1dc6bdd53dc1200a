"""A generated resolver workload of ordinary DNS queries, for the tunneling threshold.

Deterministic (seeded). Names are built from a word list written here (no data
set is downloaded), shaped like what a resolver of an office or a small provider
sees; each family below is there because it is a known way for ordinary traffic
to look like a tunnel:

* popular-site-like domains (two words, many TLDs and second-level suffixes) with
  ordinary subdomains (www, mail, api, cdn, static, login...), and regional names
  (``eu-west-1.api``, ``fra1.cdn``);
* CDN names with thousands of distinct random-looking subdomains under one
  registered domain: Akamai-style ``e12345.dscx``, Google-video-style
  ``rr3---sn-5hne6nzk``, tracking ids ``x8h2k3j4.trk``, 16-hex object names;
* 32-character hashed bucket names under object stores and CDNs that are public
  suffixes (``<hash>.cloudfront.net``: the PSL makes each its own domain);
* IP-embedding names (``ec2-1-2-3-4``, ``a23-45-67-89.deploy.static``), DNSBL
  look-ups of reversed IPv4 addresses under one blocklist domain;
* mail-server look-ups: MX, TXT (SPF), ``_dmarc`` TXT, ``selectorN._domainkey`` TXT;
* service discovery: ``_ldap._tcp.dc._msdcs`` SRV, ``_sip._udp`` SRV, HTTPS;
* long hyphenated corporate host names (``jenkins-build-agent-07.ci``);
* browser probes: random single labels with a search domain appended;
* device ids: UUIDs under one IoT domain; long random DKIM selectors (SES style);
* reverse look-ups (PTR under in-addr.arpa and ip6.arpa) and DNS-SD names under
  ``local`` (spaces, brackets, UTF-8).

:func:`benign_tunnels` is apart: services that really do carry data in names
(file-hash reputation look-ups under one domain), which score as tunnels.
"""

from __future__ import annotations

import random
import string

WORDS = """
able acme active aero alpha amber apex apple arrow atlas aurora autumn axis azure
badge baker bamboo banner basic beacon bear berry beta birch bison black blade blaze
bloom blue bold bolt boston brave breeze bridge bright brook buffalo cabin cactus
camel candle canyon capital carbon cargo castle cedar central chase cherry chess
cinema circle citrus city civic clear cliff cloud clover coast cobalt comet compass
coral corner cosmos cotton country craft crane crest crown crystal cube cyber daily
dawn delta desert design diamond digital direct dolphin dragon dream drift eagle
earth east echo eclipse edge elite ember emerald empire energy epic equinox falcon
farm fast fern field fire first flag flash fleet flint flow focus forest fortune
forum fox fresh frontier frost fusion galaxy garden gate gem giant glacier global
gold grand granite green grid grove guardian harbor harmony harvest hawk heart
helix heritage hero highland hill horizon hub hunter icon impact indigo infinity
inland iron island ivory jade jet journal jungle jupiter karma keystone kinetic king
lake land laser leaf legacy legend liberty light lime linear lion logic lotus lucky
lunar magnet main maple marble marine market maven meadow media mega meridian metro
midway mint mirror mission modern momentum monarch moon mosaic motion mountain
nation native nature navy nebula neon net nexus noble north nova oak oasis ocean
olive omega onyx open optic orange orbit origin pacific palm panda paper park peak
pearl pepper phoenix pilot pine pioneer pixel planet platinum plaza point polar
portal prairie prime prism pulse pure quantum quest radiant rainbow rapid raven
ready red reef river rock rocket royal ruby rush safari sage sail salt sapphire
saturn scout sea sector shadow shore sierra signal silver simple sky smart snow
solar solid sonic south spark sphere spirit spring spruce square star steel stone
storm stream summit sun sunset swift table tango terra thunder tide tiger timber
titan torch tower trail trend tribe trinity tropic true tulip tundra twin ultra
union unity urban valley vanguard vector velvet venture vertex victory village
vision vista vital vivid voyage wave west whale wild willow wind wing winter wise
wolf wonder world yellow zen zenith zephyr zinc zone
""".split()  # noqa: SIM905 - a word list reads best as text

TLDS = [
    "com", "com", "com", "com", "net", "org", "io", "co", "de", "fr", "nl", "it", "es",
    "co.uk", "org.uk", "com.au", "co.jp", "com.br", "ca", "ch", "se", "pl", "info",
    "app", "dev", "tech", "cloud", "us", "eu",
]  # fmt: skip
SUBS = [
    "www", "www", "www", "mail", "api", "cdn", "static", "img", "images", "m", "login",
    "auth", "accounts", "docs", "blog", "shop", "store", "support", "status", "help",
    "mx1", "mx2", "ns1", "ns2", "smtp", "imap", "vpn", "portal", "app", "apps", "dev",
    "staging", "beta", "assets", "media", "video", "news", "search", "maps", "files",
    "upload", "sso", "id", "my", "secure", "pay", "checkout", "events", "metrics",
    "telemetry", "analytics", "ads", "push", "updates", "download", "edge", "gw",
    "webmail", "autodiscover", "calendar", "chat", "community", "careers", "partners",
]  # fmt: skip
REGIONS = ["eu-west-1", "us-east-1", "us-west-2", "ap-southeast-1", "fra1", "ams3", "nyc1", "sfo2"]
ENVS = ["prod", "staging", "dev", "qa", "test"]
QTYPES = [1] * 6 + [28] * 3 + [65]  # A, AAAA, HTTPS
# DNS-SD instance names as devices announce them (spaces, brackets, UTF-8).
MDNS = [
    "Living Room TV",
    "HP LaserJet 4250 [A1B2C3]",
    "Kitchen speaker",
    "Büro Drucker",
    "Meeting Room 2",
]


def _rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def ordinary_workload(queries: int = 20000, seed: int = 1) -> list[tuple[str, int]]:
    """``(qname, qtype)`` of ``queries`` ordinary queries (see the module docstring)."""
    rng = random.Random(seed)
    sites = sorted(
        {f"{rng.choice(WORDS)}{rng.choice(WORDS)}.{rng.choice(TLDS)}" for _ in range(1200)}
    )
    corp = "northwind-example.com"
    teams = ["ci", "build", "data", "web", "infra", "ml", "payments", "search"]
    apps = [
        "jenkins-build-agent", "kafka-broker", "postgres-replica", "redis-cache",
        "api-gateway", "elastic-search-node", "grafana-dashboard", "prometheus-server",
        "nginx-ingress",
    ]  # fmt: skip
    services = ["_ldap._tcp.dc._msdcs", "_kerberos._tcp", "_sip._udp", "_xmpp-client._tcp"]
    alnum = string.ascii_lowercase + string.digits
    hexd = "0123456789abcdef"

    def octet(lo: int = 1, hi: int = 255) -> int:
        return rng.randrange(lo, hi)

    def ip4(sep: str) -> str:
        return sep.join(str(octet()) for _ in range(4))

    def regional() -> str:
        return f"{rng.choice(REGIONS)}.{rng.choice(['api', 'cdn', 'storage'])}.{rng.choice(sites)}"

    def uuid() -> str:
        h = _rand(rng, hexd, 32)
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def corp_host() -> str:
        host = f"{rng.choice(apps)}-{rng.choice(ENVS)}-{rng.randrange(1, 40):02d}"
        return f"{host}.{rng.choice(teams)}.{corp}"

    families = [
        # (weight, () -> (qname, qtype))
        (40, lambda: (f"{rng.choice(SUBS)}.{rng.choice(sites)}", rng.choice(QTYPES))),
        (6, lambda: (rng.choice(sites), rng.choice(QTYPES))),
        (4, lambda: (regional(), 1)),
        (
            5,
            lambda: (
                f"e{rng.randrange(10000, 99999)}.dsc{rng.choice('abcdefg')}.akamaiedge.net",
                1,
            ),
        ),
        (4, lambda: (f"a{ip4('-')}.deploy.static.akamaitechnologies.com", 1)),
        (5, lambda: (f"rr{rng.randrange(1, 9)}---sn-{_rand(rng, alnum, 8)}.googlevideo.com", 1)),
        (3, lambda: (f"{_rand(rng, alnum, 8)}.trk.adnetwork-{rng.choice(['one', 'two'])}.com", 1)),
        (3, lambda: (f"obj-{_rand(rng, hexd, 16)}.static.{rng.choice(sites[:30])}", 1)),
        (3, lambda: (f"{_rand(rng, hexd, 32)}.cloudfront.net", 1)),
        (2, lambda: (f"{_rand(rng, alnum, 24)}.blob.core.windows.net", 1)),
        (3, lambda: (f"ec2-{ip4('-')}.compute-1.amazonaws.com", 1)),
        (4, lambda: (f"{ip4('.')}.zen.spamhaus.org", 1)),
        (3, lambda: (rng.choice(sites), rng.choice([15, 16]))),
        (2, lambda: (f"_dmarc.{rng.choice(sites)}", 16)),
        (2, lambda: (f"selector{rng.randrange(1, 3)}._domainkey.{rng.choice(sites)}", 16)),
        (2, lambda: (f"{rng.choice(services)}.{corp}", 33)),
        (4, lambda: (corp_host(), rng.choice([1, 28]))),
        (1, lambda: (f"{_rand(rng, string.ascii_lowercase, rng.randrange(7, 16))}.corp.{corp}", 1)),
        (2, lambda: (f"{octet()}.{octet(0)}.168.192.in-addr.arpa", 12)),
        (1, lambda: (".".join(_rand(rng, hexd, 32)) + ".ip6.arpa", 12)),
        (2, lambda: (f"{uuid()}.devices.iot-{rng.choice(['one', 'two'])}.com", 1)),
        (1, lambda: (f"{_rand(rng, alnum, 32)}._domainkey.{rng.choice(sites)}", 16)),
        (
            1,
            lambda: (
                f"{rng.choice(MDNS)}._{rng.choice(['ipp', 'googlecast', 'airplay'])}._tcp.local",
                16,
            ),
        ),
    ]
    weights = [w for w, _ in families]
    gens = [g for _, g in families]
    out = []
    for _ in range(queries):
        out.append(rng.choices(gens, weights)[0]())
    return out


def benign_tunnels(queries: int = 2000, seed: int = 2) -> list[tuple[str, int]]:
    """File-hash reputation look-ups (SHA-1 in hex, split in two labels) under one
    domain: ordinary for the software that makes them, and a tunnel by construction."""
    rng = random.Random(seed)
    out = []
    for _ in range(queries):
        h = _rand(rng, "0123456789abcdef", 40)
        out.append((f"{h[:20]}.{h[20:]}.v2.fhash-reputation.example", 16))
    return out
