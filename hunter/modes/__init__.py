"""Hunter modes: the registry from which ``lc hunt`` and its subcommands are built.

A mode is registered once with a :class:`~lc.hunter.modes.base.ModeSpec`; the hunter
(:mod:`lc.hunter.run`) and the CLI (:mod:`lc.cli.hunt`) find everything about it here
and nowhere else. Built in: ``generic`` (plain ``lc hunt``) and ``voip``. Adding a mode
is a module with its dissector (see :mod:`lc.hunter.modes.sessions`), a parser in
``lc.common``, a :func:`register` call here, and tests.
"""

from __future__ import annotations

from lc.hunter.modes import dns, email, generic, http, tls, voip
from lc.hunter.modes.base import Forward, Mode, ModeContext, ModeCounters, ModeSpec

__all__ = [
    "Forward",
    "Mode",
    "ModeContext",
    "ModeCounters",
    "ModeSpec",
    "get",
    "names",
    "register",
    "unregister",
]

_MODES: dict[str, ModeSpec] = {}


def register(spec: ModeSpec) -> None:
    """Add a mode (its name must be new)."""
    if spec.name in _MODES:
        raise ValueError(f"mode {spec.name!r} is registered already")
    if spec.default_policy not in ("allow", "deny"):
        raise ValueError(f"mode {spec.name!r}: default policy must be allow or deny")
    _MODES[spec.name] = spec


def unregister(name: str) -> None:
    """Remove a mode (tests register their own)."""
    _MODES.pop(name, None)


def get(name: str) -> ModeSpec | None:
    return _MODES.get(name)


def names() -> list[str]:
    """Registered modes, in registration order (``generic`` first)."""
    return list(_MODES)


register(generic.SPEC)
register(voip.SPEC)
register(tls.SPEC)
register(dns.SPEC)
register(http.SPEC)
register(email.SPEC)
