"""An uploaded TLS certificate and private key for a cluster's scoring front end, checked before anything is
stored or sent to Azure.

Azure's front end would take a broken pair and fail later, or serve a name the certificate does not cover, so
every browser and client would refuse it. The checks here say why in plain words; the messages never quote
the key. What is kept is what cryptography parsed and wrote back: the certificate chain as PEM (nothing else
that was in the file) and the key as unencrypted PKCS#8 PEM (encrypted by the service that stores it).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class CheckedPair:
    """The re-serialised certificate and key, or the errors per form field ("tls_certificate", "tls_key",
    "tls_cname") when the pair cannot be used."""

    certificate: str = ""
    key: str = field(default="", repr=False)
    errors: dict[str, list[str]] = field(default_factory=dict)


def _public_bytes(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_certificates(pem: str) -> tuple[list[x509.Certificate], str]:
    """The certificates in a PEM upload (the first is the server's, any others its chain), or an error."""
    if "PRIVATE KEY" in pem:
        return [], (
            "This file holds a private key. Upload the certificate alone here, and the key in the key field."
        )
    try:
        certificates = x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        return [], "This is not a PEM certificate (-----BEGIN CERTIFICATE----- … -----END CERTIFICATE-----)."
    return certificates, ""


def load_private_key(pem: str) -> tuple[PrivateKeyTypes | None, str]:
    """The private key in a PEM upload, or an error. A passphrase-protected key is refused: Azure takes the
    key file as it is, with nowhere to give a passphrase."""
    try:
        return serialization.load_pem_private_key(pem.encode(), password=None), ""
    except TypeError:
        return None, "This key is protected by a passphrase. Upload it without one (Azure cannot unlock it)."
    except (ValueError, UnsupportedAlgorithm):
        return (
            None,
            "This is not a PEM private key (-----BEGIN PRIVATE KEY----- … -----END PRIVATE KEY-----).",
        )


def certified_names(certificate: x509.Certificate) -> list[str]:
    """The DNS names a certificate is for: its subjectAltNames, or its common name when it has none (as
    clients did before SANs were required)."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return san.get_values_for_type(x509.DNSName)


def name_matches(pattern: str, name: str) -> bool:
    """RFC 6125 matching: exact (case-insensitive), or a wildcard for exactly one leftmost label."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern == name:
        return True
    if pattern.startswith("*.") and "." in name:
        return name.split(".", 1)[1] == pattern[2:] and bool(name.split(".", 1)[0])
    return False


def _validity_error(certificate: x509.Certificate, now: dt.datetime) -> str:
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    if now < start:
        return f"This certificate is not valid yet: it starts on {start:%Y-%m-%d %H:%M} UTC."
    if now >= end:
        return f"This certificate expired on {end:%Y-%m-%d %H:%M} UTC. Upload a current one."
    return ""


def check_tls_pair(
    certificate_pem: str, key_pem: str, cname: str, now: dt.datetime | None = None
) -> CheckedPair:
    """Parse and check an uploaded certificate and key for `cname` (see the module docstring)."""
    errors: dict[str, list[str]] = {}
    certificates, cert_error = load_certificates(certificate_pem)
    key, key_error = load_private_key(key_pem)
    if cert_error:
        errors["tls_certificate"] = [cert_error]
    if key_error:
        errors["tls_key"] = [key_error]
    if not certificates:
        return CheckedPair(errors=errors)
    leaf = certificates[0]
    if validity := _validity_error(leaf, now or dt.datetime.now(dt.UTC)):
        errors.setdefault("tls_certificate", []).append(validity)
    names = certified_names(leaf)
    if cname and not any(name_matches(pattern, cname) for pattern in names):
        covered = ", ".join(names) or "no name"
        errors.setdefault("tls_cname", []).append(f"The certificate is for {covered}, not {cname}.")
    if key is not None and _public_bytes(key.public_key()) != _public_bytes(leaf.public_key()):
        errors.setdefault("tls_key", []).append(
            "This key does not belong to the certificate (their public keys differ)."
        )
    if errors:
        return CheckedPair(errors=errors)
    assert key is not None  # no key error was recorded
    return CheckedPair(
        certificate="".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates),
        key=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
    )
