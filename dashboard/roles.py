"""Roles are Django groups: viewer reads everything but secrets; deployer changes clusters and
deployments; admin manages workspaces, prices and users. Superusers are admins."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group
from django.core.exceptions import PermissionDenied
from django.db import transaction
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


def _refresh_groups(user: AbstractBaseUser) -> None:
    user.__dict__.pop("_lynx_groups", None)


def user_role_set(*, actor: AbstractBaseUser, user: AbstractBaseUser, role: str) -> None:
    """Give a person exactly one role (viewer, deployer or admin), audited."""
    from deployments.services.audit import audit_record
    from deployments.services.operations import Refused

    if role not in ROLES:
        raise Refused(f"A role is one of {', '.join(ROLES)} (got {role!r}).")
    if user.pk == actor.pk:
        raise Refused("Ask another admin to change your own role, so Lynx never loses its last admin.")
    if user.is_superuser:
        raise Refused(f"{user.get_username()} is a superuser, so always an admin (see Django's admin).")
    from dashboard.signals import role_changes_audited_by_caller  # it imports this module

    before = role_of(user)
    # This records its own user.role event below, so the role-change signals stay quiet.
    with transaction.atomic(), role_changes_audited_by_caller():
        user.groups.remove(*Group.objects.filter(name__in=ROLES).exclude(name=role))
        user.groups.add(Group.objects.get_or_create(name=role)[0])
        _refresh_groups(user)
        audit_record(
            actor=actor, action="user.role", resource=user, before={"role": before}, after={"role": role}
        )


def user_team_set(*, actor: AbstractBaseUser, user: AbstractBaseUser, team: str) -> None:
    """Put a person in one team ("" takes them out of every team), audited. Costs are totalled per team."""
    from deployments.services.audit import audit_record
    from deployments.services.operations import Refused

    team = team.strip()
    if team.lower() in ROLES:
        raise Refused(f"{team} is a role, not a team; choose another team name.")
    before = teams_of_user(user)
    with transaction.atomic():
        user.groups.remove(*Group.objects.exclude(name__in=ROLES).exclude(name=team))
        if team:
            user.groups.add(Group.objects.get_or_create(name=team)[0])
        _refresh_groups(user)
        audit_record(
            actor=actor,
            action="user.team",
            resource=user,
            before={"teams": before},
            after={"teams": teams_of_user(user)},
        )


def user_create(
    *, actor: AbstractBaseUser, username: str, email: str, password: str, role: str, team: str = ""
) -> AbstractBaseUser:
    """Add a person with a role (and a team), audited. The password is theirs to change."""
    from deployments.services.audit import audit_record
    from deployments.services.operations import Refused

    users = get_user_model()
    if role not in ROLES:
        raise Refused(f"A role is one of {', '.join(ROLES)} (got {role!r}).")
    if users.objects.filter(username__iexact=username).exists():
        raise Refused(f"There is already a user called {username}.")
    with transaction.atomic():
        user = users.objects.create_user(username=username, email=email, password=password)
        user.groups.add(Group.objects.get_or_create(name=role)[0])
        if team.strip():
            user.groups.add(Group.objects.get_or_create(name=team.strip())[0])
        _refresh_groups(user)
        audit_record(
            actor=actor,
            action="user.create",
            resource=user,
            after={"username": username, "email": email, "role": role, "teams": teams_of_user(user)},
        )
    return user
