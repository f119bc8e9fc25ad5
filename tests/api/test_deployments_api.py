"""Deployments through the API: reading them, deploying (with the page's Check as a dry run) and updating.

Each write goes through the page's form and service, so what the page refuses the API refuses (400 with the
form's messages, nothing changed), and what it records (the operation, the revision, the audit event) is the
same, with the token's name on the audit event.
"""

from __future__ import annotations

import pytest

from api.routes.deployments.changes import DeploymentIn
from deployments.crypto import decrypt
from deployments.environments import default_entry_script, default_environment_yaml
from deployments.forms import ServiceConfigForm
from deployments.models import AuditEvent, Deployment, Operation, RegisteredModel
from deployments.services.deployments import CONFIG_FIELDS
from deployments.services.operations import operation_transition
from deployments.services.transitions import deployment_transition
from deployments.states import ServiceState
from tests.api.conftest import bearer
from tests.deployments.conftest import make_healthy
from tests.deployments.factories import MINIMAL_SCRIPT, ready_cluster, start_deployment

pytestmark = pytest.mark.django_db
URL = "/api/v1/deployments"


@pytest.fixture
def model(db) -> RegisteredModel:
    RegisteredModel.objects.create(name="digits", version=1, path="digits/1/digits", labels="zero\none")
    return RegisteredModel.objects.create(
        name="digits", version=2, path="digits/2/digits", labels="zero\none"
    )


@pytest.fixture
def cluster(deployer):
    return ready_cluster(deployer, "local-1")


def healthy(user, cluster, model, name: str = "digits-api", **config) -> Deployment:
    """A deployment as its finished deploy leaves it: Healthy, its operation succeeded (no replicas run)."""
    operation = start_deployment(user, cluster, model, name=name, **config)
    operation_transition(operation=operation, to="running")
    operation_transition(operation=operation, to="succeeded")
    return make_healthy(operation.deployment, "http://127.0.0.1:9/score")


def changes() -> tuple[int, int, int]:
    """What a refused request must leave as it was."""
    return Deployment.objects.count(), Operation.objects.count(), AuditEvent.objects.count()


# --- reads --------------------------------------------------------------------------------------------------


def test_a_deployment_reads_by_id_or_name_with_its_settings_and_never_its_keys(
    client, deployer, viewer, cluster, model, token_for
):
    deployment = healthy(deployer, cluster, model, replicas=2, max_batch_size=8)
    secret = token_for(viewer)
    by_id = client.get(f"{URL}/{deployment.pk}", **bearer(secret))
    by_name = client.get(f"{URL}/digits-api", **bearer(secret))
    assert by_id.status_code == by_name.status_code == 200
    body = by_id.json()
    assert body == by_name.json()
    assert body["id"] == deployment.pk and body["name"] == "digits-api" and body["state"] == "Healthy"
    assert body["cluster"] == "local-1" and body["target"] == "local"
    assert body["model"] == "digits" and body["model_version"] == 2 and body["revision"] == 1
    assert body["replicas"] == 2 and body["max_batch_size"] == 8 and body["owner"] == "dana"
    assert body["scoring_uri"] == "http://127.0.0.1:9/score"
    assert body["swagger_uri"] == "http://127.0.0.1:9/swagger.json"
    assert (
        body["url"] == f"/deployments/{deployment.pk}/" and body["traffic"] is None and body["canary"] is None
    )
    assert body["entry_script"] == default_entry_script()
    assert not [field for field in body if "key" in field]
    secrets = [decrypt(deployment.primary_key_encrypted), decrypt(deployment.secondary_key_encrypted)]
    assert all(secrets) and not any(secret in by_id.content.decode() for secret in secrets)


