"""Deleting a cluster and deploying to it at the same moment: one of them is refused, never both accepted.

A review reproduced it on PostgreSQL (4 of 4 tries): both checks ran before either write committed, and a
Healthy deployment was left on a Deleted cluster. The audit write, which each service makes inside its
transaction, is slowed here so the two always overlap.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from deployments.models import Cluster, Deployment
from deployments.services import Refused, cluster_delete
from deployments.services import clusters as cluster_services
from deployments.services import deployments as deployment_services
from deployments.states import LIVE_SERVICE_STATES, ProvisioningState
from tests.deployments.factories import ready_cluster, start_deployment

pytestmark = pytest.mark.django_db(transaction=True)


def _slowed(original):
    def audit_record(**kwargs):
        time.sleep(0.3)  # inside the caller's transaction: the other request runs meanwhile
        return original(**kwargs)

    return audit_record


def _in_thread(results: dict, name: str, barrier: threading.Barrier, call) -> threading.Thread:
    def body() -> None:
        try:
            barrier.wait()
            results[name] = call()
        except Refused as refusal:
            results[name] = refusal
        finally:
            connection.close()  # each thread has its own connection

    return threading.Thread(target=body)


def test_deploying_and_deleting_a_cluster_at_once_refuses_one(deployer, demo_model, monkeypatch):
    monkeypatch.setattr(deployment_services, "audit_record", _slowed(deployment_services.audit_record))
    monkeypatch.setattr(cluster_services, "audit_record", _slowed(cluster_services.audit_record))
    for attempt in range(3):
        cluster = ready_cluster(deployer, name=f"race-{attempt}")
        results: dict = {}
        barrier = threading.Barrier(2)

        # Each request reads its own copy of the row, as two web requests would.
        def deploy(pk=cluster.pk, name=f"d-{attempt}"):
            return start_deployment(deployer, Cluster.objects.get(pk=pk), demo_model, name)

        def delete(pk=cluster.pk):
            return cluster_delete(user=deployer, cluster=Cluster.objects.get(pk=pk))

        threads = [
            _in_thread(results, "deploy", barrier, deploy),
            _in_thread(results, "delete", barrier, delete),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

        refused = [name for name, outcome in results.items() if isinstance(outcome, Refused)]
        assert len(results) == 2 and len(refused) == 1, results
        cluster.refresh_from_db()
        live = Deployment.objects.filter(cluster=cluster, state__in=LIVE_SERVICE_STATES)
        if refused == ["deploy"]:
            assert cluster.provisioning_state == ProvisioningState.DELETING
            assert not live.exists()
            assert "Deleting" in str(results["deploy"])
        else:
            assert cluster.provisioning_state == ProvisioningState.SUCCEEDED
            assert live.count() == 1
            assert "Delete the deployments" in str(results["delete"])
