"""People and their roles and teams, as an admin changes them (audited)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group, User
from django.db import transaction

from accounts.roles import ROLES, groups_forget, role_of, teams_of_user
from dashboard.signals import role_changes_audited_by_caller
from deployments.services import Refused
from deployments.services.audit import audit_record


def user_role_set(*, actor: AbstractBaseUser, user: User, role: str) -> None:
    """Give a person exactly one role (viewer, deployer or admin), audited."""
    if role not in ROLES:
        raise Refused(f"A role is one of {', '.join(ROLES)} (got {role!r}).")
    if user.pk == actor.pk:
        raise Refused("Ask another admin to change your own role, so Lynx never loses its last admin.")
    if user.is_superuser:
        raise Refused(f"{user.get_username()} is a superuser, so always an admin (see Django's admin).")

    before = role_of(user)
    # This records its own user.role event below, so the role-change signals stay quiet.
    with transaction.atomic(), role_changes_audited_by_caller():
        user.groups.remove(*Group.objects.filter(name__in=ROLES).exclude(name=role))
        user.groups.add(Group.objects.get_or_create(name=role)[0])
        groups_forget(user)
        audit_record(
            actor=actor, action="user.role", resource=user, before={"role": before}, after={"role": role}
        )


def user_team_set(*, actor: AbstractBaseUser, user: User, team: str) -> None:
    """Put a person in one team ("" takes them out of every team), audited. Costs are totalled per team."""

    team = team.strip()
    if team.lower() in ROLES:
        raise Refused(f"{team} is a role, not a team; choose another team name.")
    before = teams_of_user(user)
    with transaction.atomic():
        user.groups.remove(*Group.objects.exclude(name__in=ROLES).exclude(name=team))
        if team:
            user.groups.add(Group.objects.get_or_create(name=team)[0])
        groups_forget(user)
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
        groups_forget(user)
        audit_record(
            actor=actor,
            action="user.create",
            resource=user,
            after={"username": username, "email": email, "role": role, "teams": teams_of_user(user)},
        )
    return user
