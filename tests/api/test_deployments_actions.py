"""A deployment's other actions through the API: revisions and rollback, canary traffic, moving to another
target, deleting, its keys and its logs. Each is the page's service, refused (409) where the page refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from deployments.crypto import decrypt, mask
from deployments.environments import default_entry_script, default_environment_yaml
from deployments.models import AuditEvent, Cluster, Deployment, Operation, RegisteredModel, Workspace
from deployments.services.deployments import deployment_update
from deployments.services.operations import operation_transition
from deployments.services.transitions import deployment_transition
from deployments.states import ServiceState
from scoring.state_dir import LOG_DIR, SUPERVISOR_LOG
from tests.api.conftest import bearer
from tests.deployments.conftest import make_healthy
from tests.deployments.factories import ready_cluster, start_deployment

pytestmark = pytest.mark.django_db
URL = "/api/v1/deployments"


@pytest.fixture
def model(db) -> RegisteredModel:
    return RegisteredModel.objects.create(
        name="digits", version=1, path="digits/1/digits", labels="zero\none"
    )


def finish(operation: Operation, uri: str = "http://127.0.0.1:9/score") -> Deployment:
    """What a worker leaves once a deploy or update has gone well: the operation succeeded, Healthy."""
    operation_transition(operation=operation, to="running")
    operation_transition(operation=operation, to="succeeded")
    assert operation.deployment is not None
    return make_healthy(operation.deployment, uri)


@pytest.fixture
def deployment(deployer, model) -> Deployment:
    """A Healthy local deployment (no replicas run) at revision 2: replicas 1, then 3."""
    first = finish(start_deployment(deployer, ready_cluster(deployer), model, name="digits-api"))
    return finish(deployment_update(user=deployer, deployment=first, replicas=3))


def azure_cluster(owner, backend: str, name: str) -> Cluster:
    workspace, _ = Workspace.objects.get_or_create(
        name="ws",
        defaults=dict(
            subscription_id="sub",
            resource_group="rg",
            workspace_name="ws",
            tenant_id="t",
            client_id="c",
            client_secret_encrypted="",
        ),
    )
    return Cluster.objects.create(
        name=name,
        backend=backend,
        workspace=workspace,
        vm_size="Standard_DS3_v2",
        provisioning_state="Succeeded",
        owner=owner,
    )


def azure_deployment(owner, model, backend: str, name: str, **fields) -> Deployment:
    """A Healthy deployment on an Azure target (a row only: nothing here calls Azure)."""
    return Deployment.objects.create(
        name=name,
        cluster=azure_cluster(owner, backend, f"{name[:18]}-c"),
        model=model,
        entry_script=default_entry_script(),
        environment_yaml=default_environment_yaml(),
        owner=owner,
        state="Healthy",
        scoring_uri=f"https://{name}.example/score",
        **fields,
    )


def post(client, path: str, body: dict | None, secret: str, **headers):
    return client.post(
        f"{URL}/{path}", body or {}, content_type="application/json", **bearer(secret), **headers
    )


def counts() -> tuple[int, int, int]:
    return Deployment.objects.count(), Operation.objects.count(), AuditEvent.objects.count()


# --- revisions and rollback ---------------------------------------------------------------------------------


def test_revisions_list_oldest_first_marking_the_current_one(client, viewer, deployment, token_for):
    response = client.get(f"{URL}/digits-api/revisions", **bearer(token_for(viewer)))
    assert response.status_code == 200
    items = response.json()["items"]
    assert [(r["number"], r["current"], r["settings"]["replicas"]) for r in items] == [
        (1, False, 1),
        (2, True, 3),
    ]
    assert items[0]["model"] == "digits" and items[0]["created_by"] == "dana"
    assert items[0]["entry_script"] == default_entry_script()


def test_a_rollback_redeploys_an_earlier_revision_as_a_new_one(client, deployer, deployment, token_for):
    secret = token_for(deployer, "ci")
    response = post(client, "digits-api/rollback", {"revision": 1}, secret)
    assert response.status_code == 202, response.json()
    operation = Operation.objects.get(pk=response.json()["operation"]["id"])
    assert operation.kind == "service_update" and operation.params["revision"] == 3
    deployment.refresh_from_db()
    assert (deployment.revision, deployment.replicas, deployment.state) == (3, 1, ServiceState.TRANSITIONING)
    event = AuditEvent.objects.get(action="deployment.rollback", resource_id=deployment.pk)
    assert event.message == "rollback to revision 1" and event.via == "token ci"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"revision": 0}, "Ensure this value is greater than or equal to 1."),
        ({"revision": 9}, "digits-api has no revision 9."),
        ({"revision": "first"}, "Input should be a valid integer"),
    ],
)
def test_a_rollback_to_no_such_revision_is_400_and_changes_nothing(
    client, deployer, deployment, token_for, body, message
):
    secret = token_for(deployer)
    before = counts()
    response = post(client, "digits-api/rollback", body, secret)
    assert response.status_code == 400
    assert any(message in text for text in response.json()["errors"]["revision"]), response.json()
    assert counts() == before


def test_a_rollback_while_another_operation_runs_is_refused(client, deployer, deployment, token_for):
    secret = token_for(deployer)
    post(client, "digits-api/rollback", {"revision": 1}, secret)
    before = counts()
    again = post(client, "digits-api/rollback", {"revision": 2}, secret)
    assert again.status_code == 409 and "is Transitioning" in again.json()["detail"]
    assert counts() == before


# --- traffic ----------------------------------------------------------------------------------------------


def test_completing_a_canary_gives_its_revision_all_the_traffic(client, deployer, model, token_for):
    canary = azure_deployment(
        deployer, model, "azureml_managed", "digits-canary", revision=2, stats={"traffic": {"1": 80, "2": 20}}
    )
    viewed = client.get(f"{URL}/digits-canary", **bearer(token_for(deployer, "read"))).json()
    assert viewed["traffic"] == {"1": 80, "2": 20}
    assert viewed["canary"] == {"percent": 20, "revision": 2, "previous_revision": 1}
    response = post(client, "digits-canary/traffic", {"complete": True}, token_for(deployer))
    assert response.status_code == 202, response.json()
    operation = Operation.objects.get(pk=response.json()["operation"]["id"])
    assert operation.kind == "service_traffic" and operation.params["percent"] == 100
    event = AuditEvent.objects.get(action="deployment.traffic", resource_id=canary.pk)
    assert event.message.startswith("canary completed: revision 2 gets all the traffic")


def test_traffic_on_a_target_that_does_not_split_it_is_refused(client, deployer, deployment, token_for):
    secret = token_for(deployer)
    before = counts()
    response = post(client, "digits-api/traffic", {"complete": False}, secret)
    assert response.status_code == 409
    assert response.json()["detail"] == "Local (this machine) does not split traffic between revisions."
    assert counts() == before
    assert post(client, "digits-api/traffic", {}, secret).status_code == 400


# --- move --------------------------------------------------------------------------------------------------


def test_moving_deploys_the_revision_to_another_target_as_a_new_deployment(
    client, deployer, model, token_for
):
    old = azure_deployment(deployer, model, "azureml", "digits-v1", replicas=2)
    azure_cluster(deployer, "azureml_managed", "managed-1")
    response = post(
        client, "digits-v1/move", {"cluster": "managed-1", "name": "digits-v2"}, token_for(deployer)
    )
    assert response.status_code == 202, response.json()
    new = Deployment.objects.get(name="digits-v2")
    assert new.moved_from == old and new.cluster.name == "managed-1" and new.replicas == 2
    assert AuditEvent.objects.filter(action="deployment.move", resource_id=old.pk).exists()
    assert (
        client.get(f"{URL}/digits-v2", **bearer(token_for(deployer, "r"))).json()["moved_from"] == "digits-v1"
    )


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"cluster": "nowhere", "name": "digits-v2"}, "cluster", "No cluster named nowhere."),
        ({"cluster": "same-target", "name": "digits-v2"}, "cluster", "Select a valid choice."),
        (
            {"cluster": "managed-1", "name": "digits-v1"},
            "name",
            "A deployment named digits-v1 already exists.",
        ),
    ],
)
def test_a_move_the_form_refuses_is_400(client, deployer, model, token_for, body, field, message):
    azure_deployment(deployer, model, "azureml", "digits-v1")
    azure_cluster(deployer, "azureml_managed", "managed-1")
    azure_cluster(deployer, "azureml", "same-target")
    secret = token_for(deployer)
    before = counts()
    response = post(client, "digits-v1/move", body, secret)
    assert response.status_code == 400
    assert any(message in text for text in response.json()["errors"][field]), response.json()
    assert counts() == before


# --- delete ------------------------------------------------------------------------------------------------


def test_deleting_starts_the_delete_and_a_second_delete_is_refused(client, deployer, deployment, token_for):
    secret = token_for(deployer, "ci")
    response = client.delete(f"{URL}/digits-api", **bearer(secret))
    assert response.status_code == 202, response.json()
    assert response.json()["operation"]["kind"] == "service_delete"
    assert response["Location"] == response.json()["operation"]["url"]
    deployment.refresh_from_db()
    assert deployment.state == ServiceState.DELETING
    event = AuditEvent.objects.get(action="deployment.delete", resource_id=deployment.pk)
    assert event.via == "token ci" and event.actor_name == "dana"
    before = counts()
    again = client.delete(f"{URL}/{deployment.pk}", **bearer(secret))
    assert again.status_code == 409 and again.json()["detail"] == "digits-api is already deleting."
    assert counts() == before


def test_a_delete_retried_with_its_idempotency_key_answers_the_same_operation(
    client, deployer, deployment, token_for
):
    headers = {**bearer(token_for(deployer)), "HTTP_IDEMPOTENCY_KEY": "delete-digits-api"}
    first = client.delete(f"{URL}/digits-api", **headers)
    again = client.delete(f"{URL}/digits-api", **headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["operation"]["id"] == again.json()["operation"]["id"]
    assert AuditEvent.objects.filter(action="deployment.delete").count() == 1


# --- keys -------------------------------------------------------------------------------------------------


def test_keys_are_listed_masked_as_the_page_shows_them(client, viewer, deployment, token_for):
    response = client.get(f"{URL}/digits-api/keys", **bearer(token_for(viewer)))
    assert response.status_code == 200
    primary, secondary = (
        decrypt(deployment.primary_key_encrypted),
        decrypt(deployment.secondary_key_encrypted),
    )
    assert response.json() == {"primary": mask(primary), "secondary": mask(secondary)}
    assert primary not in response.content.decode() and secondary not in response.content.decode()


def test_revealing_a_key_answers_it_in_full_uncached_and_audited(client, deployer, deployment, token_for):
    response = post(client, "digits-api/keys/reveal", {"key": "primary"}, token_for(deployer, "ci"))
    assert response.status_code == 200
    assert response.json() == {"key": "Primary", "secret": decrypt(deployment.primary_key_encrypted)}
    assert response["Cache-Control"] == "no-store"
    event = AuditEvent.objects.get(action="deployment.key_reveal", resource_id=deployment.pk)
    assert event.after == {"key": "Primary"} and event.via == "token ci"


def test_revealing_a_key_azure_has_not_made_yet_is_refused(client, deployer, model, token_for):
    azure_deployment(deployer, model, "azureml_managed", "digits-nokey")
    response = post(client, "digits-nokey/keys/reveal", {"key": "Secondary"}, token_for(deployer))
    assert response.status_code == 409
    assert response.json()["detail"] == (
        "digits-nokey has no secondary key yet; it appears once the deployment is Healthy."
    )


def test_regenerating_a_key_starts_an_operation_and_is_audited(client, deployer, deployment, token_for):
    response = post(client, "digits-api/keys/regenerate", {"key": "Secondary"}, token_for(deployer))
    assert response.status_code == 202, response.json()
    operation = Operation.objects.get(pk=response.json()["operation"]["id"])
    assert operation.kind == "service_key_regenerate" and operation.params == {"key": "Secondary"}
    assert AuditEvent.objects.filter(action="deployment.key_regenerate", after__key="Secondary").exists()


@pytest.mark.parametrize("path", ["keys/reveal", "keys/regenerate"])
def test_a_key_that_is_neither_primary_nor_secondary_is_400(client, deployer, deployment, token_for, path):
    secret = token_for(deployer)
    before = counts()
    response = post(client, f"digits-api/{path}", {"key": "tertiary"}, secret)
    assert response.status_code == 400
    assert response.json()["errors"] == {"key": ["Choose the primary or the secondary key."]}
    assert counts() == before


# --- logs -------------------------------------------------------------------------------------------------


def test_logs_are_each_replicas_last_lines(client, viewer, deployment, token_for):
    state_dir = Path(settings.LYNX_LOCAL_DIR) / "services" / "digits-api"
    (state_dir / LOG_DIR).mkdir(parents=True, exist_ok=True)
    (state_dir / LOG_DIR / "replica-0.log").write_text("one\ntwo\nthree\n")
    (state_dir / SUPERVISOR_LOG).write_text("supervisor started\n")
    secret = token_for(viewer)
    try:
        response = client.get(f"{URL}/digits-api/logs?lines=2", **bearer(secret))
        assert response.status_code == 200
        replicas = response.json()["replicas"]
        assert replicas["replica-0"].splitlines() == ["two", "three"]
        assert "supervisor started" in replicas["supervisor"]
        assert client.get(f"{URL}/digits-api/logs?lines=0", **bearer(secret)).status_code == 400
    finally:
        for path in (state_dir / LOG_DIR / "replica-0.log", state_dir / SUPERVISOR_LOG):
            path.unlink()


def test_logs_a_target_keeps_elsewhere_or_of_a_deleted_deployment_are_a_409_saying_so(
    client, viewer, deployer, model, token_for
):
    on_azure = azure_deployment(deployer, model, "azureml", "digits-azure")
    secret = token_for(viewer)
    response = client.get(f"{URL}/digits-azure/logs", **bearer(secret))
    assert response.status_code == 409
    assert response.json()["detail"].startswith("Azure ML")
    assert f"/deployments/{on_azure.pk}/" in response.json()["detail"]
    deployment_transition(deployment=on_azure, to=ServiceState.DELETING)
    deployment_transition(deployment=on_azure, to=ServiceState.DELETED)
    gone = client.get(f"{URL}/digits-azure/logs", **bearer(secret))
    assert gone.status_code == 409
    assert gone.json()["detail"] == "digits-azure is deleted; its replicas and their logs are gone."