def test_a_name_reads_the_live_deployment_else_the_newest_deleted_one(
    client, deployer, cluster, model, token_for
):
    old = healthy(deployer, cluster, model, name="digits-again")
    old.operations.update(state="succeeded")
    deployment_transition(deployment=old, to=ServiceState.DELETING)
    deployment_transition(deployment=old, to=ServiceState.DELETED)
    secret = token_for(deployer)
    assert client.get(f"{URL}/digits-again", **bearer(secret)).json()["id"] == old.pk
    new = healthy(deployer, cluster, model, name="digits-again")
    assert client.get(f"{URL}/digits-again", **bearer(secret)).json()["id"] == new.pk
    assert client.get(f"{URL}/{old.pk}", **bearer(secret)).json()["state"] == "Deleted"


def test_an_unknown_deployment_is_404_by_name_and_by_id(client, viewer, token_for):
    secret = token_for(viewer)
    named = client.get(f"{URL}/nope", **bearer(secret))
    assert named.status_code == 404 and named.json() == {"detail": "No deployment named nope."}
    numbered = client.get(f"{URL}/999999", **bearer(secret))
    assert numbered.status_code == 404 and numbered.json() == {"detail": "No deployment 999999."}


def test_the_list_is_live_deployments_oldest_first_filtered_and_paged(
    client, deployer, teammate, viewer, cluster, model, token_for
):
    first = healthy(deployer, cluster, model, name="digits-a")
    other_cluster = ready_cluster(teammate, "local-2")
    second = healthy(teammate, other_cluster, model, name="digits-b")
    gone = healthy(deployer, cluster, model, name="digits-c")
    gone.operations.update(state="succeeded")
    deployment_transition(deployment=gone, to=ServiceState.DELETING)
    deployment_transition(deployment=gone, to=ServiceState.DELETED)
    secret = token_for(viewer)

    def names(query: str = "") -> list[str]:
        response = client.get(f"{URL}{query}", **bearer(secret))
        assert response.status_code == 200, response.json()
        return [item["name"] for item in response.json()["items"]]

    assert names() == ["digits-a", "digits-b"]
    assert names("?all=true") == ["digits-a", "digits-b", "digits-c"]
    assert names("?cluster=local-2") == ["digits-b"]
    assert names(f"?cluster={cluster.pk}") == ["digits-a"]
    assert names("?owner=theo") == ["digits-b"]
    assert names("?owner=nobody") == []
    page = client.get(f"{URL}?limit=1", **bearer(secret)).json()
    assert [item["id"] for item in page["items"]] == [first.pk] and page["next_cursor"] == str(first.pk)
    rest = client.get(f"{URL}?limit=1&cursor={page['next_cursor']}", **bearer(secret)).json()
    assert [item["id"] for item in rest["items"]] == [second.pk]
    assert "entry_script" not in page["items"][0]


# --- deploy -------------------------------------------------------------------------------------------------


def test_the_deploy_body_defaults_are_the_deploy_forms():
    form = ServiceConfigForm()
    defaults = DeploymentIn.model_fields
    for field in CONFIG_FIELDS:
        initial = form.fields[field].initial
        assert defaults[field].default == (False if initial is None else initial), field


def test_deploying_records_the_deployment_its_operation_and_an_audit_event_via_the_token(
    client, deployer, cluster, model, token_for
):
    secret = token_for(deployer, "ci")
    response = client.post(
        URL,
        {"name": "digits-ci", "model": "digits", "cluster": "local-1", "replicas": 2},
        content_type="application/json",
        **bearer(secret),
    )
    assert response.status_code == 202, response.json()
    body = response.json()
    operation = Operation.objects.get(pk=body["operation"]["id"])
    assert response["Location"] == body["operation"]["url"] == f"/api/v1/operations/{operation.pk}"
    assert body["operation"]["kind"] == "service_deploy" and body["operation"]["state"] == "queued"
    assert isinstance(body["warnings"], list)
    deployment = Deployment.objects.get(name="digits-ci")
    assert operation.deployment == deployment and operation.requested_by == deployer
    assert deployment.model.version == 2  # the latest, when no version is given
    assert deployment.replicas == 2 and deployment.cpu_cores == 1.0 and deployment.max_batch_size == 32
    assert deployment.entry_script == default_entry_script()
    assert deployment.environment_yaml == default_environment_yaml()
    event = AuditEvent.objects.get(action="deployment.create", resource_id=deployment.pk)
    assert event.actor == deployer and event.via == "token ci" and event.after["replicas"] == 2


