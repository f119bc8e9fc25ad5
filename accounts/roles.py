"""Roles are Django groups: viewer reads everything but secrets; deployer changes clusters and
deployments; admin manages workspaces, prices and users. Superusers are admins."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, PermissionsMixin, User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

VIEWER, DEPLOYER, ADMIN = "viewer", "deployer", "admin"
ROLES = (VIEWER, DEPLOYER, ADMIN)

# Whoever a request or a task acts for: a person, or nobody signed in (the system, in audit rows).
AnyUser = AbstractBaseUser | AnonymousUser


class AuthedRequest(HttpRequest):
    """A request to a page behind the login (LoginRequiredMiddleware guards every view not marked
    login_not_required), so its user is a signed-in person. Views annotate `request` with it."""

    user: User


def _groups(user: AnyUser) -> set[str]:
    # The user model (auth.User) has PermissionsMixin's groups and superuser flag; AnonymousUser has not.
    if not isinstance(user, PermissionsMixin) or not user.is_authenticated:
        return set()
    cached = getattr(user, "_lynx_groups", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))
        groups_remember(user, cached)
    return cached


def groups_remember(user: AnyUser, names: set[str]) -> None:
    """Cache the user's group names (read by the role predicates) for the life of this object."""
    user.__dict__["_lynx_groups"] = names


def is_admin(user: AnyUser) -> bool:
    return (
        user.is_authenticated
        and isinstance(user, PermissionsMixin)
        and (user.is_superuser or ADMIN in _groups(user))
    )


def can_deploy(user: AnyUser) -> bool:
    return is_admin(user) or DEPLOYER in _groups(user)


def role_of(user: AnyUser) -> str:
    if is_admin(user):
        return ADMIN
    return DEPLOYER if can_deploy(user) else VIEWER


def deployer_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not can_deploy(request.user):
            raise PermissionDenied("Your role is viewer: ask an admin for the deployer role.")
        return view(request, *args, **kwargs)

    return wrapped


def admin_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not is_admin(request.user):
            raise PermissionDenied("Only admins may do this.")
        return view(request, *args, **kwargs)

    return wrapped


# --- people: an admin gives roles and teams (a team is any other Django group) --------------------


def teams_of_user(user: AnyUser) -> list[str]:
    return sorted(name for name in _groups(user) if name not in ROLES)


def groups_forget(user: AnyUser) -> None:
    """Drop the cached group names after the user's groups changed."""
    user.__dict__.pop("_lynx_groups", None)
