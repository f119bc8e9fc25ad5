"""Scoring keys: masked on the page, revealed once on POST (audited), regenerated on POST (audited) so that
the old key stops working at once."""

from __future__ import annotations

import json

import pytest
import requests
from django.conf import settings

from deployments.crypto import decrypt, encrypt, mask
from deployments.models import AuditEvent, Cluster, Deployment, Operation, OperationKind, Workspace
from deployments.services.operations import operation_advance, operation_start
from deployments.services.operations.steps import operation_queue
from deployments.states import OperationState, ProvisioningState, ServiceState
from targets.local.backend import LocalBackend
from tests.conftest import digit_images
from tests.deployments.conftest import login

pytestmark = pytest.mark.django_db


def _keys(deployment: Deployment) -> tuple[str, str]:
    deployment.refresh_from_db()
    return decrypt(deployment.primary_key_encrypted), decrypt(deployment.secondary_key_encrypted)


def test_the_page_shows_keys_masked_and_never_in_full(viewer, healthy_deployment):
    primary, secondary = _keys(healthy_deployment)
    page = login(viewer).get(f"/deployments/{healthy_deployment.pk}/").content.decode()
    assert mask(primary) in page and mask(secondary) in page
    assert primary not in page and secondary not in page
    assert "Reveal primary" not in page and "Regenerate primary" not in page  # a viewer gets no buttons


def test_reveal_shows_the_key_once_and_records_who_saw_it(deployer, healthy_deployment):
    primary, _ = _keys(healthy_deployment)
    client = login(deployer)
    response = client.post(f"/deployments/{healthy_deployment.pk}/keys/reveal/", {"key": "Primary"})
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    assert f'<code class="secret" id="revealed-key">{primary}</code>' in response.content.decode()
    event = AuditEvent.objects.get(action="deployment.key_reveal")
    assert (
        event.actor_name == "dana"
        and event.after == {"key": "Primary"}
        and primary not in json.dumps([event.before, event.after, event.message])
    )
    assert primary not in client.get(f"/deployments/{healthy_deployment.pk}/").content.decode()


def test_keys_cannot_be_revealed_or_regenerated_by_a_viewer_or_with_get(viewer, deployer, healthy_deployment):
    before = _keys(healthy_deployment)
    for action in ("reveal", "regenerate"):
        url = f"/deployments/{healthy_deployment.pk}/keys/{action}/"
        assert login(viewer).post(url, {"key": "Primary"}).status_code == 403
        # A GET (the revealed key's page reloaded) changes nothing and goes back to the keys, not to a 405.
        response = login(deployer).get(url)
        keys = f"/deployments/{healthy_deployment.pk}/#keys"
        assert (response.status_code, response["Location"]) == (302, keys)
    assert _keys(healthy_deployment) == before
    assert not AuditEvent.objects.filter(action__startswith="deployment.key_").exists()


def test_an_unknown_key_name_changes_nothing(deployer, healthy_deployment):
    before = _keys(healthy_deployment)
    response = login(deployer).post(
        f"/deployments/{healthy_deployment.pk}/keys/regenerate/", {"key": "Tertiary"}
    )
    assert response.status_code == 302 and _keys(healthy_deployment) == before


def _key_file(deployment: Deployment):
    return settings.LYNX_LOCAL_DIR / "services" / deployment.name / "keys.json"


def test_regenerate_replaces_one_key_in_the_database_and_in_the_key_file(deployer, healthy_deployment):
    old_primary, old_secondary = _keys(healthy_deployment)
    key_file = _key_file(healthy_deployment)
    key_file.parent.mkdir(
        parents=True, exist_ok=True
    )  # the deployment's state directory, as its replicas left it
    key_file.write_text(json.dumps({"primary": old_primary, "secondary": old_secondary}))
    client = login(deployer)
    response = client.post(f"/deployments/{healthy_deployment.pk}/keys/regenerate/", {"key": "Primary"})
    # A worker on the host that runs the replicas replaces it (the web may not be able to write the key file).
    operation = Operation.objects.get(
        deployment=healthy_deployment, kind=OperationKind.SERVICE_KEY_REGENERATE
    )
    assert response.status_code == 302 and response["Location"] == f"/operations/{operation.pk}/"
    assert operation_queue(operation.pk) == settings.LYNX_LOCAL_QUEUE
    assert _keys(healthy_deployment) == (old_primary, old_secondary)  # unchanged until the worker has done it
    assert operation_advance(operation_id=operation.pk) is None
    operation.refresh_from_db()
    assert operation.state == OperationState.SUCCEEDED
    new_primary, secondary = _keys(healthy_deployment)
    assert new_primary != old_primary and len(new_primary) >= 32 and secondary == old_secondary
    assert json.loads(key_file.read_text()) == {"primary": new_primary, "secondary": old_secondary}
    assert key_file.stat().st_mode & 0o077 == 0
    event = AuditEvent.objects.get(action="deployment.key_regenerate")
    assert event.actor_name == "dana" and "old primary key stops working" in event.message
    assert new_primary not in json.dumps([event.before, event.after, event.message])
    assert "old one no longer works" in client.get(response["Location"]).content.decode()