def test_deploying_takes_a_model_version_a_cluster_id_and_the_scripts_given(
    client, deployer, cluster, model, token_for
):
    response = client.post(
        URL,
        {
            "name": "digits-v1",
            "model": "digits",
            "model_version": 1,
            "cluster": cluster.pk,
            "entry_script": MINIMAL_SCRIPT,
            "environment_yaml": default_environment_yaml(),
            "max_batch_size": 1,
        },
        content_type="application/json",
        **bearer(token_for(deployer)),
    )
    assert response.status_code == 202, response.json()
    deployment = Deployment.objects.get(name="digits-v1")
    assert (deployment.model.version, deployment.cluster, deployment.entry_script) == (
        1,
        cluster,
        MINIMAL_SCRIPT,
    )
    assert deployment.max_batch_size == 1


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"name": "Bad_Name"}, "name", "A deployment name is 3 to 32 lowercase letters"),
        ({"model": "nope"}, "model", "No model named nope."),
        ({"model_version": 7}, "model_version", "digits has no version 7 (it has 2, 1)."),
        ({"cluster": "nowhere"}, "cluster", "No cluster named nowhere."),
        ({"cluster": 999999}, "cluster", "No cluster 999999."),
        ({"replicas": 0}, "replicas", "Ensure this value is greater than or equal to 1."),
        ({"replicas": "two"}, "replicas", "Input should be a valid integer"),
        ({"gpu_enabled": True}, "gpu_enabled", "local-1 has no GPU"),
        ({"gpu_cores": 2}, "gpu_cores", "GPUs per replica needs the GPU switched on."),
        ({"token_auth_enabled": True}, "token_auth_enabled", "Token auth is Azure's"),
        ({"autoscale_enabled": True}, "autoscale_enabled", "runs a fixed number of replicas here"),
        ({"entry_script": "def run(data):\n    return data\n"}, "entry_script", "init()"),
        ({"entry_script": ""}, "entry_script", "Write the entry script here or upload it."),
        ({"replica": 2}, "replica", "Extra inputs are not permitted"),
    ],
)
def test_a_deploy_the_form_refuses_is_400_with_its_message_and_changes_nothing(
    client, deployer, cluster, model, token_for, body, field, message
):
    secret = token_for(deployer)
    before = changes()
    response = client.post(
        URL,
        {"name": "digits-bad", "model": "digits", "cluster": "local-1", **body},
        content_type="application/json",
        **bearer(secret),
    )
    assert response.status_code == 400, response.json()
    errors = response.json()["errors"]
    assert any(message in text for text in errors[field]), errors
    assert changes() == before


def test_deploying_to_a_cluster_not_yet_succeeded_says_so(client, deployer, model, token_for):
    from deployments.services import cluster_create

    cluster_create(user=deployer, name="local-new")  # Creating: its provisioning has not run
    response = client.post(
        URL,
        {"name": "digits-early", "model": "digits", "cluster": "local-new"},
        content_type="application/json",
        **bearer(token_for(deployer)),
    )
    assert response.status_code == 400
    assert response.json()["errors"]["cluster"] == [
        "local-new is Creating; deploy to a cluster that is Succeeded."
    ]


def test_a_taken_name_is_refused_as_the_page_refuses_it(client, deployer, cluster, model, token_for):
    healthy(deployer, cluster, model, name="digits-taken")
    response = client.post(
        URL,
        {"name": "digits-taken", "model": "digits", "cluster": "local-1"},
        content_type="application/json",
        **bearer(token_for(deployer)),
    )
    assert response.status_code == 400
    assert response.json()["errors"]["name"] == ["A deployment named digits-taken already exists."]


