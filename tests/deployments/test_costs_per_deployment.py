"""Costs on a target that bills each deployment (`TargetTraits.billed_per_service`, Azure ML managed online
endpoints): the cluster's VM size × the deployment's replicas for the hours the deployment exists."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext

from deployments import selectors
from deployments.backends import target_traits
from deployments.costs import Priced, priced_sum
from deployments.models import Cluster, Deployment, RegisteredModel
from deployments.services.prices import vm_price_create
from deployments.states import ProvisioningState, ServiceState

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
MANAGED = "azureml_managed"
SIZE = "Standard_Test_Three"  # $3.00 an instance-hour


@pytest.fixture(autouse=True)
def managed_target(monkeypatch):
    """A target that bills each deployment, whether or not settings register one yet."""
    managed = dataclasses.replace(target_traits("azureml"), label="Azure ML managed", billed_per_service=True)
    monkeypatch.setattr(
        selectors, "target_traits", lambda kind: managed if kind == MANAGED else target_traits(kind)
    )


@pytest.fixture
def priced(admin_user):
    vm_price_create(user=admin_user, vm_size=SIZE, price_per_hour=Decimal("3.00"))
    vm_price_create(user=admin_user, vm_size="Standard_Cluster_Size", price_per_hour=Decimal("1.00"))


@pytest.fixture
def model():
    return RegisteredModel.objects.create(name="digits", version=1, path="digits/1/digits")


def cluster_row(
    owner, name, *, hours_ago, backend=MANAGED, vm_size=SIZE, node_count=3, deleted_hours_ago=None
):
    deleted = deleted_hours_ago is not None
    return Cluster.objects.create(
        name=name,
        backend=backend,
        vm_size=vm_size,
        node_count=node_count,
        owner=owner,
        created_at=NOW - timedelta(hours=hours_ago),
        deleted_at=NOW - timedelta(hours=deleted_hours_ago) if deleted else None,
        provisioning_state=ProvisioningState.DELETED if deleted else ProvisioningState.SUCCEEDED,
    )


def deployment_row(owner, cluster, model, name, *, hours_ago, replicas=1, deleted_hours_ago=None):
    """A deployment as history left it: a row, not operations."""
    deleted = deleted_hours_ago is not None
    return Deployment.objects.create(
        name=name,
        cluster=cluster,
        model=model,
        entry_script="",
        environment_yaml="",
        replicas=replicas,
        owner=owner,
        created_at=NOW - timedelta(hours=hours_ago),
        deleted_at=NOW - timedelta(hours=deleted_hours_ago) if deleted else None,
        state=ServiceState.DELETED if deleted else ServiceState.HEALTHY,
    )


def test_a_deployment_costs_its_replicas_times_the_size_of_its_cluster(deployer, priced, model):
    cluster = cluster_row(deployer, "managed", hours_ago=20)  # its own 3 nodes and 20 hours cost nothing
    deployment_row(deployer, cluster, model, "two", hours_ago=10, replicas=2)
    summary = selectors.costs_summary(now=NOW)
    assert summary.by_cluster[cluster.pk] == Priced(
        rate=Decimal("6.00"), hours=Decimal(10), so_far=Decimal("60.00"), per_hour_now=Decimal("6.00")
    )
    assert summary.total.so_far == Decimal("60.00") and summary.total.per_hour == Decimal("6.00")
    assert summary.total.running == 1  # the deployment; the cluster is not a running thing of its own
    assert summary.total.last_30_days == Decimal("60.00")
    assert dict(summary.per_day)[NOW.date()] == Decimal("60.00")


def test_a_cluster_sums_its_live_deployments(deployer, priced, model):
    cluster = cluster_row(deployer, "managed", hours_ago=20)
    deployment_row(deployer, cluster, model, "two", hours_ago=10, replicas=2)  # $60, $6/h
    deployment_row(deployer, cluster, model, "one", hours_ago=4)  # $12, $3/h
    summary = selectors.costs_summary(now=NOW)
    assert summary.by_cluster[cluster.pk] == Priced(
        rate=Decimal("9.00"), hours=Decimal(10), so_far=Decimal("72.00"), per_hour_now=Decimal("9.00")
    )
    assert summary.total.running == 2 and summary.total.so_far == Decimal("72.00")


def test_a_deleted_deployment_stops_costing_at_its_deletion(deployer, priced, model):
    cluster = cluster_row(deployer, "managed", hours_ago=20)
    deployment_row(deployer, cluster, model, "gone", hours_ago=10, deleted_hours_ago=4)  # 6 h × $3
    summary = selectors.costs_summary(now=NOW)
    assert summary.by_cluster[cluster.pk].so_far == 0  # the overview shows what runs now
    assert summary.total.running == 0 and summary.total.per_hour == 0 and summary.total.so_far == 0
    assert summary.total.last_30_days == Decimal("18.00")
    assert sum(amount for _, amount in summary.per_day) == Decimal("18.00")


def test_a_cluster_without_deployments_costs_nothing(deployer, priced):
    cluster = cluster_row(deployer, "empty", hours_ago=48, node_count=5)
    summary = selectors.costs_summary(now=NOW)
    assert summary.by_cluster[cluster.pk] == Priced(
        rate=Decimal(0), hours=Decimal(0), so_far=Decimal(0), per_hour_now=Decimal(0)
    )
    assert summary.total.running == 0 and summary.total.so_far == 0 and summary.total.last_30_days == 0
    assert summary.owners == [] and sum(amount for _, amount in summary.per_day) == 0


def test_clusters_of_other_targets_keep_their_own_price_beside_it(deployer, priced, model):
    aks = cluster_row(deployer, "aks", hours_ago=10, backend="azureml", vm_size="Standard_Cluster_Size")
    managed = cluster_row(deployer, "managed", hours_ago=10)
    deployment_row(deployer, managed, model, "one", hours_ago=10)
    deployment_row(deployer, aks, model, "on-aks", hours_ago=10, replicas=4)  # the cluster bills, not this
    summary = selectors.costs_summary(now=NOW)
    assert summary.by_cluster[aks.pk].so_far == Decimal("30.00")  # 3 nodes × $1 × 10 h
    assert summary.by_cluster[managed.pk].so_far == Decimal("30.00")  # 1 replica × $3 × 10 h
    assert summary.total.so_far == Decimal("60.00") and summary.total.running == 2


def test_a_deployment_on_a_size_without_a_price_is_reported_unpriced(deployer, priced, model):
    mystery = cluster_row(deployer, "mystery", hours_ago=5, vm_size="Standard_Made_Up")
    known = cluster_row(deployer, "known", hours_ago=5)
    deployment_row(deployer, mystery, model, "unpriced", hours_ago=2)
    deployment_row(deployer, known, model, "priced", hours_ago=2)
    summary = selectors.costs_summary(now=NOW)
    cost = summary.by_cluster[mystery.pk]
    assert cost.rate is None and cost.so_far is None and cost.per_hour_now is None
    assert summary.unpriced_sizes == ["Standard_Made_Up"]
    assert summary.total.unpriced == 1 and summary.total.running == 2
    assert summary.total.so_far == Decimal("6.00")


def test_a_cluster_with_one_unpriced_part_has_no_total():
    known = Priced(rate=Decimal(3), hours=Decimal(2), so_far=Decimal(6), per_hour_now=Decimal(3))
    unknown = Priced(rate=None, hours=Decimal(5), so_far=None, per_hour_now=None)
    assert priced_sum([known, unknown]) == Priced(rate=None, hours=Decimal(5), so_far=None, per_hour_now=None)
    assert priced_sum([known, known]) == Priced(
        rate=Decimal(6), hours=Decimal(2), so_far=Decimal(12), per_hour_now=Decimal(6)
    )


def test_a_deployment_is_billed_to_its_owner_and_their_teams_not_to_the_cluster_owner(
    deployer, teammate, outsider, priced, model
):
    vision = Group.objects.create(name="vision")
    teammate.groups.add(vision)
    outsider.groups.add(vision, Group.objects.create(name="nlp"))
    cluster = cluster_row(deployer, "shared", hours_ago=30)  # dana's cluster, no deployment of hers
    deployment_row(teammate, cluster, model, "theo-1", hours_ago=10, replicas=2)  # $60
    deployment_row(outsider, cluster, model, "otto-1", hours_ago=2)  # $6
    deployment_row(outsider, cluster, model, "otto-old", hours_ago=8, deleted_hours_ago=6)  # $6, ended
    summary = selectors.costs_summary(now=NOW)
    owners = {t.name: t for t in summary.owners}
    assert set(owners) == {"theo", "otto"}
    assert owners["theo"].so_far == Decimal("60.00") and owners["theo"].per_hour == Decimal("6.00")
    assert owners["otto"].so_far == Decimal("6.00") and owners["otto"].running == 1
    assert owners["otto"].last_30_days == Decimal("12.00")
    teams = {t.name: t for t in summary.teams}
    assert set(teams) == {"vision", "nlp"}
    assert teams["vision"].so_far == Decimal("66.00") and teams["vision"].running == 2
    assert teams["nlp"].so_far == Decimal("6.00") and teams["nlp"].last_30_days == Decimal("12.00")
    assert summary.total.so_far == Decimal("66.00") and summary.total.last_30_days == Decimal("72.00")
    assert summary.by_cluster[cluster.pk].so_far == Decimal("66.00")


def test_cost_per_day_splits_a_deployment_over_utc_days(deployer, priced, model):
    cluster = cluster_row(deployer, "days", hours_ago=100)
    # Created 2026-11-23 18:00 with 2 replicas ($6/h): 6 h on the 23rd, 24 h on the 24th, 12 h on the 25th.
    deployment_row(deployer, cluster, model, "days", hours_ago=42, replicas=2)
    per_day = dict(selectors.costs_summary(now=NOW).per_day)
    assert per_day[NOW.date()] == Decimal("72.00")
    assert per_day[NOW.date() - timedelta(days=1)] == Decimal("144.00")
    assert per_day[NOW.date() - timedelta(days=2)] == Decimal("36.00")
    assert sum(per_day.values()) == Decimal("252.00")


def test_a_deleted_cluster_is_not_listed_but_its_deployments_recent_hours_count(deployer, priced, model):
    cluster = cluster_row(deployer, "gone", hours_ago=30, deleted_hours_ago=10)
    deployment_row(deployer, cluster, model, "gone", hours_ago=20, deleted_hours_ago=12)  # 8 h × $3
    deployment_row(deployer, cluster, model, "ancient", hours_ago=24 * 60, deleted_hours_ago=24 * 40)
    summary = selectors.costs_summary(now=NOW)
    assert cluster.pk not in summary.by_cluster
    assert summary.total.running == 0 and summary.total.last_30_days == Decimal("24.00")


def test_costs_per_deployment_take_at_most_four_queries_however_much_history_there_is(
    deployer, teammate, priced, model, django_assert_max_num_queries
):
    cluster_row(deployer, "aks", hours_ago=3, backend="azureml")
    first = cluster_row(deployer, "first", hours_ago=3)
    deployment_row(deployer, first, model, "first", hours_ago=2)
    with CaptureQueriesContext(connection) as few:
        selectors.costs_summary(now=NOW)
    for index in range(20):
        owner = teammate if index % 2 else deployer
        cluster = cluster_row(
            owner, f"c{index}", hours_ago=index + 30, deleted_hours_ago=index if index % 3 else None
        )
        for replica in range(3):
            alive = index % 3 == 0 and replica != 1
            deployment_row(
                owner,
                cluster,
                model,
                f"d{index}-{replica}",
                hours_ago=index + 20,
                replicas=replica + 1,
                deleted_hours_ago=None if alive else index + 1,
            )
    with django_assert_max_num_queries(4) as many:
        summary = selectors.costs_summary(now=NOW)
    assert len(many) == len(few) == 4
    assert summary.total.running == 1 + 1 + 7 * 2  # aks, first, and two live deployments on 7 live clusters
