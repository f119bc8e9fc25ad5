"""The caller's own tokens: list, create (the secret is answered once), revoke."""

from __future__ import annotations

from datetime import datetime

from django.http import HttpRequest, HttpResponse
from ninja import Router, Schema

from api.auth import AUTH_ANY_ROLE, api_user, token_of
from api.errors import InvalidInput, NotFound
from api.forms import TokenForm
from api.models import ApiToken
from api.schemas import REFUSALS
from api.tokens import token_create, token_revoke

router = Router(auth=AUTH_ANY_ROLE)  # a viewer manages their own tokens too


class TokenOut(Schema):
    name: str
    prefix: str  # the first characters of the token, to recognise it
    read_only: bool
    status: str  # active | expired | revoked
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None


class TokenIn(Schema):
    name: str
    expires_days: int | None = None
    read_only: bool = False


class TokenCreated(TokenOut):
    token: str  # shown this once: only its hash is kept


def _token(token: ApiToken) -> dict:
    return {
        "name": token.name,
        "prefix": token.prefix,
        "read_only": token.read_only,
        "status": token.status,
        "created_at": token.created_at,
        "last_used_at": token.last_used_at,
        "expires_at": token.expires_at,
    }


@router.get("", response={200: list[TokenOut], **REFUSALS}, summary="Your tokens (not revoked)")
def token_list(request: HttpRequest) -> list[dict]:
    return [_token(t) for t in ApiToken.objects.filter(user=api_user(request), revoked_at__isnull=True)]


@router.post("", response={201: TokenCreated, **REFUSALS}, summary="Make a token (its secret is shown once)")
def token_new(request: HttpRequest, response: HttpResponse, payload: TokenIn) -> tuple[int, dict]:
    user = api_user(request)
    # The page's form: the same rules, said per field (a 400).
    form = TokenForm(payload.dict())
    if not form.is_valid():
        raise InvalidInput.from_form(form)
    new = token_create(
        actor=user,
        owner=user,
        name=form.cleaned_data["name"],
        expires_days=form.cleaned_data["expires_days"],
        read_only=form.cleaned_data["read_only"],
        parent=token_of(request),
    )
    response["Cache-Control"] = "no-store"  # it holds the secret
    return 201, {**_token(new.token), "token": new.secret}


@router.delete("/{name}", response={200: TokenOut, **REFUSALS}, summary="Revoke one of your tokens")
def token_delete(request: HttpRequest, name: str) -> dict:
    user = api_user(request)
    if not ApiToken.objects.filter(user=user, name=name, revoked_at__isnull=True).exists():
        raise NotFound(f"You have no live token named {name}.")
    return _token(token_revoke(actor=user, owner=user, name=name))