def test_a_dry_run_checks_like_the_pages_check_button_and_starts_nothing(
    client, deployer, cluster, model, token_for
):
    secret = token_for(deployer)
    before = changes()
    # A run() the checks cannot read the signature of: a warning, not an error.
    script = "def init():\n    pass\n\n\nrun = lambda data: data\n"
    ok = client.post(
        f"{URL}?dry_run=true",
        {"name": "digits-dry", "model": "digits", "cluster": "local-1", "entry_script": script},
        content_type="application/json",
        **bearer(secret),
    )
    assert ok.status_code == 200, ok.json()
    assert ok.json() == {
        "ok": True,
        "warnings": ["score.py line 5: run is assigned, not defined with def: its signature is unchecked."],
    }
    bad = client.post(
        f"{URL}?dry_run=true",
        {"name": "digits-dry", "model": "digits", "cluster": "local-1", "replicas": 99},
        content_type="application/json",
        **bearer(secret),
    )
    assert bad.status_code == 400 and "replicas" in bad.json()["errors"]
    assert changes() == before


def test_the_same_idempotency_key_again_answers_the_same_operation(
    client, deployer, cluster, model, token_for
):
    secret = token_for(deployer)
    body = {"name": "digits-once", "model": "digits", "cluster": "local-1"}
    headers = {**bearer(secret), "HTTP_IDEMPOTENCY_KEY": "deploy-digits-once"}
    first = client.post(URL, body, content_type="application/json", **headers)
    again = client.post(URL, body, content_type="application/json", **headers)
    assert first.status_code == again.status_code == 202, again.json()
    assert first.json()["operation"]["id"] == again.json()["operation"]["id"]
    assert Deployment.objects.filter(name="digits-once").count() == 1
    assert AuditEvent.objects.filter(action="deployment.create").count() == 1
    other = client.post(URL, {**body, "name": "digits-twice"}, content_type="application/json", **headers)
    assert other.status_code == 409 and "Idempotency-Key was already used" in other.json()["detail"]
    assert not Deployment.objects.filter(name="digits-twice").exists()


# --- update -------------------------------------------------------------------------------------------------


def test_an_update_changes_only_what_is_given_as_a_new_revision(client, deployer, cluster, model, token_for):
    deployment = healthy(deployer, cluster, model, replicas=2, max_batch_size=8)
    secret = token_for(deployer, "ci")
    response = client.patch(
        f"{URL}/digits-api", {"cpu_cores": 2.5}, content_type="application/json", **bearer(secret)
    )
    assert response.status_code == 202, response.json()
    operation = Operation.objects.get(pk=response.json()["operation"]["id"])
    assert operation.kind == "service_update" and operation.params["changed"] == ["cpu_cores"]
    deployment.refresh_from_db()
    assert (deployment.cpu_cores, deployment.replicas, deployment.max_batch_size) == (2.5, 2, 8)
    assert deployment.revision == 2 and deployment.state == ServiceState.TRANSITIONING
    assert deployment.entry_script == default_entry_script() and deployment.model.version == 2
    event = AuditEvent.objects.get(action="deployment.update", resource_id=deployment.pk)
    assert event.via == "token ci" and event.message == "revision 2: cpu_cores changed"


