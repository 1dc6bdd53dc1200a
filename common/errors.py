"""The small error tree shared by every part of lc.

Each class carries the CLI exit code and the gRPC status name it maps to, so that
the CLI and the gRPC services translate errors in exactly one place each.
Exit codes: 0 ok, 1 general, 2 connection, 3 validation, 4 not found.
"""

from __future__ import annotations

__all__ = [
    "LcError",
    "NotFound",
    "ParseError",
    "PermissionDenied",
    "Unreachable",
    "ValidationError",
]


class LcError(Exception):
    """Root of lc's errors. ``exit_code`` is the CLI's, ``grpc_code`` a grpc.StatusCode name."""

    exit_code: int = 1
    grpc_code: str = "INTERNAL"


class ParseError(LcError, ValueError):
    """Bytes that do not form a valid record (a packet, a pcap block, a protocol message).

    In the hunter these are counted per protocol and skipped, never raised to the user.
    """

    grpc_code = "INVALID_ARGUMENT"


class ValidationError(LcError, ValueError):
    """A flag, filter or request that is refused; the message names what is wrong."""

    exit_code = 3
    grpc_code = "INVALID_ARGUMENT"


class NotFound(LcError, LookupError):
    """The named hunter, filter or file does not exist."""

    exit_code = 4
    grpc_code = "NOT_FOUND"


class Unreachable(LcError, ConnectionError):
    """The processor (or another peer) cannot be reached or refused the connection."""

    exit_code = 2
    grpc_code = "UNAVAILABLE"


class PermissionDenied(LcError, PermissionError):
    """The caller's identity may not do this (e.g. a hunter certificate on an admin RPC)."""

    exit_code = 1
    grpc_code = "PERMISSION_DENIED"
