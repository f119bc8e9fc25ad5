"""/api/v1/costs: the overview's costs as JSON: per cluster, per deployment where a target bills each
deployment, per owner and team, per day. Read-only; every role reads it."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from deployments.models import Cluster, Deployment, RegisteredModel
from deployments.services.prices import vm_price_create
from deployments.states import ProvisioningState, ServiceState
from tests.api.conftest import bearer
from tests.deployments.conftest import login
from tests.deployments.factories import ready_cluster

pytestmark = pytest.mark.django_db

SIZE = "Standard_Test_Three"  # $3.00 an instance-hour


def _hours_ago(hours: float):
    return timezone.now() - timedelta(hours=hours)


@pytest.fixture
def running(deployer, teammate, admin_user) -> dict:
    """A local cluster at $0.50/h for 10 h, and a managed endpoint target (billed per deployment) with one
    live two-instance deployment of 10 h at $3 an instance-hour, and one deleted deployment."""
    vm_price_create(user=admin_user, vm_size="local", price_per_hour=Decimal("0.50"))
    vm_price_create(user=admin_user, vm_size=SIZE, price_per_hour=Decimal("3.00"))
    local = ready_cluster(deployer, "local-1")
    Cluster.objects.filter(pk=local.pk).update(created_at=_hours_ago(10))
    managed = Cluster.objects.create(
        name="managed-t4",
        backend="azureml_managed",
        vm_size=SIZE,
        owner=teammate,
        created_at=_hours_ago(20),
        provisioning_state=ProvisioningState.SUCCEEDED,
    )
    model = RegisteredModel.objects.create(name="digits", version=1, path="digits/1/digits")
    common = {
        "cluster": managed,
        "model": model,
        "entry_script": "",
        "environment_yaml": "",
        "owner": teammate,
    }
    live = Deployment.objects.create(
        name="scoring-live", replicas=2, created_at=_hours_ago(10), state=ServiceState.HEALTHY, **common
    )
    Deployment.objects.create(
        name="scoring-gone",
        created_at=_hours_ago(10),
        deleted_at=_hours_ago(4),
        state=ServiceState.DELETED,
        **common,
    )
    teammate.groups.add(Group.objects.create(name="vision"))
    return {"local": local, "managed": managed, "live": live}


def test_costs_are_per_cluster_and_per_billed_deployment(client, viewer, token_for, running):
    response = client.get("/api/v1/costs", **bearer(token_for(viewer)))
    assert response.status_code == 200
    body = response.json()
    clusters = {c["name"]: c for c in body["clusters"]}
    assert list(clusters) == ["local-1", "managed-t4"]  # oldest first by id
    local = clusters["local-1"]
    assert (local["target"], local["owner"], local["billed_per_service"]) == ("local", "dana", False)
    assert local["per_hour"] == 0.5 and local["so_far"] == pytest.approx(5.0, abs=0.01)
    # A target that bills each deployment: the cluster costs what its live deployments cost.
    managed = clusters["managed-t4"]
    assert managed["billed_per_service"] is True and managed["per_hour"] == 6.0
    assert managed["so_far"] == pytest.approx(60.0, abs=0.05)
    [deployment] = body["deployments"]  # the deleted one bills no more
    assert deployment["id"] == running["live"].pk and deployment["cluster"] == "managed-t4"
    assert (deployment["replicas"], deployment["vm_size"], deployment["owner"]) == (2, SIZE, "theo")
    assert deployment["per_hour"] == 6.0 and deployment["so_far"] == pytest.approx(60.0, abs=0.05)
    assert deployment["hours"] == pytest.approx(10.0, abs=0.01)


def test_totals_per_owner_and_team_are_the_overviews(client, viewer, token_for, running):
    body = client.get("/api/v1/costs", **bearer(token_for(viewer))).json()
    total = body["total"]
    assert total["name"] == "All" and total["running"] == 2 and total["per_hour"] == 6.5
    # The deleted deployment's six hours count in the last 30 days only.
    assert total["last_30_days"] == pytest.approx(5.0 + 60.0 + 18.0, abs=0.1)
    owners = {o["name"]: o for o in body["owners"]}
    assert owners["theo"]["per_hour"] == 6.0 and owners["dana"]["per_hour"] == 0.5
    assert [t["name"] for t in body["teams"]] == ["vision", "no team"]
    assert len(body["per_day"]) == 30 and body["per_day"][-1]["day"] == timezone.now().date().isoformat()
    assert body["unpriced_sizes"] == [] and body["unmanaged_per_hour"] == 0.0
    overview = login(viewer).get("/").content.decode()
    assert '<span class="kpi" id="total-per-hour">$6.50</span>' in overview


def test_a_size_without_a_price_is_named_and_left_out_of_the_totals(client, deployer, viewer, token_for):
    Cluster.objects.create(
        name="aks-odd",
        backend="azureml",
        vm_size="Standard_Unpriced_X",
        owner=deployer,
        created_at=_hours_ago(3),
        provisioning_state=ProvisioningState.SUCCEEDED,
    )
    body = client.get("/api/v1/costs", **bearer(token_for(viewer))).json()
    [cluster] = body["clusters"]
    assert cluster["per_hour"] is None and cluster["so_far"] is None
    assert body["unpriced_sizes"] == ["Standard_Unpriced_X"]
    assert body["total"]["unpriced"] == 1 and body["total"]["per_hour"] == 0.0


def test_nothing_running_costs_nothing(client, viewer, token_for):
    body = client.get("/api/v1/costs", **bearer(token_for(viewer))).json()
    assert body["clusters"] == [] and body["deployments"] == [] and body["owners"] == []
    assert body["total"] == {
        "name": "All",
        "running": 0,
        "per_hour": 0.0,
        "so_far": 0.0,
        "last_30_days": 0.0,
        "unpriced": 0,
    }


@pytest.mark.parametrize(
    ("persona", "read_only"),
    [("viewer", False), ("outsider", False), ("deployer", False), ("admin_user", False), ("deployer", True)],
)
def test_every_role_reads_costs_and_nobody_writes_them(client, request, token_for, persona, read_only):
    headers = bearer(token_for(request.getfixturevalue(persona), "probe", read_only=read_only))
    assert client.get("/api/v1/costs", **headers).status_code == 200
    assert client.post("/api/v1/costs", {}, content_type="application/json", **headers).status_code == 405


def test_costs_need_a_token(client):
    response = client.get("/api/v1/costs")
    assert response.status_code == 401
