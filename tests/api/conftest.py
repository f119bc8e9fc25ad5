from __future__ import annotations

import pytest

from api.tokens import token_create


@pytest.fixture(autouse=True)
def _fast_passwords(settings) -> None:
    """The API's tests sign in with tokens, never a password: hash the personas' cheaply (PBKDF2 took most of
    the time on two cores)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def bearer(secret: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


@pytest.fixture
def token_for():
    """`token_for(user, name="t", read_only=False, expires_days=None)` → the secret, as a person makes it."""

    def make(user, name: str = "t", **options) -> str:
        return token_create(actor=user, owner=user, name=name, **options).secret

    return make
