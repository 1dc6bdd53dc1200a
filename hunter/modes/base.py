"""The mode interface, what a mode registers, and its command-line options.

A **mode** decides what a hunter forwards. The hunter's pipeline (capture -> mode ->
batcher -> outbox -> uplink, :mod:`lc.hunter.run`) calls it per chunk of packets,
never per packet, and knows nothing else about it:

* :meth:`Mode.kernel_filter` -- the mode's part of the kernel BPF for a filter set
  (ANDed with the user's ``-f`` and the exclusion of the processor's own traffic);
* :meth:`Mode.apply` -- swap in a compiled filter set (may raise LcError before
  changing anything, e.g. a BPF filter libpcap refuses);
* :meth:`Mode.process` -- one chunk of captured packets in, a :class:`Forward` out:
  the packets to forward (this chunk's and any it released, in order), their
  metadata by index, session events, and extras for the processor (DNS tunneling
  statistics, TLS key log lines: :func:`with_extras`);
* :meth:`Mode.tick` -- time passes without packets (live capture, wall clock);
* :meth:`Mode.finish` -- the end of the capture: what is still held is decided;
* :meth:`Mode.counters` -- its figures for the heartbeat (``counters.mode``), its
  packets not forwarded by reason (``counters.dropped``: ``filtered`` is packets no
  filter wanted, not a loss; anything else is) and a fragment for the summary line.

A :class:`ModeSpec` registers a mode (:mod:`lc.hunter.modes`): its name (the
``lc hunt NAME`` subcommand), the filter types it applies (its registration
capabilities), its default no-filter policy, its config dataclass and a factory.
Config fields declared with :func:`option` become the subcommand's flags; their
``parse`` turns the flag's text into the field's value and raises ValueError with a
message that follows the flag's name (``--sip-port 'x': a comma-separated list of
ports``), and the config's ``validate()`` checks the whole.
"""

from __future__ import annotations

import dataclasses
import inspect
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from lc.common.errors import ValidationError
from lc.common.filters import FilterSet
from lc.hunter.capture import Chunk
from lc.proto import lc_pb2

__all__ = [
    "EMPTY",
    "MATCH_NOTHING",
    "CliOption",
    "Forward",
    "Mode",
    "ModeContext",
    "ModeCounters",
    "ModeSpec",
    "cli_options",
    "megabytes",
    "option",
    "port_list",
    "port_range",
    "positive_int",
    "seconds_ns",
    "with_extras",
]

MATCH_NOTHING = "less 1"  # no packet is 1 byte long or less


class Forward(NamedTuple):
    """What a mode hands on: packets, their metadata by index, events, and extras."""

    chunk: Chunk
    meta: dict[int, Any]  # PacketMeta (or, sparse, a list of filter ids) per index
    events: list[lc_pb2.Event]
    # Whatever else the mode sends the processor on the next batch, as (kind, items)
    # pairs; the kinds are the batcher's (lc.hunter.batcher.EXTRA_KINDS), e.g.
    # ("tunnel", [DnsTunnelStats]) from the DNS mode, ("keylog", [key log lines]) from
    # the HTTP mode's --tls-keylog. See with_extras().
    extras: tuple[tuple[str, list], ...] = ()


def with_extras(fwd: Forward, kind: str, items: list) -> Forward:
    """``fwd`` with ``items`` of ``kind`` added to its extras (``fwd`` itself if none)."""
    if not items:
        return fwd
    return fwd._replace(extras=(*fwd.extras, (kind, items)))


def _empty_chunk() -> Chunk:
    return Chunk(array("q"), array("I"), array("I"), b"", array("H"))


EMPTY = Forward(_empty_chunk(), {}, [])


@dataclass(slots=True)
class ModeCounters:
    figures: dict[str, int]  # HunterCounters.mode
    dropped: dict[str, int]  # merged into HunterCounters.dropped; "filtered" is not a loss
    summary: str = ""  # appended to the summary line after "; "
    # Figures that are current levels (sessions held now, bytes buffered), not running
    # totals: metrics expose them as gauges, every other figure as a counter.
    levels: frozenset[str] = frozenset()