def test_an_update_can_change_the_model_version_and_the_entry_script(
    client, deployer, cluster, model, token_for
):
    deployment = healthy(deployer, cluster, model)
    response = client.patch(
        f"{URL}/{deployment.pk}",
        {"model_version": 1, "entry_script": MINIMAL_SCRIPT},
        content_type="application/json",
        **bearer(token_for(deployer)),
    )
    assert response.status_code == 202, response.json()
    deployment.refresh_from_db()
    assert deployment.model.version == 1 and deployment.entry_script == MINIMAL_SCRIPT


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"replicas": 17}, "replicas", "Ensure this value is less than or equal to 16."),
        ({"canary_percent": 20}, "canary_percent", "replaces replicas in place: it has no canary."),
        ({"gpu_enabled": True}, "gpu_enabled", "local-1 has no GPU"),
        ({"model": "nope"}, "model", "No model named nope."),
        ({"environment_yaml": "dependencies: [: bad"}, "environment_yaml", ""),
        ({"name": "renamed"}, "name", "Extra inputs are not permitted"),
    ],
)
def test_an_update_the_form_refuses_is_400_and_changes_nothing(
    client, deployer, cluster, model, token_for, body, field, message
):
    deployment = healthy(deployer, cluster, model)
    secret = token_for(deployer)
    before = changes()
    response = client.patch(f"{URL}/digits-api", body, content_type="application/json", **bearer(secret))
    assert response.status_code == 400, response.json()
    assert any(message in text for text in response.json()["errors"][field]), response.json()
    assert changes() == before
    deployment.refresh_from_db()
    assert deployment.revision == 1 and deployment.state == ServiceState.HEALTHY


def test_an_update_that_changes_nothing_is_refused_with_the_services_reason(
    client, deployer, cluster, model, token_for
):
    healthy(deployer, cluster, model, replicas=2)
    secret = token_for(deployer)
    before = changes()
    response = client.patch(
        f"{URL}/digits-api", {"replicas": 2}, content_type="application/json", **bearer(secret)
    )
    assert response.status_code == 409
    assert response.json()["detail"].startswith(
        "Nothing to change: that is digits-api's current configuration"
    )
    assert changes() == before


def test_an_update_dry_run_checks_and_changes_nothing(client, deployer, cluster, model, token_for):
    healthy(deployer, cluster, model)
    secret = token_for(deployer)
    before = changes()
    response = client.patch(
        f"{URL}/digits-api?dry_run=true", {"replicas": 3}, content_type="application/json", **bearer(secret)
    )
    assert response.status_code == 200 and response.json()["ok"] is True
    assert changes() == before and Deployment.objects.get(name="digits-api").replicas == 1


def test_a_canary_update_on_a_target_that_splits_traffic_starts_with_its_share(
    client, deployer, model, token_for, managed_deployment
):
    response = client.patch(
        f"{URL}/{managed_deployment.name}",
        {"replicas": 2, "canary_percent": 20},
        content_type="application/json",
        **bearer(token_for(deployer)),
    )
    assert response.status_code == 202, response.json()
    operation = Operation.objects.get(pk=response.json()["operation"]["id"])
    assert operation.params["canary_percent"] == 20
    event = AuditEvent.objects.get(action="deployment.update", resource_id=managed_deployment.pk)
    assert event.message.endswith("canary: 20 % of the traffic at first")


@pytest.fixture
def managed_deployment(deployer, model) -> Deployment:
    """A Healthy deployment on Azure ML managed endpoints (a row only: nothing here calls Azure)."""
    from deployments.models import Cluster, Workspace

    workspace = Workspace.objects.create(
        name="ws",
        subscription_id="sub",
        resource_group="rg",
        workspace_name="ws",
        tenant_id="t",
        client_id="c",
        client_secret_encrypted="",
    )
    cluster = Cluster.objects.create(
        name="managed-1",
        backend="azureml_managed",
        workspace=workspace,
        vm_size="Standard_DS3_v2",
        provisioning_state="Succeeded",
        owner=deployer,
    )
    return Deployment.objects.create(
        name="digits-managed",
        cluster=cluster,
        model=model,
        entry_script=default_entry_script(),
        environment_yaml=default_environment_yaml(),
        owner=deployer,
        state="Healthy",
        scoring_uri="https://digits-managed.example/score",
    )
