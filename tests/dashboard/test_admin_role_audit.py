"""A role changed anywhere is audited once: in Django's admin (with the admin who did it), on the people page
(which records its own event), and in code that goes round both (recorded as system)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from accounts.roles import role_of
from deployments.models import AuditEvent

pytestmark = pytest.mark.django_db


def role_events() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="user.role").order_by("id"))


def group(name: str) -> Group:
    return Group.objects.get_or_create(name=name)[0]


def change_form(user, **overrides) -> dict:
    """What Django's user change form posts for `user` as it is now, with `overrides` applied."""
    joined = timezone.localtime(user.date_joined)
    data = {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "is_active": "on",
        "groups": [g.pk for g in user.groups.all()],
        "user_permissions": [],
        "last_login_0": "",
        "last_login_1": "",
        "date_joined_0": joined.strftime("%Y-%m-%d"),
        "date_joined_1": joined.strftime("%H:%M:%S"),
        "_save": "Save",
    }
    if user.is_staff:
        data["is_staff"] = "on"
    if user.is_superuser:
        data["is_superuser"] = "on"
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def post_change(client, user, **overrides):
    url = reverse("admin:auth_user_change", args=[user.pk])
    assert client.get(url).status_code == 200
    response = client.post(url, change_form(user, **overrides))
    assert response.status_code == 302, response.context["adminform"].form.errors
    return get_user_model().objects.get(pk=user.pk)


def test_creating_users_with_their_first_role_is_not_a_role_change(viewer, deployer, admin_user):
    assert role_events() == []


def test_adding_the_admin_group_in_django_admin_is_audited_with_who_did_it(client, admin_user, viewer):
    client.force_login(admin_user)
    vera = post_change(client, viewer, groups=[group("viewer").pk, group("admin").pk])
    assert role_of(vera) == "admin"
    [event] = role_events()
    assert (
        event.actor_name,
        event.actor_id,
        event.resource_type,
        event.resource_name,
        event.resource_id,
    ) == (
        "ada",
        admin_user.pk,
        "user",
        "vera",
        viewer.pk,
    )
    assert event.before["role"] == "viewer" and event.after["role"] == "admin"
    assert "Django's admin" in event.message


def test_swapping_one_role_group_for_another_is_one_event(client, admin_user, deployer):
    client.force_login(admin_user)
    post_change(client, deployer, groups=[group("admin").pk])
    [event] = role_events()
    assert (event.before["role"], event.after["role"]) == ("deployer", "admin")


def test_making_someone_a_superuser_or_staff_is_audited(client, admin_user, viewer):
    client.force_login(admin_user)
    post_change(client, viewer, is_staff="on")
    [staff] = role_events()
    assert (staff.before["staff"], staff.after["staff"], staff.after["role"]) == (False, True, "viewer")
    vera = get_user_model().objects.get(pk=viewer.pk)
    post_change(client, vera, is_superuser="on")
    superuser = role_events()[1]
    assert (superuser.before["superuser"], superuser.after["superuser"]) == (False, True)
    assert (superuser.before["role"], superuser.after["role"]) == ("viewer", "admin")
    assert superuser.actor_name == "ada"


def test_saving_the_admin_form_unchanged_records_nothing(client, admin_user, deployer):
    client.force_login(admin_user)
    post_change(client, deployer, first_name="Dana")
    assert role_events() == []


def test_a_team_change_in_django_admin_is_not_a_role_change(client, admin_user, deployer):
    client.force_login(admin_user)
    post_change(client, deployer, groups=[group("deployer").pk, group("vision").pk])
    assert role_events() == []


def test_the_people_page_records_its_own_role_change_once(client, admin_user, viewer):
    client.force_login(admin_user)
    response = client.post(reverse("person_update", args=[viewer.pk]), {"role": "deployer", "team": ""})
    assert response.status_code == 302
    [event] = role_events()
    assert (event.actor_name, event.before, event.after) == ("ada", {"role": "viewer"}, {"role": "deployer"})


def test_a_role_change_in_code_is_audited_as_system(viewer):
    vera = get_user_model().objects.get(pk=viewer.pk)
    group("admin").user_set.add(vera)
    vera.is_superuser = True
    vera.save()
    grant, superuser = role_events()
    assert (grant.actor_name, grant.resource_name, grant.before["role"], grant.after["role"]) == (
        "system",
        "vera",
        "viewer",
        "admin",
    )
    assert (superuser.before["superuser"], superuser.after["superuser"]) == (False, True)
    group("admin").user_set.remove(
        vera
    )  # still a superuser, so still an admin: the superuser flag is what changed
    assert len(role_events()) == 2
    vera.groups.clear()
    vera.is_superuser = False
    vera.save()
    assert role_events()[-1].after["role"] == "viewer"


def test_renaming_or_deleting_a_role_group_in_code_is_audited_for_each_member(viewer, deployer, teammate):
    deployers = group("deployer")
    deployers.name = "deployers"
    deployers.save()
    assert sorted((e.resource_name, e.before["role"], e.after["role"]) for e in role_events()) == [
        ("dana", "deployer", "viewer"),
        ("theo", "deployer", "viewer"),
    ]
    deployers.name = "deployer"
    deployers.save()
    group("deployer").delete()
    assert [(e.before["role"], e.after["role"]) for e in role_events()[2:]] == [
        ("viewer", "deployer")
    ] * 2 + [("deployer", "viewer")] * 2


def test_the_group_admin_neither_renames_nor_deletes_a_role_group(client, admin_user, deployer):
    client.force_login(admin_user)
    deployers = group("deployer")
    change = reverse("admin:auth_group_change", args=[deployers.pk])
    client.post(change, {"name": "deployers", "permissions": [], "_save": "Save"})
    assert Group.objects.filter(name="deployer").exists()
    delete = reverse("admin:auth_group_delete", args=[deployers.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert Group.objects.filter(pk=deployers.pk).exists()
    team = group("vision")
    response = client.post(
        reverse("admin:auth_group_change", args=[team.pk]),
        {"name": "admin", "permissions": [], "_save": "Save"},
    )
    assert response.status_code == 200 and Group.objects.get(pk=team.pk).name == "vision"
    assert role_events() == []


def test_a_team_group_is_still_editable_in_the_admin(client, admin_user):
    client.force_login(admin_user)
    team = group("vision")
    response = client.post(
        reverse("admin:auth_group_change", args=[team.pk]),
        {"name": "vision-2", "permissions": [], "_save": "Save"},
    )
    assert response.status_code == 302 and Group.objects.get(pk=team.pk).name == "vision-2"


def test_adding_a_user_in_django_admin_gives_no_role_so_records_no_role_change(client, admin_user):
    client.force_login(admin_user)
    response = client.post(
        reverse("admin:auth_user_add"),
        {
            "username": "nina",
            "usable_password": "true",
            "password1": "long-enough-1",
            "password2": "long-enough-1",
            "_save": "Save",
        },
    )
    assert response.status_code == 302
    nina = get_user_model().objects.get(username="nina")
    assert role_of(nina) == "viewer" and role_events() == []
    post_change(client, nina, groups=[group("deployer").pk])
    assert [(e.resource_name, e.after["role"]) for e in role_events()] == [("nina", "deployer")]