@dataclass(slots=True)
class ModeContext:
    """What the hunter tells a mode when it makes one."""

    interfaces: list[tuple[str, int]]  # (name, linktype) by interface index; may grow
    policy: str = "deny"  # "allow" or "deny": what to forward while no filter applies
    events: str = "captured"  # "captured": events of captured sessions; "all": every one


class Mode:
    """The interface every mode implements (see the module docstring)."""

    def kernel_filter(self, compiled: FilterSet) -> str:
        """The mode's kernel BPF for ``compiled``: "" for everything, MATCH_NOTHING."""
        raise NotImplementedError

    def apply(self, compiled: FilterSet) -> None:
        raise NotImplementedError

    def process(self, chunk: Chunk) -> Forward:
        raise NotImplementedError

    def tick(self, now_ns: int) -> Forward:
        return EMPTY

    def finish(self) -> Forward:
        return EMPTY

    def counters(self) -> ModeCounters:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class ModeSpec:
    name: str  # ``lc hunt NAME``; "generic" is ``lc hunt`` itself
    help: str  # the subcommand's help text
    filter_types: tuple[str, ...]
    default_policy: str  # "allow" or "deny"
    config: type  # a dataclass; fields made with option() are flags; validate() checks
    factory: Callable[[ModeContext, Any], Mode]


# -- options -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CliOption:
    flag: str  # "--sip-port"
    default: str  # as typed on the command line
    parse: Callable[[str], Any]
    help: str
    metavar: str | None = None
    switch: bool = False  # a flag without a value: "yes" when given, else ``default``


def option(
    flag: str,
    default: str,
    parse: Callable[[str], Any],
    help: str,
    metavar: str | None = None,
    switch: bool = False,
) -> Any:
    """A config field that is also a command-line flag (see the module docstring);
    ``switch``: the flag takes no value (its text is "yes" when given)."""
    opt = CliOption(flag, default, parse, help, metavar, switch)
    return field(default_factory=lambda: parse(default), metadata={"cli": opt})


def cli_options(config: type) -> list[tuple[str, CliOption]]:
    """(field name, option) of a config dataclass's flags, in declaration order: its
    own first, then those it inherits (e.g. the session bounds of
    :func:`lc.hunter.modes.localfilters.session_bounds`)."""
    own = inspect.get_annotations(config)
    flags = [(f.name, f.metadata["cli"]) for f in dataclasses.fields(config) if "cli" in f.metadata]
    return [x for x in flags if x[0] in own] + [x for x in flags if x[0] not in own]


def parse_options(config: type, values: dict[str, str]) -> Any:
    """The config built from flag texts by field name; ValidationError names the flag."""
    kwargs = {}
    for name, opt in cli_options(config):
        if name not in values:
            continue
        try:
            kwargs[name] = opt.parse(values[name])
        except ValueError as e:
            raise ValidationError(f"{opt.flag} {e}") from None
    cfg = config(**kwargs)
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        validate()
    return cfg


def port_list(text: str) -> frozenset[int]:
    try:
        ports = frozenset(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise ValueError(f"{text!r}: a comma-separated list of ports") from None
    if not ports or not all(0 < p < 65536 for p in ports):
        raise ValueError(f"{text!r}: ports are 1-65535")
    return ports


def port_range(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    try:
        a, b = int(lo), int(hi)
    except ValueError:
        raise ValueError(f"{text!r}: give LOW-HIGH, e.g. 10000-32768") from None
    if not sep or not 0 < a <= b < 65536:
        raise ValueError(f"{text!r}: give LOW-HIGH with 1 <= LOW <= HIGH <= 65535")
    return a, b


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise ValueError(f"{text!r}: a whole number") from None
    if v < 1:
        raise ValueError("must be at least 1")
    return v


def megabytes(text: str) -> int:
    """MB on the command line, bytes in the config."""
    return positive_int(text) * 1024 * 1024


def seconds_ns(text: str) -> int:
    """Seconds on the command line, nanoseconds in the config."""
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{text!r}: a number of seconds") from None
    if not v > 0 or v == float("inf"):
        raise ValueError("must be positive")
    return int(v * 1e9)
