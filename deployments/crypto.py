"""Encryption at rest for secrets (deployment keys, workspace secrets): Fernet from `cryptography`."""

from __future__ import annotations

import base64
import hashlib
import secrets
from functools import cache

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


@cache
def _fernet() -> Fernet:
    # Any long random string in LYNX_ENCRYPTION_KEY works: stretch it to Fernet's 32-byte key.
    digest = hashlib.sha256(settings.LYNX_ENCRYPTION_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode() if plaintext else ""


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:  # the key in the environment changed since this was written
        raise ValueError(
            "cannot decrypt a stored secret: LYNX_ENCRYPTION_KEY differs from the one it was written with"
        ) from exc


def mask(secret: str) -> str:
    """What pages show by default: enough to tell two keys apart, never enough to use one."""
    return f"{secret[:4]}…{secret[-2:]}" if len(secret) > 8 else "••••"


def new_key() -> str:
    """A scoring key as long and random as Azure's."""
    return secrets.token_urlsafe(32)
