"""TLS credentials for lc's mutual-TLS gRPC: a tiny private PKI and certificate helpers.

``init_pki`` creates (or extends) a directory holding one CA and the leaf certificates the
deployment needs::

    ca.pem / ca.key                  the CA; it signs every leaf and is never overwritten
    processor.pem / processor.key    server certificate, extendedKeyUsage serverAuth and
                                     clientAuth (a processor is also its upstream's client)
    processor-<id>.pem / .key        more processors of a tree (``add_processor``), the same
    hunter-<id>.pem / .key           one client certificate per hunter, clientAuth
    admin.pem / admin.key            the admin CLI's client certificate, clientAuth

Keys are ECDSA P-256, signatures SHA-256. Every leaf subject is ``O=lc, OU=<role>, CN=<id>``
where the role is ``processor``, ``hunter`` or ``admin``; the processor authorises RPCs
by that role (see ``identity_from_pem``). The role is only meaningful once the TLS layer has
verified the peer's chain against ``ca.pem``: never read it from an unverified certificate.

Subject alternative names:

* processor: a DNS SAN per host name and an IP SAN per address given, plus ``localhost``,
  ``127.0.0.1`` and ``::1`` so that loopback deployments work out of the box;
* hunter ``<id>``: the URI SAN ``lc://hunter/<id>`` (and admin: ``lc://admin/admin``). A URI
  rather than a DNS SAN because a hunter id is a name, not a host: ids such as ``edge_1``
  or ``-a.b`` are not valid host names, and a URI can never be mistaken for one by a
  client checking the processor's host name.

Private keys are created with mode 0600 (through ``os.open``; the mode is never changed
afterwards) and written atomically; certificates get 0644. This module deliberately does
not import grpc: the hunter and processor build grpc credential objects from the PEM
bytes returned by ``read_pem``.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import functools
import ipaddress
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import LcError, NotFound, ValidationError

_T = TypeVar("_T")

__all__ = [
    "ADMIN_ROLE",
    "CA_KEY_NOTE",
    "EXPIRY_WARNING_DAYS",
    "HUNTER_ROLE",
    "METRICS_ROLE",
    "PROCESSOR_ROLE",
    "CertFiles",
    "CertIdentity",
    "PkiPaths",
    "add_hunters",
    "add_metrics",
    "add_processor",
    "check_key_pair",
    "check_pki",
    "check_tls_files",
    "hunter_uri",
    "identity_from_pem",
    "init_pki",
    "read_pem",
    "validate_id",
]

HUNTER_ROLE = "hunter"
PROCESSOR_ROLE = "processor"
ADMIN_ROLE = "admin"
METRICS_ROLE = "metrics"  # a --metrics-tls endpoint's server certificate, never a client

CA_CERT = "ca.pem"
CA_KEY = "ca.key"

_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_LABEL_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_PEM_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.+?\r?\n-----END \1-----", re.DOTALL)
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
_MAX_PEM_BYTES = 1 << 20
_CA_MIN_DAYS = 3650
_CLOCK_SKEW = _dt.timedelta(minutes=5)


@dataclass(frozen=True)
class CertFiles:
    """A certificate/key pair on disk; ``created`` is False when an existing pair was reused."""

    cert: Path
    key: Path
    created: bool

    def as_dict(self) -> dict[str, str]:
        return {
            "cert": str(self.cert),
            "key": str(self.key),
            "status": "created" if self.created else "reused",
        }


@dataclass(frozen=True)
class PkiPaths:
    """What ``init_pki`` produced. ``admin`` is None when no admin certificate was asked for;
    ``hunters`` maps each hunter id of this run to its files."""

    directory: Path
    ca: CertFiles
    processor: CertFiles
    admin: CertFiles | None
    hunters: dict[str, CertFiles] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready description (used by ``lc certs init``)."""
        return {
            "directory": str(self.directory),
            "ca": self.ca.as_dict(),
            "processor": self.processor.as_dict(),
            "admin": self.admin.as_dict() if self.admin is not None else None,
            "hunters": {hid: files.as_dict() for hid, files in self.hunters.items()},
        }


