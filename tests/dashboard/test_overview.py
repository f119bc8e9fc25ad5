"""The overview: what runs, who owns it, where, on what, since when, last used when, and what it costs."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from deployments.crypto import encrypt
from deployments.models import AuditEvent, Cluster, Deployment, VmPrice, VmPriceChange, Workspace
from deployments.services.prices import vm_price_set, vm_prices_seed
from deployments.states import ProvisioningState
from tests.deployments.factories import ready_cluster, start_deployment

pytestmark = pytest.mark.django_db


@pytest.fixture
def prices():
    vm_prices_seed()


def azure_cluster(
    owner, name: str, *, hours_ago: float, node_count: int = 2, vm_size="Standard_NC4as_T4_v3", **fields
) -> Cluster:
    workspace, _ = Workspace.objects.get_or_create(
        name="ml-prod",
        defaults=dict(
            subscription_id="sub",
            resource_group="rg",
            workspace_name="ws",
            tenant_id="t",
            client_id="c",
            client_secret_encrypted=encrypt("s"),
        ),
    )
    values = dict(
        name=name,
        backend="azureml",
        workspace=workspace,
        vm_size=vm_size,
        node_count=node_count,
        owner=owner,
        provisioning_state=ProvisioningState.SUCCEEDED,
        gpu_count=1,
        gpu_kind="NVIDIA T4",
        created_at=timezone.now() - timedelta(hours=hours_ago),
    )
    return Cluster.objects.create(**{**values, **fields})


def row(html: str, table: str, name: str) -> str:
    section = html.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    found = re.search(rf'<tr data-[a-z]+="{re.escape(name)}">(.*?)</tr>', section, re.S)
    assert found, f"{name} not in #{table}"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(1))).strip()


def test_clusters_show_owner_target_size_nodes_gpus_state_age_and_cost(client, deployer, prices):
    azure_cluster(deployer, "aks-t4", hours_ago=10, node_count=3)
    client.force_login(deployer)
    text = row(client.get("/").content.decode(), "clusters", "aks-t4")
    # owner, workspace, size, nodes, GPUs = 1 per node × 3 nodes, state, age, 10 h × 3 × $0.526, per hour
    assert text.startswith("aks-t4 dana ml-prod Standard_NC4as_T4_v3 3 3 × NVIDIA T4 Succeeded 10 hours")
    assert "$15.78" in text and "$1.578" in text and "never" in text


def test_a_creating_cluster_shows_the_gpus_of_its_size_from_the_price_table(client, deployer, prices):
    azure_cluster(
        deployer,
        "aks-new",
        hours_ago=0,
        node_count=2,
        vm_size="Standard_NC64as_T4_v3",
        gpu_count=0,
        gpu_kind="",
        provisioning_state=ProvisioningState.CREATING,
    )
    client.force_login(deployer)
    assert "8 × NVIDIA T4 Creating" in row(client.get("/").content.decode(), "clusters", "aks-new")


def test_the_local_target_costs_what_the_price_table_says(client, deployer, admin_user, prices):
    cluster = ready_cluster(deployer, "local-gpu")
    Cluster.objects.filter(pk=cluster.pk).update(created_at=timezone.now() - timedelta(hours=2))
    client.force_login(deployer)
    text = row(client.get("/").content.decode(), "clusters", "local-gpu")
    assert "local this machine 1 0 Succeeded" in text and "$0.00" in text
    vm_price_set(user=admin_user, price=VmPrice.objects.get(vm_size="local"), price_per_hour=Decimal("1.50"))
    # From now on: the two hours already run stay free.
    assert "2 hours $0.00 $1.50" in row(client.get("/").content.decode(), "clusters", "local-gpu")
    VmPriceChange.objects.filter(price__vm_size="local", set_by=admin_user).update(
        effective_from=timezone.now() - timedelta(hours=1)
    )  # as if the admin had changed it an hour ago
    assert "2 hours $1.50 $1.50" in row(client.get("/").content.decode(), "clusters", "local-gpu")


def test_a_size_without_a_price_says_so(client, deployer, prices):
    azure_cluster(deployer, "aks-a10", hours_ago=1, vm_size="Standard_NV6ads_A10_v5")
    client.force_login(deployer)
    html = client.get("/").content.decode()
    assert "no price" in row(html, "clusters", "aks-a10")
    assert "No price for Standard_NV6ads_A10_v5" in html


def test_deployments_show_owner_target_replicas_state_age_and_last_scoring_request(
    client, deployer, demo_model, prices
):
    cluster = ready_cluster(deployer, "local-gpu")
    deployment = start_deployment(deployer, cluster, demo_model, replicas=2).deployment
    client.force_login(deployer)
    text = row(client.get("/").content.decode(), "deployments", "digits-demo")
    assert text.startswith("digits-demo dana digits:1 local-gpu local 2 off Transitioning")
    assert text.endswith("never")
    Deployment.objects.filter(pk=deployment.pk).update(last_scored_at=timezone.now() - timedelta(minutes=5))
    assert row(client.get("/").content.decode(), "deployments", "digits-demo").endswith("5 minutes ago")


def test_totals_per_owner_and_per_team(client, deployer, teammate, prices):
    teammate.groups.add(Group.objects.create(name="vision"))
    azure_cluster(deployer, "aks-1", hours_ago=1, node_count=1)
    azure_cluster(teammate, "aks-2", hours_ago=2, node_count=1)
    client.force_login(deployer)
    html = client.get("/").content.decode()
    assert row(html, "owner-totals", "dana") == "dana 1 $0.526 $0.53 $0.53"
    assert row(html, "owner-totals", "theo") == "theo 1 $0.526 $1.05 $1.05"
    assert row(html, "team-totals", "vision") == "vision 1 $0.526 $1.05 $1.05"
    assert row(html, "team-totals", "no team") == "no team 1 $0.526 $0.53 $0.53"
    assert 'id="total-per-hour">$1.05<' in html


def test_a_chart_shows_cost_per_day_for_30_days_as_inline_svg(client, deployer, prices):
    azure_cluster(deployer, "aks-1", hours_ago=24 * 3, node_count=1)
    client.force_login(deployer)
    html = client.get("/").content.decode()
    svg = html.split('<svg id="cost-chart"', 1)[1].split("</svg>", 1)[0]
    bars = re.findall(r'<rect [^>]*data-day="([\d-]+)" data-amount="([\d.]+)"', svg)
    assert len(bars) == 30 and bars[-1][0] == timezone.now().date().isoformat()
    paid = [float(amount) for _, amount in bars if float(amount) > 0]
    assert len(paid) in (3, 4) and sum(paid) == pytest.approx(0.526 * 72, abs=0.03)
    assert "<script" not in html.split("<main", 1)[1]  # drawn on the server, no chart library


def test_the_owner_sees_a_banner_before_teardown_and_others_do_not(client, deployer, teammate, prices):
    cluster = ready_cluster(deployer, "local-gpu")
    Cluster.objects.filter(pk=cluster.pk).update(
        expires_at=timezone.now() + timedelta(minutes=30), auto_teardown=True
    )
    client.force_login(deployer)
    html = client.get("/").content.decode()
    banner = html.split('id="expiry-warnings"', 1)[1].split("</section>", 1)[0]
    assert "local-gpu" in banner and "will be torn down in" in banner and "expired at" in banner
    assert reverse("cluster_expiry_extend", args=[cluster.pk]) in banner
    client.force_login(teammate)
    html = client.get("/").content.decode()
    assert 'id="expiry-warnings"' not in html
    assert "in 29 minutes" in row(html, "clusters", "local-gpu") or "in 30 minutes" in row(
        html, "clusters", "local-gpu"
    )


def test_no_banner_far_from_the_deadline(client, deployer, prices):
    cluster = ready_cluster(deployer, "local-gpu")
    Cluster.objects.filter(pk=cluster.pk).update(expires_at=timezone.now() + timedelta(hours=5))
    client.force_login(deployer)
    assert 'id="expiry-warnings"' not in client.get("/").content.decode()


def test_extend_is_one_post_and_is_audited(client, deployer, prices):
    cluster = ready_cluster(deployer, "local-gpu")
    expires = timezone.now() + timedelta(minutes=30)
    Cluster.objects.filter(pk=cluster.pk).update(expires_at=expires, auto_teardown=True)
    client.force_login(deployer)
    response = client.post(reverse("cluster_expiry_extend", args=[cluster.pk]), {"hours": "24", "next": "/"})
    assert response.status_code == 302 and response["Location"] == "/"
    cluster.refresh_from_db()
    assert cluster.expires_at == expires + timedelta(hours=24)
    assert AuditEvent.objects.get(action="cluster.expiry_extend").actor_name == "dana"
    assert 'id="expiry-warnings"' not in client.get("/").content.decode()


def test_cancel_is_one_post_and_is_audited(client, deployer, prices):
    cluster = ready_cluster(deployer, "local-gpu")
    Cluster.objects.filter(pk=cluster.pk).update(idle_teardown_hours=1, auto_teardown=True)
    client.force_login(deployer)
    client.post(reverse("cluster_expiry_cancel", args=[cluster.pk]))
    cluster.refresh_from_db()
    assert cluster.idle_teardown_hours is None and not cluster.auto_teardown
    assert AuditEvent.objects.get(action="cluster.expiry_cancel").actor_name == "dana"


def test_a_viewer_cannot_extend_and_sees_no_buttons(client, deployer, viewer, prices):
    cluster = ready_cluster(deployer, "local-gpu")
    Cluster.objects.filter(pk=cluster.pk).update(expires_at=timezone.now() + timedelta(minutes=10))
    client.force_login(viewer)
    html = client.get("/").content.decode()
    assert "Cancel expiry" not in html and "+4 h" not in html
    assert client.post(reverse("cluster_expiry_extend", args=[cluster.pk]), {"hours": "4"}).status_code == 403
    assert not AuditEvent.objects.filter(action="cluster.expiry_extend").exists()


def test_extend_refuses_bad_hours_with_a_message_and_changes_nothing(client, deployer, prices):
    cluster = ready_cluster(deployer, "local-gpu")
    Cluster.objects.filter(pk=cluster.pk).update(expires_at=timezone.now() + timedelta(minutes=10))
    client.force_login(deployer)
    response = client.post(reverse("cluster_expiry_extend", args=[cluster.pk]), {"hours": "-3"}, follow=True)
    assert "Extend by 1 to 2160 hours; nothing was changed." in response.content.decode()
    assert not AuditEvent.objects.filter(action="cluster.expiry_extend").exists()


def test_extend_does_not_redirect_off_site(client, deployer, prices):
    cluster = ready_cluster(deployer, "local-gpu")
    Cluster.objects.filter(pk=cluster.pk).update(expires_at=timezone.now())
    client.force_login(deployer)
    response = client.post(
        reverse("cluster_expiry_extend", args=[cluster.pk]), {"hours": "1", "next": "https://evil.example/"}
    )
    assert response["Location"] == "/"


def test_the_overview_takes_the_same_number_of_queries_however_much_is_running(
    client, deployer, teammate, demo_model, prices
):
    ready_cluster(deployer, "c-0")
    client.force_login(deployer)
    client.get("/")
    with CaptureQueriesContext(connection) as few:
        assert client.get("/").status_code == 200
    for index in range(1, 12):
        cluster = ready_cluster(teammate if index % 2 else deployer, f"c-{index}")
        Cluster.objects.filter(pk=cluster.pk).update(
            expires_at=timezone.now() + timedelta(minutes=index * 10)
        )
        start_deployment(deployer, cluster, demo_model, name=f"svc-{index}")
        azure_cluster(teammate, f"aks-{index}", hours_ago=index)
    with CaptureQueriesContext(connection) as many:
        assert client.get("/").status_code == 200
    assert len(many) == len(few), [q["sql"] for q in many.captured_queries]
