"""Costs: hours a cluster has existed × nodes × the price table's price per node-hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from deployments import selectors
from deployments.costs import PriceSchedule, cluster_price, daily_costs, last_days
from deployments.models import (
    PRICE_HISTORY_START,
    AuditEvent,
    Cluster,
    RegisteredModel,
    VmPrice,
    VmPriceChange,
)
from deployments.services.operations import Refused
from deployments.services.prices import vm_price_create, vm_price_set, vm_prices_seed
from deployments.states import ProvisioningState
from deployments.vm_sizes import CPU_SIZES, GPU_SIZES

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def cluster_row(
    owner,
    name,
    *,
    hours_ago: float,
    backend="azureml",
    vm_size="Standard_NC4as_T4_v3",
    node_count=1,
    deleted_hours_ago: float | None = None,
    now=NOW,
) -> Cluster:
    """A cluster as history left it (created and maybe deleted in the past): rows, not operations."""
    deleted = deleted_hours_ago is not None
    return Cluster.objects.create(
        name=name,
        backend=backend,
        vm_size=vm_size,
        node_count=node_count,
        owner=owner,
        created_at=now - timedelta(hours=hours_ago),
        deleted_at=now - timedelta(hours=deleted_hours_ago) if deleted else None,
        provisioning_state=ProvisioningState.DELETED if deleted else ProvisioningState.SUCCEEDED,
    )


@pytest.fixture
def prices():
    vm_prices_seed()
    return {p.vm_size: p for p in VmPrice.objects.all()}


def test_cost_so_far_is_hours_times_nodes_times_the_price_of_the_size(deployer, prices):
    cluster = cluster_row(deployer, "gpu-3", hours_ago=10, node_count=3)
    cost = selectors.costs_summary(now=NOW).by_cluster[cluster.pk]
    assert prices["Standard_NC4as_T4_v3"].price_per_hour == Decimal("0.5260")
    assert cost.rate == Decimal("1.578")  # 3 nodes × $0.526
    assert cost.per_hour_now == Decimal("1.578")
    assert cost.so_far == Decimal("15.78")  # 10 hours


def _moved_to(change: VmPriceChange, when: datetime) -> None:
    """As if the admin had saved that change at `when` (the service stamps it with the real time)."""
    VmPriceChange.objects.filter(pk=change.pk).update(effective_from=when)


def test_the_local_target_is_free_and_a_price_an_admin_sets_counts_from_then_on(deployer, admin_user, prices):
    local = cluster_row(deployer, "local-gpu", hours_ago=4, backend="local", vm_size="")
    assert selectors.costs_summary(now=NOW).by_cluster[local.pk].so_far == 0
    vm_price_set(user=admin_user, price=prices["local"], price_per_hour=Decimal("0.25"))
    _moved_to(VmPriceChange.objects.filter(price=prices["local"]).latest("effective_from"), NOW)
    two_hours_later = selectors.costs_summary(now=NOW + timedelta(hours=2)).by_cluster[local.pk]
    assert two_hours_later.so_far == Decimal("0.50")  # the 4 free hours stay free
    assert two_hours_later.per_hour_now == Decimal("0.25")


def test_a_price_change_applies_from_then_on_and_the_hours_before_keep_their_price(
    deployer, admin_user, prices
):
    cluster = cluster_row(deployer, "t4", hours_ago=10, node_count=2)  # since 02:00 today
    before = selectors.costs_summary(now=NOW).by_cluster[cluster.pk].so_far
    assert before == Decimal("10.52")  # 10 h × 2 nodes × $0.526
    change = VmPriceChange.objects.get(
        pk=vm_price_set(user=admin_user, price=prices["Standard_NC4as_T4_v3"], price_per_hour=Decimal("1"))
        .changes.latest("effective_from")
        .pk
    )
    assert change.set_by == admin_user
    _moved_to(change, NOW - timedelta(hours=4))
    summary = selectors.costs_summary(now=NOW)
    cost = summary.by_cluster[cluster.pk]
    assert cost.so_far == Decimal("14.312")  # 6 h × 2 × $0.526 + 4 h × 2 × $1
    assert cost.per_hour_now == cost.rate == Decimal("2")
    assert dict(summary.per_day)[NOW.date()] == Decimal("14.312")
    assert summary.total.so_far == Decimal("14.312")


def test_hours_run_while_a_size_had_no_price_make_its_cost_unknown(deployer, admin_user, prices):
    cluster = cluster_row(deployer, "t4", hours_ago=10)
    price = prices["Standard_NC4as_T4_v3"]
    vm_price_set(user=admin_user, price=price, price_per_hour=None)
    _moved_to(price.changes.latest("effective_from"), NOW - timedelta(hours=6))
    vm_price_set(user=admin_user, price=price, price_per_hour=Decimal("0.5"))
    _moved_to(price.changes.latest("effective_from"), NOW - timedelta(hours=2))
    summary = selectors.costs_summary(now=NOW)
    assert summary.by_cluster[cluster.pk].so_far is None and summary.total.unpriced == 1
    assert summary.by_cluster[cluster.pk].per_hour_now == Decimal("0.5")
    # The 30-day chart still shows the hours that had a price: 4 h at $0.526 and 2 h at $0.5.
    assert dict(summary.per_day)[NOW.date()] == Decimal("3.104")


def test_a_size_added_later_prices_the_hours_its_clusters_already_ran(deployer, admin_user, prices):
    cluster = cluster_row(deployer, "new-size", hours_ago=3, vm_size="Standard_NC8ads_A10_v9")
    assert selectors.costs_summary(now=NOW).by_cluster[cluster.pk].so_far is None
    vm_price_create(user=admin_user, vm_size="Standard_NC8ads_A10_v9", price_per_hour=Decimal("2"))
    assert selectors.costs_summary(now=NOW).by_cluster[cluster.pk].so_far == Decimal("6")


def test_a_price_schedule_prices_each_stretch_of_time_at_its_own_price():
    schedule = PriceSchedule(
        ((PRICE_HISTORY_START, Decimal(1)), (NOW, Decimal(3)), (NOW + timedelta(hours=2), None))
    )
    assert schedule.at(NOW - timedelta(days=9000)) == 1 and schedule.at(NOW) == 3
    assert schedule.at(NOW + timedelta(hours=5)) is None
    assert schedule.cost(NOW - timedelta(hours=1), NOW + timedelta(hours=1)) == Decimal(4)
    assert schedule.cost(NOW + timedelta(hours=1), NOW + timedelta(hours=3)) is None
    assert schedule.cost(NOW, NOW) == 0


def test_sizes_are_matched_case_insensitively_as_azure_does(deployer, prices):
    cluster = cluster_row(deployer, "lower", hours_ago=2, vm_size="standard_nc4as_t4_v3")
    assert selectors.costs_summary(now=NOW).by_cluster[cluster.pk].so_far == Decimal("1.052")


def test_a_size_without_a_price_shows_no_cost_and_stays_out_of_the_totals(deployer, prices):
    priced = cluster_row(deployer, "priced", hours_ago=1)
    unpriced = cluster_row(deployer, "partition", hours_ago=1, vm_size="Standard_NV6ads_A10_v5")
    unknown = cluster_row(deployer, "mystery", hours_ago=1, vm_size="Standard_Made_Up")
    summary = selectors.costs_summary(now=NOW)
    assert summary.by_cluster[unpriced.pk].so_far is None and summary.by_cluster[unknown.pk].so_far is None
    assert summary.total.so_far == summary.by_cluster[priced.pk].so_far == Decimal("0.526")
    assert summary.total.unpriced == 2
    assert summary.unpriced_sizes == ["Standard_Made_Up", "Standard_NV6ads_A10_v5"]


def test_a_deleted_cluster_stops_costing_at_its_deletion(deployer, prices):
    gone = cluster_row(deployer, "gone", hours_ago=30, deleted_hours_ago=20)  # ran 10 hours, yesterday
    summary = selectors.costs_summary(now=NOW)
    assert gone.pk not in summary.by_cluster  # the overview lists what runs
    assert summary.total.per_hour == 0 and summary.total.running == 0
    assert summary.total.last_30_days == Decimal("5.26")
    assert sum(amount for _, amount in summary.per_day) == Decimal("5.26")


def test_cost_per_day_splits_the_hours_over_utc_days_for_the_last_30_days(deployer, prices):
    # Created 2026-11-23 18:00: 6 h on the 23rd, 24 h on the 24th, 12 h on the 25th (until noon).
    cluster_row(deployer, "days", hours_ago=42)
    cluster_row(deployer, "ancient", hours_ago=24 * 60, deleted_hours_ago=24 * 40)  # outside the window
    per_day = dict(selectors.costs_summary(now=NOW).per_day)
    assert len(per_day) == 30 and max(per_day) == NOW.date()
    assert per_day[NOW.date()] == Decimal("6.312")
    assert per_day[NOW.date() - timedelta(days=1)] == Decimal("12.624")
    assert per_day[NOW.date() - timedelta(days=2)] == Decimal("3.156")
    assert sum(per_day.values()) == Decimal("22.092")


def test_daily_costs_ignore_days_outside_the_cluster_life():
    days = last_days(NOW, 3)
    split = daily_costs(
        created_at=NOW - timedelta(hours=1), deleted_at=None, rate=Decimal(2), days=days, now=NOW
    )
    assert split == {NOW.date(): Decimal(2)}


def test_cluster_price_of_a_cluster_that_has_not_existed_yet_is_zero():
    priced = cluster_price(
        created_at=NOW + timedelta(hours=1), deleted_at=None, node_count=2, price_per_hour=Decimal(1), now=NOW
    )
    assert priced.so_far == 0 and priced.per_hour_now == 2


def test_totals_per_owner_and_per_team(deployer, teammate, outsider, prices):
    vision = Group.objects.create(name="vision")
    teammate.groups.add(vision)
    outsider.groups.add(vision, Group.objects.create(name="nlp"))
    cluster_row(deployer, "d1", hours_ago=2)  # $1.052
    cluster_row(deployer, "d2", hours_ago=1, node_count=2)  # $1.052
    cluster_row(teammate, "t1", hours_ago=4)  # $2.104
    cluster_row(outsider, "o1", hours_ago=1)  # $0.526, counts in vision and nlp
    summary = selectors.costs_summary(now=NOW)
    owners = {t.name: t for t in summary.owners}
    assert owners["dana"].so_far == Decimal("2.104") and owners["dana"].running == 2
    assert owners["dana"].per_hour == Decimal("1.578")
    assert owners["theo"].so_far == Decimal("2.104")
    teams = {t.name: t for t in summary.teams}
    assert set(teams) == {"vision", "nlp", "no team"}  # roles are not teams
    assert teams["vision"].so_far == Decimal("2.630") and teams["vision"].running == 2
    assert teams["nlp"].so_far == Decimal("0.526")
    assert teams["no team"].so_far == Decimal("2.104")
    assert summary.total.so_far == Decimal("4.734")
    assert [t.name for t in summary.teams][-1] == "no team"


def test_costs_take_the_same_number_of_queries_however_much_history_there_is(deployer, teammate, prices):
    cluster_row(deployer, "one", hours_ago=3)
    with CaptureQueriesContext(connection) as few:
        selectors.costs_summary(now=NOW)
    for index in range(40):
        cluster_row(
            teammate if index % 2 else deployer,
            f"c{index}",
            hours_ago=index + 1,
            deleted_hours_ago=index / 2 if index % 3 else None,
        )
    with CaptureQueriesContext(connection) as many:
        selectors.costs_summary(now=NOW)
    assert len(many) == len(few) <= 3


def test_seeding_fills_the_table_from_the_vm_sizes_with_gpu_counts_and_a_free_local_row(prices):
    assert len(prices) == len(GPU_SIZES) + len(CPU_SIZES) + 1
    assert prices["local"].price_per_hour == 0
    t4 = prices["Standard_NC64as_T4_v3"]
    assert (t4.gpu_count, t4.gpu_kind, t4.vcpus, t4.price_per_hour) == (4, "NVIDIA T4", 64, Decimal("4.3520"))
    assert prices["Standard_NC6"].retired_on is not None and prices["Standard_NC6"].price_per_hour is None
    assert AuditEvent.objects.filter(action="price.seed", actor_name="system").count() == 1


def test_seeding_again_adds_nothing_and_keeps_prices_an_admin_changed(admin_user, prices):
    vm_price_set(user=admin_user, price=prices["Standard_NC4as_T4_v3"], price_per_hour=Decimal("0.40"))
    assert vm_prices_seed() == 0
    assert VmPrice.objects.get(vm_size="Standard_NC4as_T4_v3").price_per_hour == Decimal("0.4000")
    assert AuditEvent.objects.filter(action="price.seed").count() == 1


def test_a_price_change_is_audited_with_before_and_after(admin_user, prices):
    price = vm_price_set(
        user=admin_user, price=prices["Standard_NC4as_T4_v3"], price_per_hour=Decimal("0.61")
    )
    assert price.updated_by == admin_user
    event = AuditEvent.objects.get(action="price.update")
    assert (event.actor_name, event.resource_type, event.resource_name) == (
        "ada",
        "vmprice",
        "Standard_NC4as_T4_v3",
    )
    assert event.before["price_per_hour"] == "0.5260" and event.after["price_per_hour"] == "0.6100"


def test_a_negative_price_is_refused_and_changes_nothing(admin_user, prices):
    with pytest.raises(Refused, match="between 0 and"):
        vm_price_set(user=admin_user, price=prices["local"], price_per_hour=Decimal("-1"))
    assert VmPrice.objects.get(vm_size="local").price_per_hour == 0
    assert not AuditEvent.objects.filter(action="price.update").exists()


def test_an_admin_can_add_a_size_once(admin_user, prices):
    vm_price_create(
        user=admin_user,
        vm_size="Standard_NC8ads_A10_v9",
        price_per_hour=Decimal("1.5"),
        gpu_count=1,
        gpu_kind="NVIDIA A10",
    )
    assert AuditEvent.objects.filter(action="price.create", resource_name="Standard_NC8ads_A10_v9").exists()
    with pytest.raises(Refused, match="already in the price table"):
        vm_price_create(user=admin_user, vm_size="standard_nc8ads_a10_v9", price_per_hour=None)


def test_costs_are_computed_against_the_current_time_by_default(deployer, prices):
    cluster = cluster_row(deployer, "now", hours_ago=1, now=timezone.now())
    assert selectors.costs_summary().by_cluster[cluster.pk].so_far == pytest.approx(
        Decimal("0.526"), rel=Decimal("0.001")
    )


def test_lynx_seed_fills_the_price_table_once(capsys):
    from django.core.management import call_command

    # The demo model is registered already, so the command does not train it again.
    RegisteredModel.objects.create(name="digits", version=1, path="digits/1/digits")
    call_command("lynx_seed")
    assert "Filled the price table with" in capsys.readouterr().out
    assert VmPrice.objects.get(vm_size="local").price_per_hour == 0
    assert VmPrice.objects.count() == len(GPU_SIZES) + len(CPU_SIZES) + 1
    call_command("lynx_seed")
    assert "price table" not in capsys.readouterr().out