@dataclass(frozen=True)
class CertIdentity:
    """Who a certificate names.

    ``role`` is the subject's organizationalUnitName ("" when absent or ambiguous);
    ``sans`` are the subject alternative names as ``"DNS:<name>"``, ``"IP:<addr>"``,
    ``"URI:<uri>"`` or ``"email:<addr>"``; ``fingerprint`` is the lowercase hex SHA-256 of
    the DER certificate; ``not_after`` is timezone-aware UTC.
    """

    common_name: str
    role: str
    sans: tuple[str, ...]
    fingerprint: str
    not_after: _dt.datetime


# ----------------------------------------------------------------------------- reading


def read_pem(path: str | os.PathLike[str], *, what: str = "TLS certificate") -> bytes:
    """Return the bytes of the PEM file at ``path``.

    Raises NotFound when the file does not exist and ValidationError when it cannot be read
    or holds no PEM block; ``what`` names the file in the message ("TLS private key", ...).
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(_MAX_PEM_BYTES + 1)
    except FileNotFoundError:
        raise NotFound(f"{what} file not found: {p}") from None
    except IsADirectoryError:
        raise ValidationError(f"{what} file is a directory: {p}") from None
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise ValidationError(f"{what} file unreadable: {p} ({reason})") from None
    if len(data) > _MAX_PEM_BYTES:
        raise ValidationError(f"{what} file is too large to be PEM: {p}")
    if not _PEM_RE.search(data):
        raise ValidationError(f"{what} file is not PEM: {p}")
    return data


def _load_cert(cert_pem: bytes, label: str = "certificate") -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise ValidationError(f"{label} is not a valid PEM X.509 certificate ({exc})") from None


def _load_key(key_pem: bytes, label: str = "private key") -> Any:
    try:
        return serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise ValidationError(f"{label} is encrypted; lc needs an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValidationError(f"{label} is not a valid PEM private key ({exc})") from None


def _general_name_str(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    return f"other:{name.value!r}"


def _attr_values(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(attr.value) for attr in name.get_attributes_for_oid(oid)]


def _identity(cert: x509.Certificate) -> CertIdentity:
    cns = _attr_values(cert.subject, NameOID.COMMON_NAME)
    ous = set(_attr_values(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME))
    # Several different OUs would make the role a guess; refuse to guess.
    role = ous.pop() if len(ous) == 1 else ""
    try:
        san_ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        sans = tuple(_general_name_str(n) for n in san_ext.value)
    except x509.ExtensionNotFound:
        sans = ()
    return CertIdentity(
        common_name=cns[0] if cns else "",
        role=role,
        sans=sans,
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
        not_after=cert.not_valid_after_utc,
    )


@functools.lru_cache(maxsize=1024)
def _identity_cached(cert_pem: bytes) -> CertIdentity:
    return _identity(_load_cert(cert_pem))


def identity_from_pem(cert_pem: bytes | str) -> CertIdentity:
    """The identity (CN, role, SANs, SHA-256 fingerprint, expiry) of a PEM certificate.

    Meant to be called per connection on the peer certificate gRPC reports
    (``auth_context()["x509_pem_cert"]``): results are cached by the PEM bytes. Only the
    first certificate of a bundle is read. Raises ValidationError when it is not one.
    """
    if isinstance(cert_pem, str):
        cert_pem = cert_pem.encode("ascii", "replace")
    return _identity_cached(bytes(cert_pem))


def _spki(public_key: Any) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_key_pair(
    cert_pem: bytes, key_pem: bytes, *, cert_name: str = "", key_name: str = ""
) -> None:
    """Raise ValidationError unless ``key_pem`` is the private key of ``cert_pem``.

    ``cert_name`` and ``key_name`` (e.g. the file paths) only make the message clearer.
    """
    cert_label = f"certificate {cert_name}".rstrip()
    key_label = f"key {key_name}".rstrip()
    cert = _load_cert(cert_pem, f"the {cert_label}")
    key = _load_key(key_pem, f"the {key_label}")
    if _spki(key.public_key()) != _spki(cert.public_key()):
        ident = _identity(cert)
        raise ValidationError(
            f"the {key_label} does not match the {cert_label} "
            f"(CN={ident.common_name}, sha256 {ident.fingerprint[:16]})"
        )


# ----------------------------------------------------------------------------- checks

EXPIRY_WARNING_DAYS = 30
CA_KEY_NOTE = (
    "ca.key signs new certificates: it stays on this host (the CA host) and is never "
    "copied; hand out ca.pem and each party's own .pem and .key only"
)


def _load_cert_list(pem: bytes, label: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ValidationError(f"{label} is not a valid PEM X.509 certificate ({exc})") from None
    if not certs:
        raise ValidationError(f"{label} holds no certificate")
    return certs


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _chains_to(chain: Sequence[x509.Certificate], cas: Sequence[x509.Certificate]) -> bool:
    """Whether ``chain[0]`` is signed by one of ``cas``, directly or through ``chain[1:]``."""
    cur = chain[0]
    for _ in range(len(chain)):
        if any(_signed_by(cur, ca) for ca in cas):
            return True
        nxt = next((c for c in chain[1:] if c is not cur and _signed_by(cur, c)), None)
        if nxt is None:
            return False
        cur = nxt
    return False


def _day(t: _dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC")


def _validity(cert: x509.Certificate, label: str, now: _dt.datetime) -> tuple[str, str]:
    """(problem, warning) about ``cert``'s validity period at ``now``; "" for none."""
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < nb:
        return f"{label} is not valid before {_day(nb)} (is this host's clock right?)", ""
    if now >= na:
        return f"{label} expired on {_day(na)}", ""
    left = na - now
    if left <= _dt.timedelta(days=EXPIRY_WARNING_DAYS):
        return "", f"{label} expires in {left.days} days, on {_day(na)}"
    return "", ""


