"""The audit log page: newest first, paginated, filtered, before/after shown, and the same rows as CSV."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.db import connection
from django.http import StreamingHttpResponse
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from deployments.models import AuditEvent
from deployments.services.audit import audit_record
from deployments.services.clusters import cluster_delete
from deployments.services.operations import operation_transition
from deployments.services.transitions import cluster_transition
from deployments.states import ProvisioningState
from tests.deployments.factories import ready_cluster

pytestmark = pytest.mark.django_db


class Thing:
    def __init__(self, name: str, pk: int = 1) -> None:
        self.name, self.pk = name, pk


def record(n: int, *, actor=None, action="cluster.create", resource="c", at=None) -> None:
    """`n` audit rows; `at` back-dates them when they are inserted (PostgreSQL refuses to update them)."""
    for index in range(n):
        if at is None:
            audit_record(
                actor=actor, action=action, resource=Thing(f"{resource}{index}", index), after={"n": index}
            )
        else:
            AuditEvent.objects.create(
                created_at=at,
                actor=actor,
                actor_name=actor.get_username() if actor else "system",
                action=action,
                resource_type="thing",
                resource_id=index,
                resource_name=f"{resource}{index}",
                after={"n": index},
            )


def ids_on(response) -> list[int]:
    return [event.id for event, _ in response.context["rows"]]


def csv_rows(response) -> list[list[str]]:
    assert isinstance(response, StreamingHttpResponse)
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_newest_first_and_paginated_by_50(client, viewer):
    record(120)
    client.force_login(viewer)
    first = client.get(reverse("audit_list"))
    ids = ids_on(first)
    assert len(ids) == 50 and ids == sorted(ids, reverse=True)
    assert ids[0] == AuditEvent.objects.order_by("-id").first().id
    assert "Page 1 of 3" in first.content.decode()
    third = client.get(reverse("audit_list"), {"page": 3})
    assert len(ids_on(third)) == 20 and min(ids_on(third)) == AuditEvent.objects.order_by("id").first().id


def test_filters_by_person_action_resource_and_dates(client, viewer, deployer, teammate):
    old = timezone.now() - timedelta(days=10)
    record(3, actor=deployer, action="cluster.create", resource="a", at=old)
    record(2, actor=teammate, action="cluster.delete", resource="b")
    record(4, actor=teammate, action="deployment.create", resource="d")
    client.force_login(viewer)

    def count(**filters) -> int:
        response = client.get(reverse("audit_list"), filters)
        assert response.status_code == 200
        return response.context["page"].paginator.count

    assert count() == 9
    assert count(person="dana") == 3 and count(person="theo") == 6 and count(person="nobody") == 0
    assert count(action="cluster.delete") == 2
    assert count(action="cluster") == 5  # the family: cluster.*
    assert count(resource_type="thing", resource_name="d1") == 1
    assert count(resource_name="b0") == 1
    today = timezone.now().date()
    assert count(since=today.isoformat()) == 6
    assert count(until=(today - timedelta(days=1)).isoformat()) == 3
    assert (
        count(since=(today - timedelta(days=10)).isoformat(), until=(today - timedelta(days=10)).isoformat())
        == 3
    )
    assert count(person="theo", action="cluster") == 2


def test_filters_are_kept_when_paging(client, viewer, deployer):
    record(60, actor=deployer)
    record(5)
    client.force_login(viewer)
    html = client.get(reverse("audit_list"), {"person": "dana"}).content.decode()
    assert "?person=dana&amp;page=2" in html
    assert f"{reverse('audit_export')}?person=dana" in html


def test_a_bad_date_range_is_refused_with_a_message(client, viewer):
    client.force_login(viewer)
    response = client.get(reverse("audit_list"), {"since": "2026-11-20", "until": "2026-11-01"})
    assert response.status_code == 400
    assert "The end date is before the start date." in response.content.decode()
    assert client.get(reverse("audit_export"), {"since": "yesterday"}).status_code == 400


def test_before_and_after_are_shown_for_configuration_changes(client, viewer):
    audit_record(
        actor=None,
        action="price.update",
        resource=Thing("Standard_NC4as_T4_v3"),
        before={"price_per_hour": "0.5260", "currency": "USD"},
        after={"price_per_hour": "0.6100", "currency": "USD"},
    )
    client.force_login(viewer)
    html = client.get(reverse("audit_list")).content.decode()
    assert '<div class="changed"><span class="k">price_per_hour</span>' in html
    assert "<del>0.5260</del> → <ins>0.6100</ins>" in html
    assert '<div class=""><span class="k">currency</span>' in html


def test_a_deleted_resource_keeps_its_entries_and_its_name(client, viewer, deployer):
    cluster = ready_cluster(deployer, "gone-1")
    operation = cluster_delete(user=deployer, cluster=cluster)
    operation_transition(operation=operation, to="running")
    cluster_transition(cluster=cluster, to=ProvisioningState.DELETED)
    client.force_login(viewer)
    response = client.get(reverse("audit_list"), {"resource_type": "cluster", "resource_name": "gone-1"})
    actions = [event.action for event, _ in response.context["rows"]]
    assert "cluster.create" in actions and "cluster.delete" in actions
    assert actions[0] == "cluster.state"  # Deleted, the newest
    assert "gone-1" in response.content.decode()


def test_csv_export_has_the_same_rows_as_the_filtered_view(client, viewer, deployer, teammate):
    record(70, actor=deployer, action="deployment.create", resource="x")
    record(5, actor=teammate, action="deployment.create", resource="y")
    audit_record(
        actor=deployer, action="cluster.delete", resource=Thing("=cmd|' /C calc'!A0"), message="-2+3"
    )
    client.force_login(viewer)
    filters = {"person": "dana"}
    response = client.get(reverse("audit_export"), filters)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="lynx-audit-')
    header, *rows = csv_rows(response)
    assert header == [
        "id",
        "time_utc",
        "person",
        "action",
        "resource_type",
        "resource_id",
        "resource_name",
        "before",
        "after",
        "message",
        "via",
    ]
    pages = [client.get(reverse("audit_list"), {**filters, "page": n}) for n in (1, 2)]
    assert [int(r[0]) for r in rows] == ids_on(pages[0]) + ids_on(pages[1])
    assert len(rows) == 71 and {r[2] for r in rows} == {"dana"}
    assert rows[0][6] == "'=cmd|' /C calc'!A0" and rows[0][9] == "'-2+3"  # text, not a formula
    assert rows[1][8] == '{"n": 69}'


def test_the_page_and_the_export_take_the_same_number_of_queries_however_long_the_log(client, viewer):
    record(5)
    client.force_login(viewer)
    client.get(reverse("audit_list"))

    def queries(url: str, **params) -> int:
        with CaptureQueriesContext(connection) as captured:
            response = client.get(url, params)
            if isinstance(response, StreamingHttpResponse):
                b"".join(response.streaming_content)
        return len(captured)

    few = queries(reverse("audit_list"), page=1), queries(reverse("audit_export"))
    record(300)
    many = queries(reverse("audit_list"), page=3), queries(reverse("audit_export"))
    assert many == few


def test_the_page_reads_only_the_columns_it_shows(client, viewer):
    record(3)
    client.force_login(viewer)
    with CaptureQueriesContext(connection) as captured:
        client.get(reverse("audit_list"))
    selects = [q["sql"] for q in captured if "auditevent" in q["sql"].lower() and "COUNT" not in q["sql"]]
    assert len(selects) == 1 and '"actor_id"' not in selects[0]
    counts = [q["sql"] for q in captured if "auditevent" in q["sql"].lower() and "COUNT" in q["sql"]]
    assert len(counts) == 1 and "ORDER BY" not in counts[0]
