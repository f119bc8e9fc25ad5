"""Certificates and keys made on the spot for the TLS upload tests: valid, expired, not yet valid, for another
name, wildcard, without SANs, and keys that match, do not match, or carry a passphrase."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None = None) -> str:
    encryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode()


def certificate_pem(
    key: ec.EllipticCurvePrivateKey,
    *,
    names: tuple[str, ...] = ("scoring.contoso.com",),
    common_name: str = "scoring.contoso.com",
    starts: dt.timedelta = dt.timedelta(days=-1),
    lasts: dt.timedelta = dt.timedelta(days=90),
) -> str:
    """A self-signed certificate for `names` (as subjectAltNames; none when empty), valid from now+starts
    for `lasts`."""
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + starts)
        .not_valid_after(now + starts + lasts)
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def valid_pair(cname: str = "scoring.contoso.com") -> tuple[str, str]:
    key = new_key()
    return certificate_pem(key, names=(cname,), common_name=cname), key_pem(key)