def check_tls_files(
    cert_pem: bytes,
    key_pem: bytes,
    ca_pem: bytes,
    *,
    cert_name: str = "",
    key_name: str = "",
    ca_name: str = "",
    now: _dt.datetime | None = None,
) -> list[str]:
    """Check a party's own TLS files before they are used; return warnings.

    Raises ValidationError naming the first problem: a file that is not a certificate or
    key, a key that does not match the certificate, a certificate that has expired or is
    not yet valid, a certificate not signed by (a CA in) the CA file, or an expired CA.
    The warnings say when the certificate or its CA expires within
    ``EXPIRY_WARNING_DAYS`` days. lc's PKI has one CA (``lc certs init``): it signs every
    party's certificate, and every party checks its peers against it.
    """
    now = now or _dt.datetime.now(_dt.UTC)
    cert_label = f"the certificate {cert_name}".rstrip()
    ca_label = f"the CA certificate {ca_name}".rstrip()
    check_key_pair(cert_pem, key_pem, cert_name=cert_name, key_name=key_name)
    chain = _load_cert_list(cert_pem, cert_label)
    cas = _load_cert_list(ca_pem, ca_label)
    warnings = []
    problem, warning = _validity(chain[0], cert_label, now)
    if problem:
        expired = now >= chain[0].not_valid_after_utc
        raise ValidationError(
            f"{problem}; renew it (lc certs init --force)" if expired else problem
        )
    if warning:
        warnings.append(f"{warning}; renew it (lc certs init --force)")
    if not _chains_to(chain, cas):
        ident = _identity(chain[0])
        raise ValidationError(
            f"{cert_label} (CN={ident.common_name}) is not signed by the CA in "
            f"{ca_name or 'the CA file'} (use the files of one `lc certs init` directory together)"
        )
    signers = [ca for ca in cas if any(_signed_by(c, ca) for c in chain)]
    valid = [ca for ca in signers if not _validity(ca, ca_label, now)[0]]
    if not valid:
        raise ValidationError(_validity(signers[0], ca_label, now)[0])
    for ca in valid:
        _, warning = _validity(ca, ca_label, now)
        if warning:
            warnings.append(warning)
    return warnings


_ROLE_USAGE = {
    PROCESSOR_ROLE: (ExtendedKeyUsageOID.SERVER_AUTH, "serverAuth"),
    HUNTER_ROLE: (ExtendedKeyUsageOID.CLIENT_AUTH, "clientAuth"),
    ADMIN_ROLE: (ExtendedKeyUsageOID.CLIENT_AUTH, "clientAuth"),
    METRICS_ROLE: (ExtendedKeyUsageOID.SERVER_AUTH, "serverAuth"),
}


