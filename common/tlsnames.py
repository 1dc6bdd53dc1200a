"""Names of TLS values for humans and ECS documents: versions and cipher suites.

``tls.version`` and ``tls.version_protocol`` follow ECS (``"1.3"`` and ``"tls"``;
``"3.0"`` and ``"ssl"`` for SSL 3.0); ``tls.cipher`` is the IANA name of the suite
(the TLS Cipher Suites registry). Suites not in :data:`CIPHER_NAMES` are shown as
their code, ``0x1234``: the table holds the suites seen in practice, not the whole
registry.
"""

from __future__ import annotations

from lc.common.tls import is_grease

__all__ = ["CIPHER_NAMES", "cipher_name", "version_fields"]

CIPHER_NAMES: dict[int, str] = {
    0x0004: "TLS_RSA_WITH_RC4_128_MD5",
    0x0005: "TLS_RSA_WITH_RC4_128_SHA",
    0x000A: "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    0x0016: "TLS_DHE_RSA_WITH_3DES_EDE_CBC_SHA",
    0x002F: "TLS_RSA_WITH_AES_128_CBC_SHA",
    0x0033: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA",
    0x0035: "TLS_RSA_WITH_AES_256_CBC_SHA",
    0x0039: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA",
    0x003C: "TLS_RSA_WITH_AES_128_CBC_SHA256",
    0x003D: "TLS_RSA_WITH_AES_256_CBC_SHA256",
    0x0067: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256",
    0x006B: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256",
    0x009C: "TLS_RSA_WITH_AES_128_GCM_SHA256",
    0x009D: "TLS_RSA_WITH_AES_256_GCM_SHA384",
    0x009E: "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
    0x009F: "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    0x00FF: "TLS_EMPTY_RENEGOTIATION_INFO_SCSV",
    0x1301: "TLS_AES_128_GCM_SHA256",
    0x1302: "TLS_AES_256_GCM_SHA384",
    0x1303: "TLS_CHACHA20_POLY1305_SHA256",
    0x1304: "TLS_AES_128_CCM_SHA256",
    0x1305: "TLS_AES_128_CCM_8_SHA256",
    0x5600: "TLS_FALLBACK_SCSV",
    0xC008: "TLS_ECDHE_ECDSA_WITH_3DES_EDE_CBC_SHA",
    0xC009: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    0xC00A: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    0xC012: "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    0xC013: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    0xC014: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    0xC023: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    0xC024: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    0xC027: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    0xC028: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
    0xC02B: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    0xC02C: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    0xC030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    0xCCA8: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCA9: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCAA: "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
}

_VERSIONS: dict[int, tuple[str, str]] = {
    0x0300: ("ssl", "3.0"),
    0x0301: ("tls", "1.0"),
    0x0302: ("tls", "1.1"),
    0x0303: ("tls", "1.2"),
    0x0304: ("tls", "1.3"),
}


def cipher_name(code: int) -> str:
    """The IANA name of a cipher suite, else its code as ``0x1234``."""
    name = CIPHER_NAMES.get(code)
    if name is not None:
        return name
    return f"0x{code:04x}"


def version_fields(version: int) -> tuple[str, str] | None:
    """ECS ``(tls.version_protocol, tls.version)`` of a version code; TLS 1.3 drafts
    (0x7fxx) are ``1.3``; None for GREASE, 0 and anything unknown."""
    if version >> 8 == 0x7F:
        return ("tls", "1.3")
    if is_grease(version):
        return None
    return _VERSIONS.get(version)
