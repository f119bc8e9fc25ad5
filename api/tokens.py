"""Tokens: create (shown once), authenticate, revoke. Every change is audited."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from api.models import ApiToken
from deployments.services import Refused
from deployments.services.audit import audit_record

TOKEN_PREFIX = "lynx_"
NAME_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NAME_RULE_TEXT = "A token name is up to 64 letters, digits, dots, dashes or underscores."
MAX_EXPIRES_DAYS = 3650
# Each token has its own rate: a person's tokens are capped, so minting tokens does not multiply it.
MAX_LIVE_TOKENS = 20
# last_used_at is written at most this often per token: a busy script must not turn reads into writes.
LAST_USED_RESOLUTION = timedelta(seconds=60)


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class NewToken:
    token: ApiToken
    secret: str  # shown once: only its digest is stored


def token_create(
    *,
    actor: User | None,
    owner: User,
    name: str,
    expires_days: int | None = None,
    read_only: bool = False,
    parent: ApiToken | None = None,
) -> NewToken:
    """Make a named token for `owner` (the actor is the owner, or an admin at the shell).

    parent: the token the request came through, if any. A token made through another never outlives it and is
    read-only if it is, so a leaked short-lived CI token cannot mint a lasting one.
    """
    if not NAME_RULE.match(name):
        raise Refused(NAME_RULE_TEXT)
    if expires_days is not None and not 1 <= expires_days <= MAX_EXPIRES_DAYS:
        raise Refused(f"A token expires after 1 to {MAX_EXPIRES_DAYS} days (or never).")
    if ApiToken.objects.filter(user=owner, revoked_at__isnull=True).count() >= MAX_LIVE_TOKENS:
        raise Refused(
            f"{owner.get_username()} has {MAX_LIVE_TOKENS} live tokens, the most allowed: revoke one."
        )
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = timezone.now() + timedelta(days=expires_days) if expires_days else None
    if parent is not None:
        read_only = read_only or parent.read_only
        if parent.expires_at is not None and (expires_at is None or expires_at > parent.expires_at):
            expires_at = parent.expires_at
    try:
        with transaction.atomic():
            token = ApiToken.objects.create(
                user=owner,
                name=name,
                prefix=secret[: len(TOKEN_PREFIX) + 4],
                digest=_digest(secret),
                read_only=read_only,
                expires_at=expires_at,
            )
            audit_record(
                actor=actor,
                action="token.create",
                resource=token,
                after={
                    "owner": owner.get_username(),
                    "read_only": read_only,
                    "expires_at": expires_at.isoformat() if expires_at else None,
                },
            )
    except IntegrityError:
        raise Refused(f"{owner.get_username()} already has a token named {name}: revoke it first.") from None
    return NewToken(token=token, secret=secret)


def token_revoke(*, actor: User | None, owner: User, name: str) -> ApiToken:
    """Revoke `owner`'s live token `name`; the next request made with it is refused."""
    with transaction.atomic():
        token = (
            ApiToken.objects.select_for_update()
            .filter(user=owner, name=name, revoked_at__isnull=True)
            .first()
        )
        if token is None:
            raise Refused(f"{owner.get_username()} has no live token named {name}.")
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit_record(
            actor=actor, action="token.revoke", resource=token, after={"owner": owner.get_username()}
        )
    return token


class TokenRefused(Exception):
    """A bearer token that does not let its request in; the message says why (a 401)."""


def token_authenticate(raw: str) -> ApiToken:
    """The live token `raw` is, with its user, or TokenRefused saying why not."""
    if not raw.startswith(TOKEN_PREFIX):
        raise TokenRefused("This is not a Lynx API token (they start with lynx_).")
    token = ApiToken.objects.select_related("user").filter(digest=_digest(raw)).first()
    if token is None:
        raise TokenRefused("Unknown token.")
    if token.revoked_at is not None:
        raise TokenRefused(f'The token "{token.name}" was revoked.')
    if token.is_expired:
        raise TokenRefused(f'The token "{token.name}" expired on {token.expires_at:%Y-%m-%d %H:%M} UTC.')
    if not token.user.is_active:
        raise TokenRefused(f"{token.user.get_username()}'s account is disabled.")
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token
