"""Django's admin for people and groups: the one place outside the people page where roles change, so a
change made here is audited with the admin who made it, and the role groups themselves stay put."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import AbstractBaseUser, Group
from django.http import HttpRequest

from accounts.roles import ROLES
from dashboard.signals import RoleChanges

User = get_user_model()
ADMIN_MESSAGE = "in Django's admin"
_CHANGES = "_lynx_role_changes"  # the request's RoleChanges, from save_model to save_related


def _admin(request: HttpRequest) -> AbstractBaseUser:
    """Who is changing people: Django's admin lets only signed-in staff in (AdminSite.admin_view)."""
    assert isinstance(request.user, AbstractBaseUser)
    return request.user


class UserAdmin(DjangoUserAdmin):
    """Django's own, with every change to someone's role, superuser or staff flag audited as one event.

    The admin saves the user (the flags) in save_model and then the groups in save_related, both inside
    the admin's transaction; the RoleChanges started in the first is recorded at the end of the second, so
    swapping deployer for admin is one deployer → admin event, not two."""

    def save_model(self, request: HttpRequest, obj, form, change: bool) -> None:
        changes = RoleChanges(actor=_admin(request), message=ADMIN_MESSAGE)
        setattr(request, _CHANGES, changes)  # for save_related, next in the same request
        with changes.collecting():
            super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        changes = getattr(request, _CHANGES, None) or RoleChanges(
            actor=_admin(request), message=ADMIN_MESSAGE
        )
        with changes.collecting():
            super().save_related(request, form, formsets, change)
        changes.record()


class GroupForm(forms.ModelForm):
    class Meta:
        model = Group
        fields = ("name", "permissions")

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if name.lower() in ROLES and (self.instance.pk is None or self.instance.name != name):
            raise forms.ValidationError(f"{name} is a Lynx role; give people roles on the People page.")
        return name


class GroupAdmin(DjangoGroupAdmin):
    """Teams may be renamed and deleted; the role groups (viewer, deployer, admin) may not: renaming or
    deleting one would silently change the role of everyone in it."""

    form = GroupForm

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> tuple[str, ...]:
        readonly = tuple(super().get_readonly_fields(request, obj))
        return readonly + ("name",) if obj is not None and obj.name in ROLES else readonly

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        if obj is not None and obj.name in ROLES:
            return False
        return super().has_delete_permission(request, obj)


admin.site.unregister(User)
admin.site.register(User, UserAdmin)
admin.site.unregister(Group)
admin.site.register(Group, GroupAdmin)
