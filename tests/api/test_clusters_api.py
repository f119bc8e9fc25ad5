"""/api/v1/clusters: the pages' clusters as JSON, provisioned and deleted through the pages' forms and
services, with the same refusals and the same audit rows."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from deployments.crypto import encrypt
from deployments.models import AuditEvent, Cluster, Operation, RegisteredModel, Workspace
from deployments.services.prices import vm_price_create
from deployments.states import OperationState, ProvisioningState
from targets.azureml.forms import CREATE_WARNING
from tests.api.conftest import bearer
from tests.conftest import wait_for
from tests.deployments.factories import ready_cluster, start_deployment

pytestmark = pytest.mark.django_db

AKS_ID = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks"


def _gone(user, name: str, *, hours_ago: int = 48) -> Cluster:
    """A cluster as deletion leaves it."""
    return Cluster.objects.create(
        name=name,
        owner=user,
        provisioning_state=ProvisioningState.DELETED,
        created_at=timezone.now() - timedelta(hours=hours_ago),
        deleted_at=timezone.now() - timedelta(hours=1),
    )


@pytest.fixture
def workspace() -> Workspace:
    return Workspace.objects.create(
        name="team-prod",
        subscription_id="sub",
        resource_group="rg",
        workspace_name="ws",
        tenant_id="t",
        client_id="c",
        client_secret_encrypted=encrypt("s3cret"),
        location="westeurope",
    )


def _counts() -> tuple[int, int, int]:
    return Cluster.objects.count(), Operation.objects.count(), AuditEvent.objects.count()


# --- reading ------------------------------------------------------------------------------------------


def test_the_list_shows_live_clusters_oldest_first_with_their_facts(client, deployer, viewer, token_for):
    first = ready_cluster(deployer, "local-1")
    second = ready_cluster(deployer, "local-2")
    _gone(deployer, "old-one")
    start_deployment(
        deployer, first, RegisteredModel.objects.create(name="m", version=1, path="m/1/m"), name="on-first"
    )
    response = client.get("/api/v1/clusters", **bearer(token_for(viewer)))
    assert response.status_code == 200
    body = response.json()
    assert [c["name"] for c in body["items"]] == ["local-1", "local-2"] and body["next_cursor"] is None
    row = body["items"][0]
    assert (
        row["id"] == first.pk and row["target"] == "local" and row["target_label"] == "Local (this machine)"
    )
    assert row["state"] == "Succeeded" and row["owner"] == "dana" and row["workspace"] is None
    assert row["deployments"] == 1 and body["items"][1]["deployments"] == 0
    assert row["url"] == f"/clusters/{first.pk}/" and row["node_count"] == 1 and row["has_gpu"] is False
    assert second.pk == body["items"][1]["id"]


def test_all_true_lists_deleted_clusters_too_and_pages_follow_the_cursor(client, deployer, token_for):
    _gone(deployer, "old-one")
    ready_cluster(deployer, "local-1")
    headers = bearer(token_for(deployer))
    first = client.get("/api/v1/clusters?all=true&limit=1", **headers).json()
    assert [c["name"] for c in first["items"]] == ["old-one"] and first["items"][0]["state"] == "Deleted"
    assert first["items"][0]["price_per_hour"] is None and first["items"][0]["deleted_at"]
    rest = client.get(f"/api/v1/clusters?all=true&limit=1&cursor={first['next_cursor']}", **headers).json()
    assert [c["name"] for c in rest["items"]] == ["local-1"] and rest["next_cursor"] is None


def test_a_cluster_costs_what_the_overview_says(client, deployer, admin_user, token_for):
    vm_price_create(user=admin_user, vm_size="local", price_per_hour=Decimal("0.50"))
    cluster = ready_cluster(deployer, "local-1")
    Cluster.objects.filter(pk=cluster.pk).update(created_at=timezone.now() - timedelta(hours=10))
    body = client.get("/api/v1/clusters/local-1", **bearer(token_for(deployer))).json()
    assert body["price_per_hour"] == 0.5
    assert body["cost_so_far"] == pytest.approx(5.0, abs=0.01)


def test_a_cluster_is_found_by_name_or_id_and_a_name_means_the_live_one(client, deployer, token_for):
    _gone(deployer, "local-1", hours_ago=72)
    live = ready_cluster(deployer, "local-1")
    headers = bearer(token_for(deployer))
    assert client.get("/api/v1/clusters/local-1", **headers).json()["id"] == live.pk
    assert client.get(f"/api/v1/clusters/{live.pk}", **headers).json()["name"] == "local-1"


def test_a_name_with_no_live_cluster_means_its_newest_deleted_one(client, deployer, token_for):
    _gone(deployer, "gone-1", hours_ago=72)
    newest = _gone(deployer, "gone-1", hours_ago=24)
    body = client.get("/api/v1/clusters/gone-1", **bearer(token_for(deployer))).json()
    assert body["id"] == newest.pk and body["state"] == "Deleted"


@pytest.mark.parametrize(
    ("ref", "detail"), [("nowhere", "No cluster named nowhere."), ("999", "No cluster 999.")]
)
def test_an_unknown_cluster_is_a_404_naming_it(client, viewer, token_for, ref, detail):
    response = client.get(f"/api/v1/clusters/{ref}", **bearer(token_for(viewer)))
    assert response.status_code == 404 and response.json() == {"detail": detail}


# --- provisioning -------------------------------------------------------------------------------------


def test_a_deployer_provisions_a_local_cluster_as_the_page_does(client, deployer, token_for):
    response = client.post(
        "/api/v1/clusters",
        {"name": "local-gpu", "expires_in_hours": 8, "auto_teardown": True},
        content_type="application/json",
        **bearer(token_for(deployer, "ci")),
    )
    assert response.status_code == 202
    body = response.json()
    operation = Operation.objects.get()
    assert body["operation"]["id"] == operation.pk and body["warnings"] == []
    assert body["operation"]["kind"] == "cluster_provision" and body["operation"]["state"] == "queued"
    assert response["Location"] == body["operation"]["url"] == f"/api/v1/operations/{operation.pk}"
    cluster = Cluster.objects.get(name="local-gpu")
    assert cluster.backend == "local" and cluster.owner == deployer and cluster.auto_teardown
    assert cluster.expires_at is not None
    assert timedelta(hours=7, minutes=59) < cluster.expires_at - timezone.now() <= timedelta(hours=8)
    assert operation.cluster == cluster and operation.requested_by == deployer
    event = AuditEvent.objects.get(action="cluster.create")
    assert (event.actor_name, event.resource_name, event.via) == ("dana", "local-gpu", "token ci")


def test_the_same_idempotency_key_answers_the_same_operation(client, deployer, token_for):
    headers = {**bearer(token_for(deployer)), "HTTP_IDEMPOTENCY_KEY": "retry-1"}
    payload = {"name": "local-gpu"}
    first = client.post("/api/v1/clusters", payload, content_type="application/json", **headers)
    again = client.post("/api/v1/clusters", payload, content_type="application/json", **headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["operation"]["id"] == again.json()["operation"]["id"]
    assert Cluster.objects.count() == 1 and AuditEvent.objects.filter(action="cluster.create").count() == 1


def test_an_idempotency_key_used_for_another_request_is_refused(client, deployer, token_for):
    headers = {**bearer(token_for(deployer)), "HTTP_IDEMPOTENCY_KEY": "k-1"}
    client.post("/api/v1/clusters", {"name": "local-gpu"}, content_type="application/json", **headers)
    ready_cluster(deployer, "local-1")
    before = _counts()
    other_name = client.post(
        "/api/v1/clusters", {"name": "other"}, content_type="application/json", **headers
    )
    other_kind = client.delete("/api/v1/clusters/local-1", **headers)
    for response in (other_name, other_kind):
        assert response.status_code == 409
        assert (
            response.json()["detail"]
            == "This Idempotency-Key was already used for another request: send a new one."
        )
    assert _counts() == before


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"name": "local-1"}, "name", "A cluster named local-1 already exists."),
        ({"name": "x"}, "name", "3 to 24"),
        ({"name": "local"}, "name", "reserves"),
        ({"name": "ok-name", "target": "mars"}, "target", "No target mars: one of local, azureml_managed"),
        ({"name": "ok-name", "vm_size": "Standard_NC4as_T4_v3"}, "vm_size", "does not take vm_size"),
        ({"name": "ok-name", "expires_in_hours": 0}, "expires_in_hours", "greater than or equal to 1"),
        ({"name": "ok-name", "idle_teardown_hours": "soon"}, "idle_teardown_hours", "integer"),
        ({"target": "local"}, "name", "required"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_changes_nothing(
    client, deployer, token_for, payload, field, message
):
    ready_cluster(deployer, "local-1")
    headers = bearer(token_for(deployer))
    before = _counts()
    response = client.post("/api/v1/clusters", payload, content_type="application/json", **headers)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert message in " ".join(errors[field]), errors
    assert _counts() == before


def test_an_azure_managed_instance_type_names_its_workspace_by_name(client, deployer, token_for, workspace):
    response = client.post(
        "/api/v1/clusters",
        {
            "name": "t4-managed",
            "target": "azureml_managed",
            "workspace": "team-prod",
            "vm_size": "standard_nc4as_t4_v3",
        },
        content_type="application/json",
        **bearer(token_for(deployer)),
    )
    assert response.status_code == 202, response.json()
    cluster = Cluster.objects.get(name="t4-managed")
    assert (cluster.backend, cluster.workspace, cluster.vm_size) == (
        "azureml_managed",
        workspace,
        "Standard_NC4as_T4_v3",  # Azure's spelling, as the form cleans it
    )
    assert cluster.location == "westeurope" and cluster.node_count == 1


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"workspace": "nope", "vm_size": "Standard_NC4as_T4_v3"}, "workspace", "No workspace named nope"),
        ({"workspace": "team-prod", "vm_size": "Standard_NC6"}, "vm_size", "is retired"),
        (
            {"workspace": "team-prod", "vm_size": "Standard_Nope"},
            "vm_size",
            "does not know the instance type",
        ),
        ({"vm_size": "Standard_NC4as_T4_v3"}, "workspace", "required"),
        (
            {"workspace": "team-prod", "vm_size": "Standard_NC4as_T4_v3", "node_count": 3},
            "node_count",
            "does not take",
        ),
    ],
)
def test_an_azure_managed_cluster_is_checked_by_its_page_form(
    client, deployer, token_for, workspace, payload, field, message
):
    headers = bearer(token_for(deployer))
    before = _counts()
    response = client.post(
        "/api/v1/clusters",
        {"name": "t4-managed", "target": "azureml_managed", **payload},
        content_type="application/json",
        **headers,
    )
    assert response.status_code == 400
    assert message in " ".join(response.json()["errors"][field])
    assert _counts() == before


def test_a_workspace_whose_last_test_failed_is_refused_as_on_the_page(client, deployer, token_for, workspace):
    workspace.last_check_ok, workspace.last_check_result = False, "AuthenticationError"
    workspace.save()
    response = client.post(
        "/api/v1/clusters",
        {"name": "aks-team", "target": "azureml", "workspace": "team-prod", "attach_resource_id": AKS_ID},
        content_type="application/json",
        **bearer(token_for(deployer)),
    )
    assert response.status_code == 400 and "Fix the connection" in response.json()["errors"]["workspace"][0]
    assert not Cluster.objects.exists()


def test_an_aks_cluster_is_attached_by_default(client, deployer, token_for, workspace):
    response = client.post(
        "/api/v1/clusters",
        {"name": "aks-team", "target": "azureml", "workspace": "team-prod", "attach_resource_id": AKS_ID},
        content_type="application/json",
        **bearer(token_for(deployer)),
    )
    assert response.status_code == 202 and response.json()["warnings"] == []
    cluster = Cluster.objects.get(name="aks-team")
    assert cluster.backend == "azureml" and cluster.attach_resource_id == AKS_ID and cluster.vm_size == ""


def test_creating_an_aks_cluster_warns_as_the_page_does(client, deployer, token_for, workspace):
    response = client.post(
        "/api/v1/clusters",
        {
            "name": "aks-new",
            "target": "azureml",
            "mode": "create",
            "workspace": "team-prod",
            "vm_size": "Standard_NC4as_T4_v3",
            "node_count": 1,
        },
        content_type="application/json",
        **bearer(token_for(deployer)),
    )
    assert response.status_code == 202
    assert CREATE_WARNING in response.json()["warnings"]
    assert Cluster.objects.get(name="aks-new").vm_size == "Standard_NC4as_T4_v3"


def test_fastprod_on_one_node_is_refused_with_the_page_message(client, deployer, token_for, workspace):
    response = client.post(
        "/api/v1/clusters",
        {
            "name": "aks-new",
            "target": "azureml",
            "mode": "create",
            "workspace": "team-prod",
            "vm_size": "Standard_NC4as_T4_v3",
            "cluster_purpose": "FastProd",
        },
        content_type="application/json",
        **bearer(token_for(deployer)),
    )
    assert response.status_code == 400 and "FastProd" in " ".join(response.json()["errors"]["node_count"])
    assert not Cluster.objects.exists()


def test_custom_tls_takes_the_pem_as_text_and_checks_it(client, deployer, token_for, workspace):
    response = client.post(
        "/api/v1/clusters",
        {
            "name": "aks-tls",
            "target": "azureml",
            "workspace": "team-prod",
            "attach_resource_id": AKS_ID,
            "tls_mode": "custom",
            "tls_cname": "scoring.contoso.com",
            "tls_certificate": "not a certificate",
            "tls_key": "not a key",
        },
        content_type="application/json",
        **bearer(token_for(deployer)),
    )
    assert response.status_code == 400
    assert set(response.json()["errors"]) & {"tls_certificate", "tls_key"}
    assert "not a key" not in response.content.decode()  # the key is never echoed
    assert not Cluster.objects.exists()


def test_kubernetes_compute_needs_an_aks_resource_id(client, deployer, token_for, workspace):
    headers = bearer(token_for(deployer))
    payload = {"name": "k8s-team", "target": "azureml_k8s", "workspace": "team-prod"}
    response = client.post(
        "/api/v1/clusters",
        {**payload, "attach_resource_id": "/not/aks"},
        content_type="application/json",
        **headers,
    )
    assert response.status_code == 400
    assert "not an AKS resource ID" in response.json()["errors"]["attach_resource_id"][0]
    assert not Cluster.objects.exists()
    good = client.post(
        "/api/v1/clusters",
        {**payload, "attach_resource_id": AKS_ID},
        content_type="application/json",
        **headers,
    )
    assert good.status_code == 202, good.json()
    cluster = Cluster.objects.get()
    assert (cluster.backend, cluster.attach_resource_id, cluster.location) == (
        "azureml_k8s",
        AKS_ID,
        "westeurope",
    )


def test_a_viewer_may_not_provision_and_nothing_changes(client, viewer, token_for):
    response = client.post(
        "/api/v1/clusters",
        {"name": "local-gpu"},
        content_type="application/json",
        **bearer(token_for(viewer)),
    )
    assert response.status_code == 403
    assert response.json() == {"detail": "Your role is viewer: ask an admin for the deployer role."}
    assert _counts() == (0, 0, AuditEvent.objects.filter(action="token.create").count())


# --- deleting -----------------------------------------------------------------------------------------


def test_a_deployer_deletes_a_cluster_by_name(client, deployer, token_for):
    cluster = ready_cluster(deployer, "local-1")
    response = client.delete("/api/v1/clusters/local-1", **bearer(token_for(deployer, "ci")))
    assert response.status_code == 202
    body = response.json()["operation"]
    assert body["kind"] == "cluster_delete" and body["resource_name"] == "local-1"
    assert response["Location"] == body["url"]
    cluster.refresh_from_db()
    assert cluster.provisioning_state == ProvisioningState.DELETING
    event = AuditEvent.objects.get(action="cluster.delete")
    assert (event.actor_name, event.resource_id, event.via) == ("dana", cluster.pk, "token ci")


def test_deleting_twice_with_the_same_key_answers_the_first_operation(client, deployer, token_for):
    ready_cluster(deployer, "local-1")
    headers = {**bearer(token_for(deployer)), "HTTP_IDEMPOTENCY_KEY": "del-1"}
    first = client.delete("/api/v1/clusters/local-1", **headers)
    again = client.delete("/api/v1/clusters/local-1", **headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["operation"]["id"] == again.json()["operation"]["id"]
    assert AuditEvent.objects.filter(action="cluster.delete").count() == 1


def test_a_cluster_with_live_deployments_is_not_deleted(client, deployer, token_for):
    cluster = ready_cluster(deployer, "local-1")
    model = RegisteredModel.objects.create(name="m", version=1, path="m/1/m")
    start_deployment(deployer, cluster, model, name="still-here")
    headers = bearer(token_for(deployer))
    before = _counts()
    response = client.delete("/api/v1/clusters/local-1", **headers)
    assert response.status_code == 409
    assert response.json()["detail"] == "Delete the deployments on local-1 first: still-here."
    cluster.refresh_from_db()
    assert cluster.provisioning_state == ProvisioningState.SUCCEEDED and _counts() == before


def test_a_cluster_already_going_is_refused(client, deployer, token_for):
    ready_cluster(deployer, "local-1")
    headers = bearer(token_for(deployer))
    assert client.delete("/api/v1/clusters/local-1", **headers).status_code == 202
    response = client.delete("/api/v1/clusters/local-1", **headers)
    assert response.status_code == 409 and response.json()["detail"] == "local-1 is already deleting."


def test_deleting_an_unknown_cluster_is_a_404(client, deployer, token_for):
    response = client.delete("/api/v1/clusters/nowhere", **bearer(token_for(deployer)))
    assert response.status_code == 404 and response.json()["detail"] == "No cluster named nowhere."


# --- who may -----------------------------------------------------------------------------------------


WRITES = [
    ("post", "/api/v1/clusters", {"name": "local-new"}),
    ("delete", "/api/v1/clusters/local-1", None),
]


@pytest.mark.parametrize(
    ("persona", "read_only", "expected"),
    [
        ("viewer", False, (200, 200, 403, 403)),
        ("outsider", False, (200, 200, 403, 403)),
        ("deployer", False, (200, 200, 202, 202)),
        ("admin_user", False, (200, 200, 202, 202)),
        ("deployer", True, (200, 200, 403, 403)),
        ("admin_user", True, (200, 200, 403, 403)),
    ],
)
def test_who_may_do_what(client, request, token_for, deployer, persona, read_only, expected):
    ready_cluster(deployer, "local-1")
    user = request.getfixturevalue(persona)
    headers = bearer(token_for(user, "probe", read_only=read_only))
    got = [
        client.get("/api/v1/clusters", **headers).status_code,
        client.get("/api/v1/clusters/local-1", **headers).status_code,
    ]
    before = _counts()
    for method, path, payload in WRITES:
        call = getattr(client, method)
        response = (
            call(path, payload, content_type="application/json", **headers)
            if payload
            else call(path, **headers)
        )
        got.append(response.status_code)
        if response.status_code == 403:
            assert _counts() == before
    assert tuple(got) == expected
    if read_only:
        assert "read-only" in response.json()["detail"]


# --- the real stack ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_cluster_made_and_deleted_through_the_api_runs_on_a_real_worker(
    client, deployer, token_for, celery_processes
):
    celery_processes("worker")
    headers = bearer(token_for(deployer, "ci"))
    made = client.post("/api/v1/clusters", {"name": "local-api"}, content_type="application/json", **headers)
    assert made.status_code == 202

    def finished(location: str) -> dict | None:
        body = client.get(location, **headers).json()
        return body if body["finished"] else None

    provisioned = wait_for(lambda: finished(made["Location"]), 60, message="the cluster provisioned")
    assert provisioned["state"] == OperationState.SUCCEEDED, provisioned["error"]
    assert client.get("/api/v1/clusters/local-api", **headers).json()["state"] == "Succeeded"
    deleted = client.delete("/api/v1/clusters/local-api", **headers)
    assert deleted.status_code == 202
    done = wait_for(lambda: finished(deleted["Location"]), 60, message="the cluster deleted")
    assert done["state"] == OperationState.SUCCEEDED, done["error"]
    assert client.get("/api/v1/clusters/local-api", **headers).json()["state"] == "Deleted"
    assert client.get("/api/v1/clusters", **headers).json()["items"] == []
    events = AuditEvent.objects.filter(
        resource_name="local-api", action__in=("cluster.create", "cluster.delete")
    )
    assert {(e.action, e.actor_name, e.via) for e in events} == {
        ("cluster.create", "dana", "token ci"),
        ("cluster.delete", "dana", "token ci"),
    }
