"""Roles are Django groups: viewer reads everything but secrets; deployer changes clusters and
deployments; admin manages workspaces, prices and users. Superusers are admins."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

VIEWER, DEPLOYER, ADMIN = "viewer", "deployer", "admin"
ROLES = (VIEWER, DEPLOYER, ADMIN)


def _groups(user: AbstractBaseUser) -> set[str]:
    if not user.is_authenticated:
        return set()
    cached = getattr(user, "_lynx_groups", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))
        user._lynx_groups = cached
    return cached


def is_admin(user: AbstractBaseUser) -> bool:
    return user.is_authenticated and (user.is_superuser or ADMIN in _groups(user))


def can_deploy(user: AbstractBaseUser) -> bool:
    return is_admin(user) or DEPLOYER in _groups(user)


def role_of(user: AbstractBaseUser) -> str:
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


def teams_of_user(user: AbstractBaseUser) -> list[str]:
    return sorted(name for name in _groups(user) if name not in ROLES)


def groups_forget(user: AbstractBaseUser) -> None:
    """Drop the cached group names after the user's groups changed."""
    user.__dict__.pop("_lynx_groups", None)
