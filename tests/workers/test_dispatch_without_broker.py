"""Recording an operation never depends on the broker: with the broker down, the POST that saved it still
answers with the operation's page, and the operation waits, queued, for the reconciler."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from django.urls import reverse

from bench.htmlform import form_data
from deployments.models import Operation
from deployments.states import OperationState
from tests.deployments.factories import ready_cluster

pytestmark = pytest.mark.django_db(transaction=True)  # on_commit runs for real, as in a request


@pytest.fixture
def broker_down(tmp_path: Path) -> Iterator[None]:
    """The Celery app publishes to a broker socket nobody listens on (the session's broker is untouched)."""
    from workers.celery import app

    def reset_pools() -> None:
        # Drops the app's references to its connection and producer pools (Celery's own after-fork reset), so
        # the next publish takes kombu's pool for the broker URL now set. Not closed: kombu keeps one pool per
        # URL, and the session's broker gets its own back afterwards.
        app._after_fork()

    previous = app.conf.broker_url
    app.conf.broker_url = f"redis+socket://{tmp_path / 'nobody.sock'}"
    reset_pools()
    yield
    app.conf.broker_url = previous
    reset_pools()


@pytest.fixture
def small_model(tmp_path: Path):
    from deployments.services.registered_models import model_register

    source = tmp_path / "weights"
    source.mkdir()
    (source / "saved_model.pb").write_bytes(b"\x08\x01" * 256)
    model = model_register(user=None, name=f"outage-{uuid4().hex[:6]}", source_dir=source, labels="a\nb")
    yield model
    shutil.rmtree(model.files_dir.parent.parent, ignore_errors=True)


def test_a_deploy_posted_while_the_broker_is_down_is_saved_and_answers_with_its_page(
    client, deployer, small_model, broker_down, caplog
):
    cluster = ready_cluster(deployer, name="outage-local")
    client.force_login(deployer)
    data = form_data(client.get(reverse("deployment_new")).content.decode(), must_have="entry_script")
    data.update(name="during-outage", cluster=str(cluster.pk), model=str(small_model.pk))

    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        response = client.post(reverse("deployment_new"), data)
    elapsed = time.monotonic() - started

    operation = Operation.objects.get(resource_name="during-outage")
    assert response.status_code == 302, response.content.decode()[:2000]
    assert response["Location"] == reverse("operation_detail", args=[operation.pk])
    assert operation.state == OperationState.QUEUED and operation.steps == 0
    assert f"operation {operation.pk} not dispatched, broker unreachable" in caplog.text
    assert elapsed < 10, f"the POST waited {elapsed:.1f} s on a dead broker"
    page = client.get(response["Location"])
    assert page.status_code == 200
    assert "Waiting for the task queue: the broker cannot be reached" in page.content.decode()


def test_the_reconciler_dispatches_a_queued_operation_that_was_never_dispatched(
    deployer, settings, monkeypatch
):
    from deployments.services import operations
    from deployments.services.reconcile import services_reconcile

    settings.LYNX_OPERATION_LEASE_SECONDS = 1
    operation = ready_cluster(deployer, name="kept").operations.get()
    stranded = Operation.objects.create(kind=operation.kind, cluster=operation.cluster, resource_name="kept")
    dispatched: list[int] = []
    monkeypatch.setattr(operations, "operation_dispatch", lambda pk, countdown=0: dispatched.append(pk))

    assert services_reconcile()["reclaimed"] == 0  # younger than a lease: its own dispatch may be on its way
    time.sleep(1.2)
    assert services_reconcile()["reclaimed"] == 1
    assert dispatched == [stranded.pk]


def test_dispatch_gives_up_within_seconds_on_a_broker_that_never_answers(deployer, monkeypatch):
    """A broker host that accepts connections and then says nothing (a half-open failover) costs a request
    one socket timeout, not minutes."""
    import socket

    from deployments.services.operations import operation_dispatch
    from workers.celery import app

    silent = socket.socket()  # the kernel accepts into the backlog; nobody ever answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    monkeypatch.setattr(app.conf, "broker_url", f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
    app._after_fork()  # the app's pools are rebuilt for that URL (see broker_down)
    operation = ready_cluster(deployer, name="silent").operations.get()
    try:
        started = time.monotonic()
        dispatched = operation_dispatch(operation.pk)
        elapsed = time.monotonic() - started
    finally:
        silent.close()
        monkeypatch.undo()
        app._after_fork()
    assert dispatched is False and elapsed < 8, elapsed
    assert operation.lines.filter(text__startswith="Waiting for the task queue").exists()
