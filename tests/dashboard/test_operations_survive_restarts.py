"""The operation list (kind, resource, who, state, duration, error) is read from the database, so a
broker that lost everything (restarted without persistence) or a dead worker takes none of it away."""

from __future__ import annotations

import re

import pytest
import redis
from django.conf import settings
from django.urls import reverse

from deployments.services.clusters import cluster_create
from deployments.services.operations import operation_transition
from deployments.states import OperationState

pytestmark = pytest.mark.django_db


def _rows(html: str) -> list[str]:
    table = html.split('<table class="operations">', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>", 1)[1], re.S)
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip() for row in rows]


def test_operations_are_listed_from_the_database_after_the_broker_forgot_everything(client, deployer, viewer):
    done = cluster_create(user=deployer, name="ok-1")
    operation_transition(operation=done, to=OperationState.RUNNING)
    operation_transition(operation=done, to=OperationState.SUCCEEDED)
    broken = cluster_create(user=deployer, name="bad-1")
    operation_transition(operation=broken, to=OperationState.RUNNING)
    operation_transition(operation=broken, to=OperationState.FAILED, error="QuotaExceeded: no NC cores left")
    cluster_create(user=deployer, name="queued-1")

    redis.Redis.from_url(settings.REDIS_URL).flushall()  # what a broker restart without persistence leaves
    assert settings.CELERY_RESULT_BACKEND is None  # no task state kept in the broker to lose

    client.force_login(viewer)
    rows = _rows(client.get(reverse("operation_list")).content.decode())
    assert len(rows) == 3
    queued, failed, succeeded = rows
    assert queued.startswith("Provision cluster queued-1 dana queued") and queued.endswith("—")
    assert (
        failed.startswith("Provision cluster bad-1 dana failed")
        and "QuotaExceeded: no NC cores left" in failed
    )
    assert re.search(r"Provision cluster ok-1 dana succeeded \S+ \S+ \d+\.\d s", succeeded)
