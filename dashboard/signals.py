"""Role changes made anywhere are audited: a person's role (their role groups, or superuser) and their staff
flag (which opens Django's admin) are compared before and after every change to them, wherever it comes from.

Django's admin records who did it (`RoleChanges` in dashboard/admin.py). The people page records its own
event and asks these signals to stay quiet (`role_changes_audited_by_caller`). Anything else (a shell, a
script, a migration) is recorded as `system`. A user's first groups, added to the very object that created
them, are part of their creation, not a change of role.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save

from accounts.roles import ADMIN, DEPLOYER, ROLES, VIEWER
from deployments.services.audit import audit_record

Snapshot = dict[str, Any]
_CREATED = "_lynx_created_here"
_ROLE_RENAME = "_lynx_role_rename"  # on a Group being saved: its rename changes roles


def snapshot(user_pk: int) -> Snapshot | None:
    """What a person may do, read from the database: their role, superuser and staff flags."""
    row = get_user_model().objects.filter(pk=user_pk).values("is_superuser", "is_staff").first()
    if row is None:
        return None
    groups = set(Group.objects.filter(user__pk=user_pk, name__in=ROLES).values_list("name", flat=True))
    if row["is_superuser"] or ADMIN in groups:
        role = ADMIN
    else:
        role = DEPLOYER if DEPLOYER in groups else VIEWER
    return {"role": role, "superuser": row["is_superuser"], "staff": row["is_staff"]}


class RoleChanges:
    """Collects the people a piece of work touches (their state before it) and records, when asked, one
    `user.role` event per person whose role or flags differ afterwards. `record=False` collects only, for a
    caller that records its own event."""

    def __init__(self, *, actor: AbstractBaseUser | None, message: str = "", record: bool = True) -> None:
        self.actor, self.message, self.recording = actor, message, record
        self.before: dict[int, Snapshot | None] = {}

    def touch(self, user_pks: Iterable[int]) -> None:
        if not self.recording:
            return
        for pk in user_pks:
            if pk not in self.before:
                self.before[pk] = snapshot(pk)

    @contextmanager
    def collecting(self) -> Iterator[RoleChanges]:
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)

    def record(self) -> None:
        """One audit event per person whose role changed; call it inside the transaction that changed it."""

        before, self.before = self.before, {}
        if not self.recording:
            return
        for pk, was in sorted(before.items()):
            now = snapshot(pk)
            if was is None or now is None or was == now:
                continue
            audit_record(
                actor=self.actor,
                action="user.role",
                resource=get_user_model().objects.get(pk=pk),
                before=was,
                after=now,
                message=self.message,
            )


_current: ContextVar[RoleChanges | None] = ContextVar("lynx_role_changes", default=None)
# Between a pre_ signal and its post_ signal outside any RoleChanges (a change made in code).
_unattended: ContextVar[RoleChanges | None] = ContextVar("lynx_unattended_role_changes", default=None)
UNATTENDED_MESSAGE = "changed outside the dashboard (shell, script or migration)"


@contextmanager
def role_changes_audited_by_caller() -> Iterator[None]:
    """For a service that records its own `user.role` event (the people page): the signals stay quiet."""
    with RoleChanges(actor=None, record=False).collecting():
        yield


def _before(user_pks: Iterable[int]) -> None:
    scope = _current.get()
    if scope is None:
        scope = _unattended.get()
        if scope is None:
            scope = RoleChanges(actor=None, message=UNATTENDED_MESSAGE)
            _unattended.set(scope)
    scope.touch(user_pks)


def _after() -> None:
    """The change is made: outside a RoleChanges, record it now; inside one, its owner records it."""
    if _current.get() is not None:
        return
    scope = _unattended.get()
    if scope is not None:
        _unattended.set(None)
        scope.record()


# --- the signals ------------------------------------------------------------------------------------


def _groups_changed(sender, instance, action: str, reverse: bool, pk_set: set[int] | None, **kwargs) -> None:
    if action.startswith("post_"):
        # Always: post_add's pk_set can be smaller than pre_add's (rows already there are skipped).
        _after()
        return
    if not reverse:  # user.groups.add(...): one user, the groups in pk_set
        if getattr(instance, _CREATED, False):
            return
        if pk_set is not None and not Group.objects.filter(pk__in=pk_set, name__in=ROLES).exists():
            return  # only teams: the role cannot change
        users = [instance.pk]
    else:  # group.user_set.add(...): one group, the users in pk_set (all its members when cleared)
        if instance.name not in ROLES:
            return
        users = list(pk_set) if pk_set is not None else _members(instance)
    _before(users)


def _members(group: Group) -> list[int]:
    return list(get_user_model().objects.filter(groups=group).values_list("pk", flat=True))


FLAGS = {"is_superuser", "is_staff"}


def _user_saving(sender, instance, update_fields=None, **kwargs) -> None:
    if instance._state.adding or (update_fields is not None and not FLAGS & set(update_fields)):
        return  # a new user (creation is not a change), or a save that leaves the flags alone (last_login)
    _before([instance.pk])


def _user_saved(sender, instance, created: bool, update_fields=None, **kwargs) -> None:
    if created:
        # Groups added next to this very object belong to its creation (user_create, createsuperuser, tests).
        setattr(instance, _CREATED, True)
        return
    if update_fields is None or FLAGS & set(update_fields):
        _after()


def _group_saving(sender, instance: Group, **kwargs) -> None:
    # Renaming a role group changes the role of every member; renaming a team into a role name too.
    if instance._state.adding:
        return
    old = Group.objects.filter(pk=instance.pk).values_list("name", flat=True).first()
    if old != instance.name and (old in ROLES or instance.name in ROLES):
        _before(_members(instance))
        setattr(instance, _ROLE_RENAME, True)


def _group_saved(sender, instance: Group, created: bool, **kwargs) -> None:
    if getattr(instance, _ROLE_RENAME, False):
        delattr(instance, _ROLE_RENAME)
        _after()


def _group_deleting(sender, instance: Group, **kwargs) -> None:
    if instance.name in ROLES:
        _before(_members(instance))


def _group_deleted(sender, instance: Group, **kwargs) -> None:
    if instance.name in ROLES:
        _after()


def connect() -> None:
    """Wire the signals (called from DashboardConfig.ready)."""
    users = get_user_model()
    m2m_changed.connect(_groups_changed, sender=users.groups.through, dispatch_uid="lynx_role_groups")
    pre_save.connect(_user_saving, sender=users, dispatch_uid="lynx_role_user_saving")
    post_save.connect(_user_saved, sender=users, dispatch_uid="lynx_role_user_saved")
    pre_save.connect(_group_saving, sender=Group, dispatch_uid="lynx_role_group_saving")
    post_save.connect(_group_saved, sender=Group, dispatch_uid="lynx_role_group_saved")
    pre_delete.connect(_group_deleting, sender=Group, dispatch_uid="lynx_role_group_deleting")
    post_delete.connect(_group_deleted, sender=Group, dispatch_uid="lynx_role_group_deleted")
