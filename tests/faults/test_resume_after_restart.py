"""An operation in flight when Lynx stops (Ctrl-C of `make run` stops every local replica) ends as it would
have once Lynx is back, instead of Failed with "No replica supervisor is running" (issue 11, item 3)."""

from __future__ import annotations

import time

import pytest
from django.conf import settings

from deployments.models import Deployment, Operation
from deployments.services import operation_advance
from deployments.services.specs import service_spec
from deployments.states import ServiceState
from scoring import control
from targets.local.backend import LocalBackend
from tests.deployments.factories import ready_cluster, start_deployment

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _advance_until(operation_id: int, done, timeout: float) -> Operation:
    deadline = time.monotonic() + timeout
    while True:
        operation = Operation.objects.get(pk=operation_id)
        if done(operation):
            return operation
        assert time.monotonic() < deadline, f"operation still {operation.state}/{operation.phase}"
        operation_advance(operation_id=operation_id)
        time.sleep(0.2)


def test_a_deploy_whose_replicas_were_stopped_by_a_restart_is_resumed(deployer, demo_model):
    cluster = ready_cluster(deployer, name="resume-local")
    operation = start_deployment(deployer, cluster, demo_model, name="resume-me")
    deployment = operation.deployment
    state_dir = LocalBackend(settings.LYNX_LOCAL_DIR).state_dir(service_spec(deployment))
    try:
        _advance_until(operation.pk, lambda op: op.phase == "wait", timeout=30)
        assert control.is_running(state_dir)
        control.stop(state_dir)  # what Ctrl-C of `make run` does to every replica supervisor
        # Past the grace a just-spawned supervisor gets, so the step sees it gone, not "starting".
        (state_dir / "spawned_at").write_text(str(time.time() - 3600))

        finished = _advance_until(operation.pk, lambda op: op.is_finished, timeout=120)

        assert finished.state == "succeeded", list(finished.lines.values_list("text", flat=True))
        assert Deployment.objects.get(pk=deployment.pk).state == ServiceState.HEALTHY
        assert finished.lines.filter(text__contains="starting it again").exists()
    finally:
        LocalBackend(settings.LYNX_LOCAL_DIR).delete_service(service_spec(deployment))
