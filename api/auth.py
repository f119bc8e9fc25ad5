"""Who an API request acts for: a bearer token, or the browser's session (writes with CSRF only)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from ninja.security import HttpBearer, SessionAuth

from accounts.roles import ADMIN, DEPLOYER, AuthedRequest, can_deploy, is_admin
from api.models import ApiToken
from api.tokens import TokenRefused, token_authenticate
from deployments.services.audit import audit_via_begin

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _may_write(request: HttpRequest, user: User, write_role: str | None) -> None:
    """Checked with authentication, before the body is read: a role that may not write gets 403 whatever it
    sent (not a 400 about its body), as the pages' decorators refuse before a form is looked at."""
    if request.method in SAFE_METHODS or write_role is None:
        return
    if write_role == ADMIN and not is_admin(user):
        raise PermissionDenied("Only admins may do this.")
    if write_role == DEPLOYER and not can_deploy(user):
        raise PermissionDenied("Your role is viewer: ask an admin for the deployer role.")


class TokenAuth(HttpBearer):
    """`Authorization: Bearer lynx_…`. A bad token is refused with its reason, never passed to the session.

    write_role: the role a write (POST, PUT, PATCH, DELETE) needs; None: anyone signed in (their own tokens).
    """

    openapi_description = "An API token from your Tokens page or `manage.py lynx_token create`."

    def __init__(self, write_role: str | None = DEPLOYER) -> None:
        super().__init__()
        self.write_role = write_role

    def authenticate(self, request: HttpRequest, token: str) -> ApiToken:
        found = token_authenticate(token)  # raises TokenRefused: a 401 with the reason
        # The person acts with their role as it is now; read-only tokens only read.
        request.user = found.user
        request.api_token = found  # type: ignore[attr-defined]
        if found.read_only and request.method not in SAFE_METHODS:
            raise PermissionDenied(f'The token "{found.name}" is read-only.')
        _may_write(request, found.user, self.write_role)
        audit_via_begin(f"token {found.name}")
        return found

    def __call__(self, request: HttpRequest) -> Any:
        header = request.headers.get("Authorization", "")
        if header and not header.lower().startswith("bearer "):
            raise TokenRefused("Send the token as Authorization: Bearer <token>.")
        return super().__call__(request)


class SessionOrNone(SessionAuth):
    """The pages' signed-in session: the docs page tries calls with it. Writes need the CSRF token."""

    def __init__(self, write_role: str | None = DEPLOYER) -> None:
        super().__init__(csrf=True)
        self.write_role = write_role

    def __call__(self, request: HttpRequest) -> User | None:
        # Who, then the role, and only then the CSRF check (ninja's, in super()): Django's CSRF check reads
        # request.POST, which parses (to disk) a multipart body of anyone sending a made-up csrftoken cookie.
        user = request.user
        if not (isinstance(user, User) and user.is_authenticated):
            return None
        _may_write(request, user, self.write_role)
        return super().__call__(request)

    def authenticate(self, request: HttpRequest, key: str | None) -> User | None:
        user = request.user
        return user if isinstance(user, User) and user.is_authenticated else None


# Every operation's default: anyone signed in reads, deployers and admins write.
AUTH = [TokenAuth(), SessionOrNone()]
# Writes any signed-in person may make (their own tokens), and writes only admins may make (people).
AUTH_ANY_ROLE = [TokenAuth(write_role=None), SessionOrNone(write_role=None)]
AUTH_ADMIN = [TokenAuth(write_role=ADMIN), SessionOrNone(write_role=ADMIN)]


def api_user(request: HttpRequest) -> User:
    """The person the request acts for (authentication has run)."""
    user = request.user
    assert isinstance(user, User) and user.is_authenticated, "the API authenticates every operation"
    return user


def require_deployer(request: HttpRequest) -> User:
    user = api_user(request)
    if not can_deploy(user):
        raise PermissionDenied("Your role is viewer: ask an admin for the deployer role.")
    return user


def require_admin(request: HttpRequest) -> User:
    user = api_user(request)
    if not is_admin(user):
        raise PermissionDenied("Only admins may do this.")
    return user


def token_of(request: HttpRequest | AuthedRequest) -> ApiToken | None:
    return getattr(request, "api_token", None)
