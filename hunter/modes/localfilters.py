"""What the connection modes' configurations share: local filters given as flags, and
the bounds of the session engine.

**Local filters.** ``lc hunt http --host '*.example.org'`` or ``lc hunt email
--sender a@b.example`` are filters the hunter holds beside the ones the processor
pushes (reported at registration: ``lc show hunter``). A config declares each flag with
:func:`local_filter_option` (a comma-separated list of patterns of one filter type,
each validated as the flag is read: a bad one is refused naming the flag, exit 3), and
:func:`local_filters` turns a config's flags into filters, in declaration order, with
ids ``local:<flag>:<n>`` (``local:host:2``: the second ``--host`` pattern) and
description ``local``.

**Session bounds.** :func:`session_bounds` makes the base config of a mode on the
session engine: how many sessions are followed, how many packets and bytes are held
while undecided, and its idle and decide timeouts, with the mode's own flag names
(``--max-connections``/``--conn-*`` for a connection, ``--max-sessions``/
``--session-*`` for a mail session) and defaults, and :meth:`limits` for the engine.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from lc.common.errors import ValidationError
from lc.common.filters import Filter, validate_filter
from lc.hunter.modes.base import CliOption, megabytes, option, positive_int, seconds_ns
from lc.hunter.session import SessionLimits

__all__ = ["GRACE_NS", "local_filter_option", "local_filters", "session_bounds"]

#: How long a session is followed after it ends (late ACKs, retransmissions).
GRACE_NS = 2 * 10**9


def _patterns(type_: str) -> Any:
    """A flag's parser: comma-separated patterns of ``type_``, each validated (and
    normalised); ValueError names the pattern and the problem."""

    def parse(text: str) -> tuple[str, ...]:
        out = []
        for pattern in (p.strip() for p in text.split(",")):
            if not pattern:
                continue
            try:
                f = validate_filter(Filter(id="local", type=type_, pattern=pattern))
            except ValidationError as e:
                raise ValueError(f"{pattern!r}: {e}") from None
            out.append(f.pattern)
        if not out:
            # `--command ''` (or ','): the user meant some filter, and none would be held
            raise ValueError(f"{text!r}: no pattern given (a comma-separated list of {type_})")
        return tuple(out)

    return parse


def local_filter_option(flag: str, type_: str, help: str, metavar: str) -> Any:
    """A config field for the local filter flag ``flag`` (patterns of ``type_``)."""
    opt = CliOption(flag, "", _patterns(type_), help, metavar)
    return field(default_factory=tuple, metadata={"cli": opt, "local_filter": type_})


def local_filters(cfg: object) -> list[Filter]:
    """The filters of a config's local filter flags (see the module docstring)."""
    out: list[Filter] = []
    for f in dataclasses.fields(cfg):  # type: ignore[arg-type]
        type_ = f.metadata.get("local_filter")
        if type_ is None:
            continue
        name = f.metadata["cli"].flag.lstrip("-")
        for i, pattern in enumerate(getattr(cfg, f.name), 1):
            out.append(
                Filter(id=f"local:{name}:{i}", type=type_, pattern=pattern, description="local")
            )
    return out


def session_bounds(
    noun: str,
    flags: tuple[str, str, str, str, str],
    defaults: tuple[str, str, str, str, str],
) -> type:
    """The base config of a mode on the session engine: its five bounds as flags,
    ``flags`` and ``defaults`` in this order: sessions followed at once, packets held
    per undecided one, MB held in all, idle timeout (s), decide timeout (s)."""
    many, packets, mb, idle, decide = flags

    @dataclass(slots=True)
    class SessionBounds:
        max_sessions: int = option(
            many, defaults[0], positive_int, f"{noun.capitalize()}s followed at once.", "N"
        )
        max_held_packets: int = option(
            packets, defaults[1], positive_int, f"Packets held per undecided {noun}.", "N"
        )
        max_buffer_bytes: int = option(
            mb, defaults[2], megabytes, "Memory for held packets, over all.", "MB"
        )
        idle_timeout_ns: int = option(
            idle, defaults[3], seconds_ns, f"A {noun} idle this long is over.", "S"
        )
        decide_timeout_ns: int = option(
            decide,
            defaults[4],
            seconds_ns,
            f"Stop holding a {noun} that no filter matched within this long.",
            "S",
        )

        def limits(self) -> SessionLimits:
            """The session engine's bounds."""
            return SessionLimits(
                max_sessions=self.max_sessions,
                max_held_packets=self.max_held_packets,
                max_held_bytes=self.max_buffer_bytes,
                grace_ns=GRACE_NS,
                idle_timeout_ns=self.idle_timeout_ns,
                decide_timeout_ns=self.decide_timeout_ns,
            )

    SessionBounds.__qualname__ = SessionBounds.__name__ = f"{noun.capitalize()}Bounds"
    return SessionBounds