def _check_leaf(
    cert_path: Path, key_path: Path, cas: list[x509.Certificate], now: _dt.datetime
) -> dict[str, Any]:
    """One leaf of an lc PKI directory, as ``check_pki`` reports it."""
    stem = cert_path.stem
    if stem.startswith("hunter-"):
        role, cn = HUNTER_ROLE, stem.removeprefix("hunter-")
    elif stem.startswith("processor-"):  # lc certs add --processor NAME
        role, cn = PROCESSOR_ROLE, stem.removeprefix("processor-")
    elif stem.startswith("metrics-"):  # lc certs add --metrics NAME
        role, cn = METRICS_ROLE, stem.removeprefix("metrics-")
    elif stem in (PROCESSOR_ROLE, ADMIN_ROLE):
        role, cn = stem, ADMIN_ROLE if stem == ADMIN_ROLE else None
    else:
        role, cn = "", None
    entry: dict[str, Any] = {
        "cert": str(cert_path),
        "key": str(key_path) if key_path.exists() else None,
        "expected_role": role or None,
        "problems": [],
        "warnings": [],
    }
    problems, warnings = entry["problems"], entry["warnings"]
    try:
        cert_pem = read_pem(cert_path)
        chain = _load_cert_list(cert_pem, f"the certificate {cert_path}")
    except LcError as exc:
        problems.append(str(exc))
        return entry
    cert = chain[0]
    ident = _identity(cert)
    entry.update(
        role=ident.role,
        common_name=ident.common_name,
        sans=list(ident.sans),
        not_before=cert.not_valid_before_utc.isoformat(),
        not_after=cert.not_valid_after_utc.isoformat(),
        days_left=(cert.not_valid_after_utc - now).days,
        fingerprint=ident.fingerprint,
    )
    problem, warning = _validity(cert, "the certificate", now)
    if problem:
        problems.append(problem)
    if warning:
        warnings.append(warning)
    if entry["key"] is None:
        problems.append(f"its key {key_path.name} is missing")
    else:
        try:
            check_key_pair(
                cert_pem,
                read_pem(key_path, what="TLS private key"),
                cert_name=str(cert_path),
                key_name=str(key_path),
            )
        except LcError as exc:
            problems.append(str(exc))
    if cas and not _chains_to(chain, cas):
        problems.append("it is not signed by this directory's CA (ca.pem)")
    if role:
        if ident.role != role:
            problems.append(f"its role (subject OU) is {ident.role or 'none'!r}, not {role!r}")
        if cn is not None and ident.common_name != cn:
            problems.append(f"its common name is {ident.common_name!r}, not {cn!r}")
        try:
            usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            oid, usage_name = _ROLE_USAGE[role]
            if oid not in usages:
                problems.append(f"its extendedKeyUsage lacks {usage_name}")
        except x509.ExtensionNotFound:
            pass
    return entry


def check_pki(directory: str | os.PathLike[str], now: _dt.datetime | None = None) -> dict[str, Any]:
    """Check every certificate of an lc PKI directory (what ``lc certs check`` prints).

    For the CA (``ca.pem``) and each leaf (``processor``, ``admin``, ``hunter-<id>``, and
    any other ``*.pem``): validity, key match, chain to ``ca.pem``, role and name.
    ``ok`` is False when any entry has a problem; warnings (expiry within
    ``EXPIRY_WARNING_DAYS`` days, where the CA key is) do not make it False.

    Raises NotFound when the directory does not exist.
    """
    now = now or _dt.datetime.now(_dt.UTC)
    path = Path(directory).expanduser().absolute()
    if not path.is_dir():
        raise NotFound(f"PKI directory not found: {path}")
    ca_entry: dict[str, Any] = {"cert": str(path / CA_CERT), "problems": [], "warnings": []}
    cas: list[x509.Certificate] = []
    try:
        cas = _load_cert_list(read_pem(path / CA_CERT, what="CA certificate"), "ca.pem")
    except LcError as exc:
        ca_entry["problems"].append(str(exc))
    if cas:
        ca = cas[0]
        ca_entry.update(
            common_name=_identity(ca).common_name,
            not_before=ca.not_valid_before_utc.isoformat(),
            not_after=ca.not_valid_after_utc.isoformat(),
            days_left=(ca.not_valid_after_utc - now).days,
        )
        for c in cas:
            problem, warning = _validity(c, "the CA certificate", now)
            ca_entry["problems"] += [problem] if problem else []
            ca_entry["warnings"] += [warning] if warning else []
    key = path / CA_KEY
    ca_entry["key"] = str(key) if key.exists() else None
    if key.exists():
        ca_entry["note"] = CA_KEY_NOTE
        if cas:
            try:
                check_key_pair(
                    read_pem(path / CA_CERT),
                    read_pem(key, what="CA private key"),
                    cert_name=str(path / CA_CERT),
                    key_name=str(key),
                )
            except LcError as exc:
                ca_entry["problems"].append(str(exc))
    leaves = [
        _check_leaf(p, p.with_suffix(".key"), cas, now)
        for p in sorted(path.glob("*.pem"))
        if p.name != CA_CERT
    ]
    entries = [ca_entry, *leaves]
    return {
        "directory": str(path),
        "ok": not any(e["problems"] for e in entries),
        "ca": ca_entry,
        "certificates": leaves,
    }


