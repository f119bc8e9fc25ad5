"""A broker outage (a deploy, a Redis restart) is survived: the worker and beat reconnect by themselves,
operations recorded meanwhile run once the broker is back, and the web answers normally throughout.

Each test starts its own redis-server on a unix socket under its tmp_path, so it can stop and start it;
the session's broker (and the machine's shared Redis) is never touched."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.urls import reverse
from kombu import Connection

from deployments.models import Operation
from deployments.states import OperationState
from lynx.process_args import celery_beat_argv, celery_worker_argv, embedded_redis_argv
from tests.conftest import BASE_DIR, wait_for, worker_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


class OwnRedis:
    """A redis-server this test owns, on a unix socket only: stop() and start() it at will."""

    def __init__(self, directory: Path) -> None:
        self.socket = directory / "broker.sock"
        self.url = f"unix://{self.socket}"
        self.broker_url = f"redis+socket://{self.socket}"
        self.argv = embedded_redis_argv(self.socket, directory)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen(self.argv, start_new_session=True)
        client = redis.Redis(unix_socket_path=str(self.socket))
        wait_for(lambda: _pings(client), 20, 0.05, message="the test's redis-server")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # as abrupt as a crashed or redeployed broker
            self.proc.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class Process:
    """A `celery worker` or `beat` process talking to the test's own broker."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        output = log.open("w")
        self.proc = subprocess.Popen(
            argv, cwd=BASE_DIR, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for_line(self, needle: str, timeout: float = 60, after: int = 0) -> None:
        def seen() -> bool:
            if not self.alive():
                raise AssertionError(f"{self.log.name} exited:\n{self.text()[-4000:]}")
            return needle in self.text()[after:]

        wait_for(seen, timeout, 0.2, message=f"{needle!r} in {self.log.name}")

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[OwnRedis]:
    broker = OwnRedis(tmp_path)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def start_celery(own_broker: OwnRedis, tmp_path: Path) -> Iterator:
    """Start `worker` or `beat` against the test's own broker, with a short lease so the reconciler hands
    over quickly what the outage lost."""
    started: list[Process] = []
    env = dict(worker_env(), REDIS_URL=own_broker.url, LYNX_OPERATION_LEASE_SECONDS="2")

    def start(role: str) -> Process:
        if role == "worker":
            argv = celery_worker_argv("outage@%h", concurrency=1, standalone=True)
        else:
            argv = celery_beat_argv(tmp_path / "beat.schedule")
        process = Process(argv, env, tmp_path / f"{role}.log")
        started.append(process)
        process.wait_for_line(" ready." if role == "worker" else "beat: Starting")
        return process

    yield start
    for process in reversed(started):
        process.stop()


@pytest.fixture
def web_uses_own_broker(own_broker: OwnRedis, settings) -> Iterator[None]:
    """This (web) process publishes to the test's own broker; the Celery app's pools are rebuilt for it."""
    from workers.celery import app

    def reset_pools() -> None:
        # Drops the app's references to its connection and producer pools (Celery's own after-fork reset), so
        # the next publish takes kombu's pool for the broker URL now set. Not closed: kombu keeps one pool per
        # URL, and the session's broker gets its own back afterwards.
        app._after_fork()

    previous = app.conf.broker_url
    settings.REDIS_URL = own_broker.url
    app.conf.broker_url = own_broker.broker_url
    reset_pools()
    yield
    app.conf.broker_url = previous
    reset_pools()


def test_the_worker_survives_a_broker_restart_while_it_holds_a_scheduled_step(own_broker, start_celery):
    """kombu 5.7.0 + celery 5.7.0 killed the worker here: AttributeError 'NoneType' ... 'hostname'."""
    from workers.tasks import advance_operation

    worker = start_celery("worker")
    with Connection(own_broker.broker_url) as connection:
        # A step scheduled for later, as every operation waiting on the cloud has: the worker holds it.
        advance_operation.apply_async((987654,), countdown=600, connection=connection)
    worker.wait_for_line("received")

    own_broker.stop()
    worker.wait_for_line("Connection to broker lost")
    time.sleep(3)  # a few reconnection attempts against a broker that is gone
    assert worker.alive(), worker.text()[-4000:]
    assert "Unrecoverable error" not in worker.text(), worker.text()[-4000:]

    mark = len(worker.text())
    own_broker.start()
    worker.wait_for_line("Connected to", timeout=60, after=mark)
    with Connection(own_broker.broker_url) as connection:
        advance_operation.apply_async((987655,), connection=connection, task_id="after-the-outage")
    # It consumes again: the task ran (a no-op, as there is no such operation).
    worker.wait_for_line("advance_operation[after-the-outage] succeeded", after=mark)
    assert worker.alive()
    assert "Unrecoverable error" not in worker.text(), worker.text()[-4000:]


def test_a_cluster_requested_during_an_outage_is_created_once_the_broker_is_back(
    client, deployer, own_broker, start_celery, web_uses_own_broker
):
    worker = start_celery("worker")
    beat = start_celery("beat")
    own_broker.stop()
    worker.wait_for_line("Connection to broker lost")

    client.force_login(deployer)
    form = client.get(reverse("cluster_new")).context["form"]
    response = client.post(
        reverse("cluster_new"),
        {"name": "outage-1", "idempotency_key": form.initial["idempotency_key"]},
    )
    operation = Operation.objects.get(resource_name="outage-1")
    assert response.status_code == 302 and response["Location"] == reverse(
        "operation_detail", args=[operation.pk]
    )
    assert operation.state == OperationState.QUEUED
    time.sleep(3)  # beat ticks into the outage too
    assert worker.alive() and beat.alive(), beat.text()[-3000:]

    own_broker.start()  # empty: whatever was queued before the outage is gone, as after a real restart
    wait_for(
        lambda: Operation.objects.get(pk=operation.pk).state == OperationState.SUCCEEDED,
        90,
        message="the reconciler dispatching the operation recorded during the outage",
    )
    assert worker.alive() and beat.alive()
    assert "Unrecoverable error" not in worker.text() + beat.text()
