"""Fixtures for fault trials: tiny entry scripts (no TensorFlow: a replica is ready in about a second) on a
throwaway model, deployed through the real services, backend, supervisor and sandboxed replicas."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.conf import settings

from deployments.models import Deployment, Operation
from deployments.services import deployment_create
from deployments.services.operations import operation_advance
from deployments.services.specs import service_spec
from targets.local.backend import LocalBackend
from tests.deployments.factories import ready_cluster

ECHO_SCRIPT = """
def init():
    pass

def run(data):
    return {"echo": data}
"""


@pytest.fixture
def tiny_model(db, tmp_path: Path):
    """A registered model whose files nobody reads: the entry scripts here ignore it."""
    from deployments.services.registered_models import model_register

    source = tmp_path / "tiny-model"
    source.mkdir()
    (source / "weights.txt").write_text("0\n")
    return model_register(user=None, name="tiny", source_dir=source, framework="none")


@pytest.fixture
def make_deployment(deployer, tiny_model, stop_local_replicas) -> Callable[..., Deployment]:
    """Record a local deployment of `script` (nothing started yet); its deploy operation is `.deploy_op`."""
    clusters: list = []

    def make(script: str = ECHO_SCRIPT, *, name: str, **config) -> Deployment:
        if not clusters:
            clusters.append(ready_cluster(deployer, "local-faults"))
        operation = deployment_create(
            user=deployer,
            name=name,
            cluster=clusters[0],
            model=tiny_model,
            entry_script=script,
            environment_yaml="name: tiny\ndependencies:\n  - python=3.11\n",
            **config,
        )
        deployment = Deployment.objects.get(pk=operation.deployment_id)
        deployment.deploy_op = operation
        # Logs and keys an earlier run of the same test left under the same name.
        LocalBackend(settings.LYNX_LOCAL_DIR).delete_service(service_spec(deployment))
        return deployment

    return make


def run_operation(operation: Operation, timeout: float = 120) -> Operation:
    """Advance an operation in this process, step after step as a worker would, until it finishes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        delay = operation_advance(operation_id=operation.pk)
        operation.refresh_from_db()
        if operation.is_finished:
            return operation
        time.sleep(min(delay or 0.5, 1.0))
    pytest.fail(f"operation {operation} did not finish within {timeout:g} s: {operation.phase}")


def backend() -> LocalBackend:
    return LocalBackend(settings.LYNX_LOCAL_DIR)


def state_dir(deployment: Deployment) -> Path:
    return settings.LYNX_LOCAL_DIR / "services" / deployment.name