# ----------------------------------------------------------------------------- validation


def validate_id(value: str, kind: str = "hunter") -> str:
    """Return ``value`` if it is a valid hunter/processor id, else raise ValidationError.

    Ids are 1-64 characters from ``[A-Za-z0-9._-]``; ``.`` and ``..`` alone are refused
    because they would turn into path segments in the ``lc://hunter/<id>`` URI.
    """
    if not isinstance(value, str) or not _ID_RE.fullmatch(value) or value in (".", ".."):
        raise ValidationError(
            f"invalid {kind} id {value!r}: use 1-64 characters from A-Z a-z 0-9 . _ -"
        )
    return value


def hunter_uri(hunter_id: str) -> str:
    """The URI SAN a hunter certificate carries: ``lc://hunter/<id>``."""
    return f"lc://{HUNTER_ROLE}/{hunter_id}"


def _parse_host(host: str, what: str = "processor host") -> x509.GeneralName:
    """A processor host name as an IP or DNS SAN; raises ValidationError if neither."""
    text = host.strip() if isinstance(host, str) else ""
    try:
        return x509.IPAddress(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        pass
    name = text.lower().rstrip(".")
    labels = name.split(".")
    if labels and labels[0] == "*":
        labels = labels[1:]
    if (
        not name
        or len(name) > 253
        or not name.isascii()
        or not labels
        or not all(_LABEL_RE.fullmatch(label) for label in labels)
    ):
        raise ValidationError(
            f"invalid {what} {host!r}: expected a DNS name (ASCII, punycode for "
            "international names) or an IP address"
        )
    return x509.DNSName(name)


# ----------------------------------------------------------------------------- writing


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Atomically write ``data`` to ``path``; the file is created with ``mode`` (umask applies).

    A temporary file in the same directory is created with ``os.open(..., mode)`` and renamed
    over ``path``, so a key is never readable by others, not even briefly, and a crash never
    leaves half a file behind.
    """
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0)


def _subject(role: str, common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "lc"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _new_ca(days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    # A random suffix keeps two lc CAs apart by name, not only by key.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "lc"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"lc CA {os.urandom(4).hex()}"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + _dt.timedelta(days=max(days, _CA_MIN_DAYS)))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _new_leaf(
    ca_cert: x509.Certificate,
    ca_key: Any,
    *,
    role: str,
    common_name: str,
    sans: Sequence[x509.GeneralName],
    server: bool,
    days: int,
    client: bool = True,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf signed by the CA. A server (a processor) gets serverAuth and clientAuth: it
    serves its hunters and is a client of its upstream processor (a processor tree).
    ``client=False``: serverAuth only (a metrics endpoint's certificate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    # A leaf must not outlive the CA that vouches for it.
    not_after = min(now + _dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    try:
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    if server:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_subject(role, common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(aki, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


# ----------------------------------------------------------------------------- init_pki


def _load_ca(directory: Path) -> tuple[x509.Certificate, Any]:
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    cert_pem = read_pem(cert_path, what="CA certificate")
    key_pem = read_pem(key_path, what="CA private key")
    check_key_pair(cert_pem, key_pem, cert_name=str(cert_path), key_name=str(key_path))
    cert = _load_cert(cert_pem, f"the CA certificate {cert_path}")
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ValidationError(f"{cert_path} is not a CA certificate (basicConstraints CA:FALSE)")
    if cert.not_valid_after_utc <= _now():
        raise ValidationError(
            f"the CA certificate {cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}; "
            "move the directory away and create a new PKI"
        )
    return cert, _load_key(key_pem, f"the CA key {key_path}")


def _check_existing_leaf(
    cert_path: Path,
    key_path: Path,
    ca_cert: x509.Certificate,
    *,
    role: str,
    common_name: str,
    sans: Sequence[x509.GeneralName],
) -> None:
    """Refuse to reuse a leaf that is not what this run asks for."""
    hint = "re-run with --force (force=True) to reissue it"
    cert_pem = read_pem(cert_path)
    key_pem = read_pem(key_path, what="TLS private key")
    check_key_pair(cert_pem, key_pem, cert_name=str(cert_path), key_name=str(key_path))
    cert = _load_cert(cert_pem, f"the certificate {cert_path}")
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise ValidationError(
            f"{cert_path} was not issued by this directory's CA; {hint}"
        ) from None
    ident = _identity(cert)
    if ident.role != role or ident.common_name != common_name:
        raise ValidationError(
            f"{cert_path} names OU={ident.role} CN={ident.common_name}, "
            f"not OU={role} CN={common_name}; {hint}"
        )
    missing = [_general_name_str(n) for n in sans if _general_name_str(n) not in ident.sans]
    if missing:
        raise ValidationError(f"{cert_path} lacks {', '.join(missing)}; {hint}")


def _ensure_leaf(
    directory: Path,
    stem: str,
    ca_cert: x509.Certificate,
    ca_key: Any,
    *,
    role: str,
    common_name: str,
    sans: Sequence[x509.GeneralName],
    server: bool,
    days: int,
    force: bool,
    client: bool = True,
) -> CertFiles:
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    have_cert, have_key = cert_path.exists(), key_path.exists()
    if not force and (have_cert or have_key):
        if not (have_cert and have_key):
            present, absent = (cert_path, key_path) if have_cert else (key_path, cert_path)
            raise ValidationError(
                f"{present} exists without {absent.name}; re-run with --force (force=True) "
                "to reissue the pair"
            )
        _check_existing_leaf(
            cert_path, key_path, ca_cert, role=role, common_name=common_name, sans=sans
        )
        return CertFiles(cert_path, key_path, created=False)
    cert, key = _new_leaf(
        ca_cert,
        ca_key,
        role=role,
        common_name=common_name,
        sans=sans,
        server=server,
        days=days,
        client=client,
    )
    # Key first: a certificate on disk always has its key next to it.
    _write_file(key_path, _key_pem(key), 0o600)
    _write_file(cert_path, _cert_pem(cert), 0o644)
    return CertFiles(cert_path, key_path, created=True)


def _dedupe(items: Sequence[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


def init_pki(
    directory: str | os.PathLike[str],
    hunters: Sequence[str] = (),
    processor_hosts: Sequence[str] = (),
    processor_id: str = "processor",
    admin: bool = True,
    days: int = 825,
    *,
    force: bool = False,
) -> PkiPaths:
    """Create or extend the PKI in ``directory`` (created with mode 0700 when missing).

    An existing CA (``ca.pem`` + ``ca.key``) is always reused, never replaced, so that
    certificates issued earlier stay valid. An existing leaf pair is reused when it still
    matches the request (same CA, role, CN and the requested SANs) and reissued only with
    ``force=True``; a mismatching or half-present pair raises ValidationError. ``days`` is
    the leaf validity (a new CA gets at least ten years; no leaf outlives its CA).

    Concurrent runs on one directory are serialised with flock(2) on the directory.
    Raises ValidationError for a bad id, host or day count, NotFound when half of the CA
    is missing, and LcError when the directory cannot be written.
    """
    if isinstance(hunters, str) or isinstance(processor_hosts, str):
        raise TypeError("hunters and processor_hosts are sequences of strings, not a string")
    for hid in hunters:
        validate_id(hid, "hunter")
    validate_id(processor_id, "processor")
    host_names = [_parse_host(h) for h in processor_hosts]
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValidationError(f"invalid validity {days!r} days: expected a positive integer")
    path = Path(directory).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise ValidationError(f"PKI directory is not a directory: {path}")
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            # Two concurrent runs must not both create a CA: serialise them on the directory.
            fcntl.flock(dir_fd, fcntl.LOCK_EX)
            return _init_locked(
                path, hunters, host_names, processor_id, admin=admin, days=days, force=force
            )
        finally:
            os.close(dir_fd)
    except OSError as exc:
        where = exc.filename or path
        raise LcError(f"cannot write the PKI in {path}: {where}: {exc.strerror or exc}") from None


def _init_locked(
    path: Path,
    hunters: Sequence[str],
    host_names: Sequence[x509.GeneralName],
    processor_id: str,
    *,
    admin: bool,
    days: int,
    force: bool,
) -> PkiPaths:
    ca_cert_path, ca_key_path = path / CA_CERT, path / CA_KEY
    if ca_cert_path.exists() or ca_key_path.exists():
        ca_cert, ca_key = _load_ca(path)
        ca = CertFiles(ca_cert_path, ca_key_path, created=False)
    else:
        ca_cert, ca_key = _new_ca(days)
        _write_file(ca_key_path, _key_pem(ca_key), 0o600)
        _write_file(ca_cert_path, _cert_pem(ca_cert), 0o644)
        ca = CertFiles(ca_cert_path, ca_key_path, created=True)

    loopback = [_parse_host(h) for h in _LOOPBACK_HOSTS]
    processor = _ensure_leaf(
        path,
        "processor",
        ca_cert,
        ca_key,
        role=PROCESSOR_ROLE,
        common_name=processor_id,
        sans=_dedupe([*host_names, *loopback]),
        server=True,
        days=days,
        force=force,
    )
    admin_files = None
    if admin:
        admin_files = _ensure_leaf(
            path,
            "admin",
            ca_cert,
            ca_key,
            role=ADMIN_ROLE,
            common_name=ADMIN_ROLE,
            sans=[x509.UniformResourceIdentifier(f"lc://{ADMIN_ROLE}/{ADMIN_ROLE}")],
            server=False,
            days=days,
            force=force,
        )
    hunter_files: dict[str, CertFiles] = {}
    for hid in _dedupe(hunters):
        hunter_files[hid] = _ensure_leaf(
            path,
            f"hunter-{hid}",
            ca_cert,
            ca_key,
            role=HUNTER_ROLE,
            common_name=hid,
            sans=[x509.UniformResourceIdentifier(hunter_uri(hid))],
            server=False,
            days=days,
            force=force,
        )
    return PkiPaths(
        directory=path, ca=ca, processor=processor, admin=admin_files, hunters=hunter_files
    )


# ----------------------------------------------------------------------------- add


def add_processor(
    directory: str | os.PathLike[str],
    processor_id: str,
    hosts: Sequence[str],
    days: int = 825,
    *,
    force: bool = False,
) -> CertFiles:
    """Issue one more processor certificate from the existing CA in ``directory``.

    Writes ``processor-<id>.pem`` and ``.key`` (subject ``OU=processor, CN=<id>``; DNS or
    IP SANs for ``hosts`` plus ``localhost``, ``127.0.0.1`` and ``::1``; extendedKeyUsage
    serverAuth and clientAuth, so the processor serves its hunters and is a client of its
    upstream). Nothing else in the directory is touched: the CA and the certificates
    already handed out stay as they are. An existing pair for this id is reused when it
    matches (same CA, role, name and hosts), reissued only with ``force``.

    Raises NotFound when the directory holds no CA (``ca.pem`` and ``ca.key``: run
    ``lc certs init`` first), ValidationError for a bad id, host or day count, and LcError
    when the directory cannot be written.
    """
    return _add_server(directory, "processor", processor_id, hosts, days, force)


def add_metrics(
    directory: str | os.PathLike[str],
    name: str,
    hosts: Sequence[str],
    days: int = 825,
    *,
    force: bool = False,
) -> CertFiles:
    """Issue a server certificate for a ``--metrics-tls`` endpoint from the existing CA.

    A hunter's own certificate is a client certificate, which scrapers refuse as a
    server's: ``lc hunt --metrics-tls`` takes this one (``--metrics-tls-cert``). Writes
    ``metrics-<name>.pem`` and ``.key`` (subject ``OU=metrics, CN=<name>``; DNS or IP SANs
    for ``hosts``, the names scrapers use, plus ``localhost``, ``127.0.0.1`` and ``::1``;
    extendedKeyUsage serverAuth only: no lc service accepts it from a client). Nothing
    else in the directory is touched; an existing matching pair is reused, reissued only
    with ``force``. Raises like ``add_processor``.
    """
    return _add_server(directory, "metrics", name, hosts, days, force)


def _add_server(
    directory: str | os.PathLike[str],
    kind: str,
    name: str,
    hosts: Sequence[str],
    days: int,
    force: bool,
) -> CertFiles:
    """``add_processor`` (``kind`` "processor": a client too) or ``add_metrics``
    (``kind`` "metrics": a server only): ``<kind>-<name>.pem`` from the existing CA."""
    processor = kind == "processor"
    validate_id(name, "processor" if processor else "metrics certificate")
    if isinstance(hosts, str):
        raise TypeError("hosts is a sequence of strings, not a string")
    if not hosts:
        who = "hunters" if processor else "scrapers"
        raise ValidationError(f"give at least one --{kind}-host (the name {who} connect to)")
    host_names = [_parse_host(h, f"{kind} host") for h in hosts]
    _check_days(days)
    loopback = [_parse_host(h) for h in _LOOPBACK_HOSTS]
    return _with_ca(
        directory,
        lambda path, ca_cert, ca_key: _ensure_leaf(
            path,
            f"{kind}-{name}",
            ca_cert,
            ca_key,
            role=PROCESSOR_ROLE if processor else METRICS_ROLE,
            common_name=name,
            sans=_dedupe([*host_names, *loopback]),
            server=True,
            days=days,
            force=force,
            client=processor,
        ),
    )


def add_hunters(
    directory: str | os.PathLike[str],
    hunters: Sequence[str],
    days: int = 825,
    *,
    force: bool = False,
) -> dict[str, CertFiles]:
    """Issue hunter client certificates from the existing CA in ``directory``.

    Writes ``hunter-<id>.pem`` and ``.key`` for each id, exactly as ``init_pki`` does
    (subject ``OU=hunter, CN=<id>``, URI SAN ``lc://hunter/<id>``, clientAuth), without
    touching the processor, admin or CA files, so that adding a sensor needs neither the
    processor's hosts nor a re-run of ``init``. An existing pair is reused when it matches,
    reissued only with ``force``. Raises like ``add_processor``.
    """
    if isinstance(hunters, str):
        raise TypeError("hunters is a sequence of strings, not a string")
    if not hunters:
        raise ValidationError("give at least one --hunter ID")
    for hid in hunters:
        validate_id(hid, "hunter")
    _check_days(days)

    def issue(path: Path, ca_cert: x509.Certificate, ca_key: Any) -> dict[str, CertFiles]:
        return {
            hid: _ensure_leaf(
                path,
                f"hunter-{hid}",
                ca_cert,
                ca_key,
                role=HUNTER_ROLE,
                common_name=hid,
                sans=[x509.UniformResourceIdentifier(hunter_uri(hid))],
                server=False,
                days=days,
                force=force,
            )
            for hid in _dedupe(hunters)
        }

    return _with_ca(directory, issue)


def _check_days(days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValidationError(f"invalid validity {days!r} days: expected a positive integer")


def _with_ca(
    directory: str | os.PathLike[str],
    work: Callable[[Path, x509.Certificate, Any], _T],
) -> _T:
    """Run ``work(path, ca_cert, ca_key)`` under the directory's lock with its existing CA."""
    path = Path(directory).expanduser().absolute()
    if not (path / CA_CERT).exists() and not (path / CA_KEY).exists():
        raise NotFound(f"no CA in {path} (ca.pem, ca.key): run lc certs init --dir {path} first")
    try:
        dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(dir_fd, fcntl.LOCK_EX)
            ca_cert, ca_key = _load_ca(path)
            return work(path, ca_cert, ca_key)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        where = exc.filename or path
        raise LcError(f"cannot write the PKI in {path}: {where}: {exc.strerror or exc}") from None
