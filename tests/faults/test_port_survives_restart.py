"""The scoring URI never changes while its deployment exists: the port is reserved at creation and reused by
every restart, even while a client's kept-alive connection leaves the old socket lingering; a port another
process listens on fails the deploy, naming the port, instead of moving the deployment elsewhere."""

from __future__ import annotations

import socket

import pytest
import requests

from deployments.crypto import decrypt
from deployments.models import AuditEvent, Deployment
from deployments.services import services_reconcile
from deployments.services.operations import operation_transition
from deployments.services.specs import service_files_write, service_spec
from deployments.services.transitions import deployment_transition
from deployments.states import ServiceState
from scoring import control
from tests.conftest import wait_for

from .conftest import backend, run_operation, state_dir

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_restart_keeps_the_scoring_uri_while_a_client_holds_a_kept_alive_connection(make_deployment):
    deployment = make_deployment(name="port-keeper")
    port = deployment.local_port
    assert port and not 32768 <= port <= 60999  # reserved at creation, outside the ephemeral range
    operation = run_operation(deployment.deploy_op)
    assert operation.state == "succeeded", operation.error
    deployment.refresh_from_db()
    uri = f"http://127.0.0.1:{port}/score"
    assert deployment.scoring_uri == uri

    client = requests.Session()  # keeps its connection to the front proxy open between requests
    headers = {"Authorization": f"Bearer {decrypt(deployment.primary_key_encrypted)}"}
    assert client.post(uri, json={"n": 1}, headers=headers, timeout=10).status_code == 200

    # The supervisor goes away under the open connection (closing it first: its side lingers in the kernel,
    # which made a plain bind() refuse the port), and the deployment is started again.
    assert control.stop(state_dir(deployment))
    spec = service_spec(deployment)
    service_files_write(deployment)
    backend().deploy_service(spec)
    observed = wait_for(
        lambda: (o := backend().observe_service(spec)).state == ServiceState.HEALTHY and o,
        60,
        message="Healthy again",
    )
    assert observed.scoring_uri == uri
    answer = client.post(uri, json={"n": 2}, headers=headers, timeout=10)
    assert answer.status_code == 200 and answer.json() == {"echo": '{"n": 2}'}


def test_a_port_another_process_listens_on_fails_the_deploy_and_names_the_port(make_deployment):
    deployment = make_deployment(name="port-squatted")
    port = deployment.local_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        operation = run_operation(deployment.deploy_op, timeout=60)
    assert operation.state == "failed"
    assert f"Port {port}" in operation.error and "in use by another process" in operation.error
    deployment = Deployment.objects.get(pk=deployment.pk)
    assert deployment.state == ServiceState.FAILED and f"Port {port}" in deployment.error
    assert deployment.local_port == port  # still reserved: no silent move to another port
    assert not control.is_running(state_dir(deployment))


def test_the_reconciler_retries_a_service_whose_port_is_taken_at_most_every_30_s(make_deployment):
    deployment = make_deployment(name="port-lost")
    operation_transition(operation=deployment.deploy_op, to="running")  # as if it had been deployed
    operation_transition(operation=deployment.deploy_op, to="succeeded")
    deployment = deployment_transition(deployment=deployment, to=ServiceState.HEALTHY)
    with socket.socket() as squatter:  # taken while nothing serves it (Lynx was stopped, say)
        squatter.bind(("127.0.0.1", deployment.local_port))
        squatter.listen()
        for _ in range(3):  # three passes, 2 s apart in production
            services_reconcile("here")
    assert Deployment.objects.get(pk=deployment.pk).state == ServiceState.UNHEALTHY
    restarts = AuditEvent.objects.filter(action="deployment.restart", resource_id=deployment.pk)
    assert restarts.count() == 1
    assert not control.is_running(state_dir(deployment))
