"""Connecting an Azure ML workspace: admins only, the secret encrypted and never shown, tested by a worker."""

from __future__ import annotations

import os

import pytest
import requests
from django.urls import reverse

from deployments.crypto import decrypt
from deployments.models import AuditEvent, Operation, OperationKind, Workspace
from tests.azure_emulator import AzureEmulator
from tests.targets.azureml.conftest import lines_of, run_inline, unique

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")]


def form_data(emu: AzureEmulator, **overrides: str) -> dict[str, str]:
    return {
        "name": unique("team"),
        **emu.workspace_fields(),
        "location": "",
        "idempotency_key": unique("key"),
        **overrides,
    }


def test_emulator_env_is_harmless_to_local_addresses() -> None:
    no_proxy = {host.strip() for host in os.environ["NO_PROXY"].split(",")}
    assert {"127.0.0.1", "localhost"} <= no_proxy
    assert requests.utils.should_bypass_proxies("http://127.0.0.1:8000/score", None)
    assert requests.utils.should_bypass_proxies("http://localhost:8000/", None)


def test_admin_connects_a_workspace_and_the_secret_is_never_shown(client, admin_user, azure_emulator) -> None:
    client.force_login(admin_user)
    data = form_data(azure_emulator)

    response = client.post(reverse("workspace_new"), data)

    operation = Operation.objects.get(kind=OperationKind.WORKSPACE_TEST)
    assert response.status_code == 302 and response.url == reverse("operation_detail", args=[operation.pk])
    workspace = Workspace.objects.get(name=data["name"])
    assert azure_emulator.client_secret not in workspace.client_secret_encrypted
    assert decrypt(workspace.client_secret_encrypted) == azure_emulator.client_secret
    assert operation.workspace == workspace and operation.state == "queued"

    operation = run_inline(operation.pk)

    assert operation.state == "succeeded", operation.error
    workspace.refresh_from_db()
    assert workspace.last_check_ok is True and workspace.location == "eastus"
    assert azure_emulator.workspace_name in workspace.last_check_result
    assert any(line.startswith("Succeeded: Signed in as") for line in lines_of(operation))
    for url in (
        reverse("workspace_detail", args=[workspace.pk]),
        reverse("workspace_list"),
        reverse("operation_detail", args=[operation.pk]),
        reverse("workspace_secret", args=[workspace.pk]),
    ):
        page = client.get(url)
        assert page.status_code == 200
        assert azure_emulator.client_secret not in page.content.decode(), url
    audit = AuditEvent.objects.filter(resource_type="workspace", resource_id=workspace.pk)
    assert {"workspace.create", "workspace.test"} <= set(audit.values_list("action", flat=True))
    assert all(
        azure_emulator.client_secret not in f"{e.before}{e.after}{e.message}"
        for e in AuditEvent.objects.all()
    )


def test_only_admins_connect_workspaces(client, deployer, azure_emulator) -> None:
    client.force_login(deployer)

    assert client.get(reverse("workspace_new")).status_code == 403
    assert client.post(reverse("workspace_new"), form_data(azure_emulator)).status_code == 403
    assert not Workspace.objects.exists() and not Operation.objects.exists()


def test_bad_input_is_refused_with_the_rule_and_changes_nothing(client, admin_user, azure_emulator) -> None:
    client.force_login(admin_user)

    response = client.post(
        reverse("workspace_new"), form_data(azure_emulator, subscription_id="not-a-guid", client_secret="")
    )

    assert response.status_code == 400
    text = response.content.decode()
    assert "8-4-4-4-12 hexadecimal digits" in text and "This field is required" in text
    assert not Workspace.objects.exists()


@pytest.mark.parametrize(
    ("fault", "overrides", "says", "azure_says"),
    [
        ("none", {"client_secret": "not-the-secret"}, "Wrong client secret", "AADSTS7000215"),
        ("expire", {}, "The client secret has expired", "AADSTS7000222"),
        ("none", {"workspace_name": "no-such-ws"}, "Workspace not found", "no-such-ws"),
        ("deny", {}, "No permission", "AuthorizationFailed"),
    ],
)
def test_a_failed_connection_test_says_what_is_wrong(
    client, admin_user, azure_emulator, fault, overrides, says, azure_says
) -> None:
    if fault == "expire":
        azure_emulator.expire_client_secret()
    elif fault == "deny":
        azure_emulator.deny_access()
    client.force_login(admin_user)
    client.post(reverse("workspace_new"), form_data(azure_emulator, **overrides))
    operation = Operation.objects.get(kind=OperationKind.WORKSPACE_TEST)

    operation = run_inline(operation.pk)

    assert operation.state == "failed"
    assert operation.error.startswith(says) and azure_says in operation.error
    assert "Azure said:" in operation.error and not operation.attempts  # permanent: no retries
    workspace = operation.workspace
    workspace.refresh_from_db()
    assert workspace.last_check_ok is False and workspace.last_check_result == operation.error
    page = client.get(reverse("operation_detail", args=[operation.pk])).content.decode()
    assert says in page
    assert (
        "connection failed" in client.get(reverse("workspace_detail", args=[workspace.pk])).content.decode()
    )


def test_a_new_secret_replaces_the_wrong_one_and_is_tested(client, admin_user, azure_emulator) -> None:
    client.force_login(admin_user)
    client.post(reverse("workspace_new"), form_data(azure_emulator, client_secret="typo"))
    first = run_inline(Operation.objects.get(kind=OperationKind.WORKSPACE_TEST).pk)
    assert first.state == "failed"
    workspace = first.workspace

    response = client.post(
        reverse("workspace_secret", args=[workspace.pk]),
        {"client_secret": azure_emulator.client_secret, "idempotency_key": unique("k")},
    )

    second = Operation.objects.exclude(pk=first.pk).get(kind=OperationKind.WORKSPACE_TEST)
    assert response.status_code == 302
    assert run_inline(second.pk).state == "succeeded"
    workspace.refresh_from_db()
    assert workspace.last_check_ok is True
    assert decrypt(workspace.client_secret_encrypted) == azure_emulator.client_secret
    assert AuditEvent.objects.filter(action="workspace.secret", resource_id=workspace.pk).exists()


def test_the_same_workspace_is_not_connected_twice(client, admin_user, workspace, azure_emulator) -> None:
    client.force_login(admin_user)

    response = client.post(reverse("workspace_new"), form_data(azure_emulator))

    assert response.status_code == 400
    assert f"already connected as {workspace.name}" in response.content.decode()
    assert Workspace.objects.count() == 1


def test_a_viewer_sees_workspaces_but_no_admin_buttons(client, viewer, workspace) -> None:
    client.force_login(viewer)

    page = client.get(reverse("workspace_detail", args=[workspace.pk])).content.decode()

    assert workspace.client_id in page and "Test connection" not in page and "New client secret" not in page
    assert client.post(reverse("workspace_test", args=[workspace.pk])).status_code == 403
