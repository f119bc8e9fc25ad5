"""Who may do what to deployments through the API, endpoint by endpoint, as the pages decide it: everyone
signed in reads; deployers and admins act; a viewer, someone in no group and a read-only token are refused
(403) and change nothing. An unknown deployment is a 404 for every endpoint that names one."""

from __future__ import annotations

import json

import pytest

from deployments.environments import default_entry_script, default_environment_yaml
from deployments.models import (
    AuditEvent,
    Cluster,
    Deployment,
    Operation,
    RegisteredModel,
    ScoringRun,
    Workspace,
)
from deployments.services.deployments import deployment_update
from deployments.services.operations import operation_transition
from tests.api.conftest import bearer
from tests.deployments.conftest import make_healthy, png
from tests.deployments.factories import ready_cluster, start_deployment

pytestmark = pytest.mark.django_db
URL = "/api/v1/deployments"
READ, ACT = "read", "act"
# Nothing listens there: a test-scoring run is kept all the same, with the reason (a 200 with "error").
SCORING_URI = "http://127.0.0.1:9/score"

# (method, path under /deployments, body, what it is, what a deployer or an admin gets)
ENDPOINTS = [
    ("GET", "", None, READ, 200),
    ("GET", "/digits-api", None, READ, 200),
    ("GET", "/digits-api/revisions", None, READ, 200),
    ("GET", "/digits-api/keys", None, READ, 200),
    ("GET", "/digits-api/logs", None, READ, 200),
    ("POST", "", {"name": "digits-new", "model": "digits", "cluster": "local-1"}, ACT, 202),
    ("PATCH", "/digits-api", {"replicas": 2}, ACT, 202),
    ("POST", "/digits-api/rollback", {"revision": 1}, ACT, 202),
    ("POST", "/digits-canary/traffic", {"complete": True}, ACT, 202),
    ("POST", "/digits-v1/move", {"cluster": "managed-1", "name": "digits-v2"}, ACT, 202),
    ("DELETE", "/digits-api", None, ACT, 202),
    ("POST", "/digits-api/keys/reveal", {"key": "primary"}, ACT, 200),
    ("POST", "/digits-api/keys/regenerate", {"key": "secondary"}, ACT, 202),
    ("POST", "/digits-api/score", "image", ACT, 200),
]
ROLES = ["viewer", "outsider", "read-only token", "deployer", "admin"]


def _finish(operation: Operation, uri: str) -> Deployment:
    operation_transition(operation=operation, to="running")
    operation_transition(operation=operation, to="succeeded")
    assert operation.deployment is not None
    return make_healthy(operation.deployment, uri)


def _azure(owner, model: RegisteredModel, backend: str, name: str, **fields) -> Deployment:
    workspace, _ = Workspace.objects.get_or_create(
        name="ws",
        defaults=dict(
            subscription_id="s", resource_group="r", workspace_name="w", tenant_id="t", client_id="c"
        ),
    )
    cluster = Cluster.objects.create(
        name=f"{name}-c", backend=backend, workspace=workspace, provisioning_state="Succeeded", owner=owner
    )
    return Deployment.objects.create(
        name=name,
        cluster=cluster,
        model=model,
        entry_script=default_entry_script(),
        environment_yaml=default_environment_yaml(),
        owner=owner,
        state="Healthy",
        **fields,
    )


@pytest.fixture
def world(deployer) -> None:
    """Something for every endpoint to act on: a Healthy local deployment at revision 2, a canary on managed
    endpoints, an AKS deployment and a managed cluster to move it to."""
    model = RegisteredModel.objects.create(name="digits", version=1, path="digits/1/digits", labels="0\n1")
    first = start_deployment(deployer, ready_cluster(deployer), model, name="digits-api")
    first = _finish(first, SCORING_URI)
    _finish(deployment_update(user=deployer, deployment=first, replicas=3), SCORING_URI)
    canary = {"traffic": {"1": 80, "2": 20}}
    _azure(deployer, model, "azureml_managed", "digits-canary", revision=2, stats=canary)
    _azure(deployer, model, "azureml", "digits-v1")
    Cluster.objects.create(
        name="managed-1",
        backend="azureml_managed",
        provisioning_state="Succeeded",
        owner=deployer,
        workspace=Workspace.objects.get(),
    )


def _call(client, method: str, path: str, body, auth: dict):
    if body == "image":
        return client.post(f"{URL}{path}", png(), content_type="image/png", **auth)
    if body is None:
        return client.generic(method, f"{URL}{path}", **auth)
    return client.generic(method, f"{URL}{path}", json.dumps(body), "application/json", **auth)


def _state() -> tuple:
    """Everything a refused request must leave as it was."""
    deployments = list(Deployment.objects.order_by("pk").values_list("name", "state", "revision", "replicas"))
    counts = (Operation.objects.count(), AuditEvent.objects.count(), ScoringRun.objects.count())
    return deployments, counts


@pytest.fixture
def auth_as(request, token_for, django_user_model):
    def make(role: str) -> dict:
        if role == "read-only token":
            return bearer(token_for(request.getfixturevalue("deployer"), "ro", read_only=True))
        user = request.getfixturevalue({"admin": "admin_user"}.get(role, role))
        return bearer(token_for(user, "t"))

    return make


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "path", "body", "kind", "allowed"), ENDPOINTS)
def test_each_role_gets_what_the_pages_give_it(
    client, world, auth_as, role, method, path, body, kind, allowed
):
    auth = auth_as(role)
    before = _state()
    response = _call(client, method, path, body, auth)
    may_act = role in ("deployer", "admin")
    if kind == READ or may_act:
        assert response.status_code == allowed, response.content
        if kind == ACT:
            assert _state() != before
        return
    assert response.status_code == 403, response.content
    detail = response.json()["detail"]
    if role == "read-only token":
        assert detail == 'The token "ro" is read-only.'
    else:
        assert detail == "Your role is viewer: ask an admin for the deployer role."
    assert _state() == before


@pytest.mark.parametrize(("method", "path", "body", "kind", "allowed"), ENDPOINTS)
def test_no_token_is_401_and_changes_nothing(client, world, method, path, body, kind, allowed):
    before = _state()
    assert _call(client, method, path, body, {}).status_code == 401
    assert _state() == before


@pytest.mark.parametrize(
    ("method", "path", "body", "kind", "allowed"), [e for e in ENDPOINTS if e[1].startswith("/digits-")]
)
@pytest.mark.parametrize("ref", ["nope", "999999"])
def test_an_unknown_deployment_is_404_for_every_endpoint(
    client, world, deployer, token_for, method, path, body, kind, allowed, ref
):
    auth = bearer(token_for(deployer))
    before = _state()
    named = path.split("/")[1]
    response = _call(client, method, f"/{ref}{path[1 + len(named) :]}", body, auth)
    assert response.status_code == 404, response.content
    expected = f"No deployment {ref}." if ref.isdigit() else f"No deployment named {ref}."
    assert response.json() == {"detail": expected}
    assert _state() == before
