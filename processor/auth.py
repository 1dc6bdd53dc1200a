"""Who is calling: the identity a peer's client certificate proves, and what it may do.

Roles come from the certificate subject's OU, set by ``lc certs init``: ``hunter``
certificates may register, stream and heartbeat only under their own common name;
``admin`` certificates may use the admin RPCs; ``processor`` certificates (a processor
below this one in a tree) may register themselves under their own common name, register
hunters through themselves, and carry the batches of those hunters only (checked against
the tree, :meth:`lc.processor.tree.Tree.may_carry`). With ``--insecure`` there are no
certificates, hence no identities and no authorization at all: anyone who can reach
the port may do anything (documented in the README).
"""

from __future__ import annotations

import grpc

from lc.common.credentials import (
    ADMIN_ROLE,
    HUNTER_ROLE,
    PROCESSOR_ROLE,
    CertIdentity,
    identity_from_pem,
)

__all__ = ["Authorizer"]


class Authorizer:
    def __init__(self, insecure: bool) -> None:
        self.insecure = insecure

    def peer(self, context: grpc.ServicerContext) -> CertIdentity | None:
        """The caller's certificate identity; None with --insecure."""
        if self.insecure:
            return None
        pems = context.auth_context().get("x509_pem_cert") or []
        if not pems:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "no client certificate")
        return identity_from_pem(pems[0])

    def require_hunter(self, context: grpc.ServicerContext, hunter_id: str) -> None:
        """Abort with PERMISSION_DENIED unless the caller is hunter ``hunter_id``."""
        ident = self.peer(context)
        if ident is None:
            return
        if ident.role != HUNTER_ROLE:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"certificate {ident.common_name!r} has role {ident.role or 'none'!r}, "
                "not 'hunter'",
            )
        if ident.common_name != hunter_id:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"certificate is for hunter {ident.common_name!r}, not {hunter_id!r}",
            )

    def hunter_mismatch(self, context: grpc.ServicerContext, hunter_id: str) -> str:
        """Why the caller may not act as hunter ``hunter_id`` ("" when it may)."""
        ident = self.peer(context)
        if ident is None:
            return ""
        if ident.role != HUNTER_ROLE:
            return f"certificate {ident.common_name!r} is not a hunter certificate"
        if ident.common_name != hunter_id:
            return f"certificate is for hunter {ident.common_name!r}, not {hunter_id!r}"
        return ""

    def processor_mismatch(self, context: grpc.ServicerContext, processor_id: str) -> str:
        """Why the caller may not act as processor ``processor_id`` ("" when it may)."""
        ident = self.peer(context)
        if ident is None:
            return ""
        if ident.role != PROCESSOR_ROLE:
            return (
                f"certificate {ident.common_name!r} has role {ident.role or 'none'!r}, not "
                "'processor': only a processor certificate (lc certs add --processor) may "
                "register processors or hunters through itself"
            )
        if ident.common_name != processor_id:
            return f"certificate is for processor {ident.common_name!r}, not {processor_id!r}"
        return ""

    def require_admin(self, context: grpc.ServicerContext) -> None:
        ident = self.peer(context)
        if ident is None:
            return
        if ident.role != ADMIN_ROLE:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"admin RPCs need an admin certificate; {ident.common_name!r} is "
                f"{ident.role or 'no role'!r}",
            )
