"""The price table and the people page: everybody reads them, only admins change them, all audited."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from accounts.roles import role_of, teams_of_user
from deployments.models import AuditEvent, VmPrice
from deployments.services.prices import vm_prices_seed

pytestmark = pytest.mark.django_db


@pytest.fixture
def prices():
    vm_prices_seed()
    return VmPrice.objects


def test_everybody_reads_the_price_table_with_gpu_sizes_and_a_free_local_row(client, viewer, prices):
    client.force_login(viewer)
    html = client.get(reverse("price_list")).content.decode()
    assert 'data-size="local"' in html and "Standard_NC24ads_A100_v4" in html and "NVIDIA A100 PCIe" in html
    assert 'name="price_per_hour"' not in html and "Only admins change prices." in html


def test_an_admin_changes_a_price_and_the_change_is_audited(client, admin_user, prices):
    client.force_login(admin_user)
    local = prices.get(vm_size="local")
    response = client.post(reverse("price_update", args=[local.pk]), {"price_per_hour": "0.75"}, follow=True)
    assert (
        "local costs $0.7500/h per node from now on; hours already run keep their price."
        in response.content.decode()
    )
    assert prices.get(vm_size="local").price_per_hour == Decimal("0.75")
    event = AuditEvent.objects.get(action="price.update")
    assert (event.actor_name, event.before["price_per_hour"], event.after["price_per_hour"]) == (
        "ada",
        "0.0000",
        "0.7500",
    )


def test_a_bad_price_gets_a_message_and_changes_nothing(client, admin_user, prices):
    client.force_login(admin_user)
    local = prices.get(vm_size="local")
    for bad in ("-1", "abc", ""):
        response = client.post(reverse("price_update", args=[local.pk]), {"price_per_hour": bad}, follow=True)
        assert "Nothing was changed." in response.content.decode()
    assert prices.get(vm_size="local").price_per_hour == 0
    assert not AuditEvent.objects.filter(action="price.update").exists()


def test_deployers_and_viewers_cannot_change_prices(client, deployer, viewer, prices):
    local = prices.get(vm_size="local")
    for user in (deployer, viewer):
        client.force_login(user)
        assert (
            client.post(reverse("price_update", args=[local.pk]), {"price_per_hour": "9"}).status_code == 403
        )
        assert (
            client.post(reverse("price_create"), {"vm_size": "X", "price_per_hour": "1"}).status_code == 403
        )
    assert prices.get(vm_size="local").price_per_hour == 0


def test_an_admin_adds_a_size(client, admin_user, prices):
    client.force_login(admin_user)
    data = {
        "vm_size": "Standard_NC8as_T4_v9",
        "price_per_hour": "0.9",
        "gpu_count": "1",
        "gpu_kind": "NVIDIA T4",
    }
    assert client.post(reverse("price_create"), data).status_code == 302
    assert prices.get(vm_size="Standard_NC8as_T4_v9").gpu_count == 1
    again = client.post(reverse("price_create"), data)
    assert again.status_code == 400 and "already in the price table" in again.content.decode()


def test_everybody_sees_who_has_which_role_and_team(client, viewer, deployer, admin_user, outsider):
    client.force_login(viewer)
    html = client.get(reverse("people")).content.decode()
    for name in ("vera", "dana", "ada", "otto"):
        assert f'data-user="{name}"' in html
    assert 'name="role"' not in html


def test_an_admin_gives_a_role_and_a_team_and_both_are_audited(client, admin_user, viewer):
    client.force_login(admin_user)
    response = client.post(reverse("person_update", args=[viewer.pk]), {"role": "deployer", "team": "vision"})
    assert response.status_code == 302
    viewer = get_user_model().objects.get(pk=viewer.pk)
    assert role_of(viewer) == "deployer" and teams_of_user(viewer) == ["vision"]
    role = AuditEvent.objects.get(action="user.role")
    assert (role.actor_name, role.resource_name, role.before, role.after) == (
        "ada",
        "vera",
        {"role": "viewer"},
        {"role": "deployer"},
    )
    assert AuditEvent.objects.get(action="user.team").after == {"teams": ["vision"]}


def test_an_admin_cannot_change_their_own_role(client, admin_user, django_user_model):
    from django.contrib.auth.models import Group

    other_admin = django_user_model.objects.create_user("adele", "adele@example.com", "pw-adele")
    other_admin.groups.add(Group.objects.get(name="admin"))
    client.force_login(other_admin)
    response = client.post(
        reverse("person_update", args=[other_admin.pk]), {"role": "viewer", "team": ""}, follow=True
    )
    assert "Ask another admin" in response.content.decode()
    assert role_of(get_user_model().objects.get(pk=other_admin.pk)) == "admin"


def test_an_admin_adds_a_person_with_a_role(client, admin_user):
    client.force_login(admin_user)
    data = {
        "username": "nina",
        "email": "nina@example.com",
        "password": "long-enough-1",
        "role": "viewer",
        "team": "nlp",
    }
    assert client.post(reverse("person_create"), data).status_code == 302
    nina = get_user_model().objects.get(username="nina")
    assert (
        role_of(nina) == "viewer" and teams_of_user(nina) == ["nlp"] and nina.check_password("long-enough-1")
    )
    assert AuditEvent.objects.get(action="user.create").after["role"] == "viewer"
    short = client.post(reverse("person_create"), {**data, "username": "nino", "password": "short"})
    assert short.status_code == 400 and "too short" in short.content.decode()


def test_a_team_cannot_be_named_like_a_role(client, admin_user, viewer):
    client.force_login(admin_user)
    response = client.post(
        reverse("person_update", args=[viewer.pk]), {"role": "viewer", "team": "admin"}, follow=True
    )
    assert "is a role, not a team" in response.content.decode()
    assert role_of(get_user_model().objects.get(pk=viewer.pk)) == "viewer"
