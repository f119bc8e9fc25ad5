"""The dashboard's Azure path against the local Azure emulator; the real azureml-core SDK makes every call.

The SDK reads its cloud definition once, when azureml is first imported, so the emulator is started (and its
environment set) while pytest loads this file, before anything imports azureml. The environment is the
process's from then on, and Celery workers started by a test inherit it through
tests.conftest.worker_env(). It only points Azure's hosts at the emulator: NO_PROXY keeps 127.0.0.1 and
localhost (live servers, local replicas, chromium's pages) off the proxy
(test_emulator_env_is_harmless_to_local_addresses checks that).
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import pytest

from tests.azure_emulator.fixtures import azure_emulator, azure_emulator_session, process_emulator

process_emulator()

__all__ = ["azure_emulator", "azure_emulator_session"]

GPU_SIZE = "Standard_NC4as_T4_v3"  # 1 × NVIDIA T4 per node
CPU_SIZE = "Standard_D4s_v5"


def unique(prefix: str) -> str:
    """Names the emulator has not seen in this session (its state outlives each test's database)."""
    # Ends with a letter: Azure refuses a compute name ending in a hyphen and digits only (gpu-1).
    return f"{prefix}-{uuid.uuid4().hex[:5]}z"


def run_inline(operation_id: int, timeout: float = 30):
    """Drive an operation to its end in this process, as a worker would, without waiting out its delays."""
    from deployments.models import Operation
    from deployments.services import operation_advance

    deadline = time.monotonic() + timeout
    while True:
        operation = Operation.objects.get(pk=operation_id)
        if operation.is_finished:
            return operation
        assert time.monotonic() < deadline, (
            f"operation {operation_id} still {operation.state} after {timeout}s"
        )
        delay = operation_advance(operation_id=operation_id)
        time.sleep(0.05 if delay is None else min(delay, 0.2))


def lines_of(operation) -> list[str]:
    return list(operation.lines.order_by("id").values_list("text", flat=True))


@pytest.fixture
def workspace(admin_user, azure_emulator):
    """The emulator's workspace, connected by an admin and tested."""
    from targets.azureml.services.workspaces import workspace_create

    emu = azure_emulator
    operation = workspace_create(
        user=admin_user,
        name=unique("ws"),
        **emu.workspace_fields(),
    )
    operation = run_inline(operation.pk)
    assert operation.state == "succeeded", operation.error
    operation.workspace.refresh_from_db()
    return operation.workspace


def provision(user, workspace, *, vm_size: str = GPU_SIZE, nodes: int = 1, name: str | None = None):
    """An AKS cluster provisioned through cluster_create and the step engine, in this process."""
    from deployments.services import cluster_create

    operation = cluster_create(
        user=user,
        name=name or unique("aks"),
        backend="azureml",
        workspace=workspace,
        vm_size=vm_size,
        node_count=nodes,
        cluster_purpose="DevTest",
        location="eastus",
    )
    operation = run_inline(operation.pk)
    assert operation.state == "succeeded", operation.error
    cluster = operation.cluster
    cluster.refresh_from_db()
    return cluster


@pytest.fixture
def tiny_model(tmp_path: Path):
    """A registered model version with a few bytes of weights (Azure only stores it)."""
    from deployments.services.registered_models import model_register

    source = tmp_path / "weights"
    source.mkdir()
    (source / "saved_model.pb").write_bytes(b"\x08\x01" * 256)
    model = model_register(user=None, name=unique("resnet50"), source_dir=source, labels="lynx\ncat\ndog")
    yield model
    shutil.rmtree(model.files_dir.parent.parent, ignore_errors=True)
