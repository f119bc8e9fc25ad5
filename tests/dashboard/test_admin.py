"""Django's admin shows superusers every row but changes none (writes go through the audited services), and
never shows a secret."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from deployments.crypto import encrypt
from deployments.models import Cluster, Deployment, ExternalResource, VmPrice, Workspace
from deployments.services.prices import vm_prices_seed
from tests.deployments.factories import ready_cluster, start_deployment

pytestmark = pytest.mark.django_db

WORKSPACE_SECRET = "client-secret-value-never-shown"
SERVICE_KEY = "primary-key-value-never-shown"


@pytest.fixture
def rows(deployer, demo_model):
    vm_prices_seed()
    workspace = Workspace.objects.create(
        name="team",
        subscription_id="00000000-0000-0000-0000-000000000001",
        resource_group="rg",
        workspace_name="ws",
        tenant_id="tenant",
        client_id="client",
        client_secret_encrypted=encrypt(WORKSPACE_SECRET),
    )
    cluster = ready_cluster(deployer)
    deployment = start_deployment(deployer, cluster, demo_model).deployment
    Deployment.objects.filter(pk=deployment.pk).update(primary_key_encrypted=encrypt(SERVICE_KEY))
    ExternalResource.objects.create(
        workspace=workspace,
        finding=ExternalResource.Finding.UNMANAGED,
        kind=ExternalResource.Kind.COMPUTE,
        name="x",
    )
    return {"workspace": workspace, "cluster": cluster, "deployment": deployment}


def _pages(obj) -> tuple[str, str]:
    meta = obj._meta
    return (
        reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"),
        reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk]),
    )


def test_a_superuser_reads_every_registered_model_without_its_secrets(client, admin_user, rows):
    client.force_login(admin_user)
    for model in admin.site._registry:
        obj = model.objects.first()
        assert obj is not None, f"the fixture made no {model.__name__} to show"
        listing, detail = _pages(obj)
        for url in (listing, detail):
            response = client.get(url)
            assert response.status_code == 200, url
            html = response.content.decode()
            assert WORKSPACE_SECRET not in html and SERVICE_KEY not in html, url
            assert rows["workspace"].client_secret_encrypted not in html, url
    detail = client.get(_pages(rows["workspace"])[1]).content.decode()
    assert "team" in detail and "client_secret" not in detail


@pytest.mark.parametrize("what", ["workspace", "cluster", "deployment"])
def test_the_admin_changes_adds_and_deletes_nothing(client, admin_user, rows, what):
    client.force_login(admin_user)
    obj = rows[what]
    meta = obj._meta
    _, detail = _pages(obj)
    assert client.post(detail, {"name": "renamed"}).status_code == 403
    add = reverse(f"admin:{meta.app_label}_{meta.model_name}_add")
    assert client.get(add).status_code == 403
    delete = reverse(f"admin:{meta.app_label}_{meta.model_name}_delete", args=[obj.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert type(obj).objects.get(pk=obj.pk).name == obj.name


def test_price_changes_and_sync_findings_are_listed(client, admin_user, rows):
    client.force_login(admin_user)
    assert client.get(reverse("admin:deployments_vmpricechange_changelist")).status_code == 200
    assert client.get(reverse("admin:deployments_externalresource_changelist")).status_code == 200
    assert VmPrice.objects.exists() and Cluster.objects.exists()