def test_regenerating_while_an_operation_runs_is_refused(deployer, healthy_deployment):
    before = _keys(healthy_deployment)
    operation_start(
        kind=OperationKind.SERVICE_UPDATE,
        user=deployer,
        deployment=healthy_deployment,
        cluster=healthy_deployment.cluster,
    )
    client = login(deployer)
    response = client.post(
        f"/deployments/{healthy_deployment.pk}/keys/regenerate/", {"key": "Secondary"}, follow=True
    )
    assert "has an operation in progress" in response.content.decode()
    assert _keys(healthy_deployment) == before


def test_an_azure_deployment_key_is_not_regenerated_in_the_request(deployer, demo_model):
    workspace = Workspace.objects.create(
        name="prod-ws",
        subscription_id="s",
        resource_group="rg",
        workspace_name="ws",
        tenant_id="t",
        client_id="c",
        client_secret_encrypted=encrypt("secret"),
    )
    cluster = Cluster.objects.create(
        name="aks-gpu",
        backend="azureml",
        workspace=workspace,
        provisioning_state=ProvisioningState.SUCCEEDED,
    )
    deployment = Deployment.objects.create(
        name="on-azure",
        cluster=cluster,
        model=demo_model,
        entry_script="x",
        environment_yaml="x",
        state=ServiceState.HEALTHY,
        primary_key_encrypted=encrypt("azure-key-1"),
        secondary_key_encrypted=encrypt("azure-key-2"),
    )
    response = login(deployer).post(f"/deployments/{deployment.pk}/keys/regenerate/", {"key": "Primary"})
    # Azure regenerates its own keys, and regen_key blocks while it polls: that is a worker's job.
    operation = Operation.objects.get(deployment=deployment, kind=OperationKind.SERVICE_KEY_REGENERATE)
    assert response.status_code == 302 and response["Location"] == f"/operations/{operation.pk}/"
    assert operation.params["key"] == "Primary"
    assert _keys(deployment) == ("azure-key-1", "azure-key-2")  # unchanged until the worker has done it


@pytest.mark.slow
def test_a_regenerated_key_locks_the_old_one_out_at_once(deployer, live_deployment):
    old_primary, secondary = _keys(live_deployment)
    image = digit_images(4, count=1)[0]

    def score(key: str) -> int:
        return requests.post(
            live_deployment.scoring_uri, data=image, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ).status_code

    assert score(old_primary) == 200
    response = login(deployer).post(f"/deployments/{live_deployment.pk}/keys/regenerate/", {"key": "Primary"})
    assert response.status_code == 302
    operation = Operation.objects.get(deployment=live_deployment, kind=OperationKind.SERVICE_KEY_REGENERATE)
    assert operation_advance(operation_id=operation.pk) is None  # what the local queue's worker does
    new_primary, _ = _keys(live_deployment)
    assert score(old_primary) == 401  # the very next request: no wait, no restart
    assert score(new_primary) == 200
    assert score(secondary) == 200  # the other key keeps working


def test_logs_the_web_process_cannot_read_are_explained_on_the_page(
    deployer, healthy_deployment, monkeypatch
):
    # As in the compose stack, where the worker's root user owns the replicas' state directories.
    def unreadable(self, spec, lines=200):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(LocalBackend, "service_logs", unreadable)
    response = login(deployer).get(f"/deployments/{healthy_deployment.pk}/logs/")
    assert response.status_code == 200
    assert "cannot be read from this web process (Permission denied)" in response.content.decode()
