"""A run() that leaks is stopped at the deployment's memory setting, as Kubernetes stops a container over
its limit: the replica is killed, restarted, and shown as OOMKilled with its restart count, on the status the
supervisor writes and on the deployment's page (its replica table and its audit trail)."""

from __future__ import annotations

import pytest
import requests

from deployments.crypto import decrypt
from deployments.models import AuditEvent, Deployment
from deployments.services import services_reconcile
from deployments.states import ServiceState
from scoring import control
from tests.conftest import wait_for

from .conftest import run_operation, state_dir

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Each call keeps 300 MB more, touched so that it is resident (bytes * n writes every page).
LEAKS = """
leaked = []

def init():
    pass

def run(data):
    leaked.append(b"\\x01" * (300 * 2**20))
    return {"held_mb": 300 * len(leaked)}
"""


def test_a_leaking_run_is_oomkilled_at_its_limit_restarted_and_shown(client, deployer, make_deployment):
    deployment = make_deployment(LEAKS, name="leaky", memory_gb=0.2)
    operation = run_operation(deployment.deploy_op)
    assert operation.state == "succeeded", operation.error
    deployment.refresh_from_db()
    (before,) = control.read_status(state_dir(deployment))["replicas"]
    assert before["rss_bytes"] < 0.2 * 2**30, "the replica alone is over the limit: the test proves nothing"

    key = decrypt(deployment.primary_key_encrypted)
    try:
        requests.post(deployment.scoring_uri, json={}, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    except requests.ConnectionError:
        pass  # killed before it answered: the proxy may drop the connection

    def restarted():
        (replica,) = control.read_status(state_dir(deployment))["replicas"]
        done = replica["state"] == "ready" and replica["restarts"] == 1
        return done and replica

    replica = wait_for(restarted, 30, interval=0.2, message="the replica OOMKilled and ready again")
    assert replica["last_termination"]["reason"] == "OOMKilled"
    assert replica["rss_bytes"] < 0.2 * 2**30
    status = control.read_status(state_dir(deployment))
    (event,) = status["events"]
    assert event["reason"] == "OOMKilled" and "over the deployment's 205 MB memory limit" in event["message"]

    services_reconcile()
    recorded = AuditEvent.objects.filter(
        action="deployment.restart", resource_id=deployment.pk, after__reason="OOMKilled"
    )
    assert recorded.count() == 1 and "OOMKilled" in recorded.get().message
    services_reconcile()
    assert recorded.count() == 1  # recorded once, however often the reconciler looks
    assert Deployment.objects.get(pk=deployment.pk).state == ServiceState.HEALTHY
    client.force_login(deployer)
    page = client.get(f"/deployments/{deployment.pk}/status/").content.decode()
    assert 'id="deployment-replicas"' in page and "OOMKilled" in page, page
