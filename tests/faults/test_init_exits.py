"""An entry script whose init() exits the process: gunicorn's arbiter would boot a new worker for ever (86
restarts in 95 s, a generic timeout after 15 minutes, still running once Failed). It is a failed start: tried
three times, then the deployment is Failed with the script's own last lines, and nothing restarts it again,
neither the supervisor nor the reconciler."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
import requests
from django.conf import settings

from deployments.models import AuditEvent, Deployment
from deployments.services import services_reconcile
from deployments.services.specs import service_spec
from deployments.states import ServiceState
from scoring import control
from tests.conftest import wait_for

from .conftest import run_operation, state_dir

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

INIT_EXITS = """
import os, sys

def init():
    print("loading the weights from the cache", flush=True)
    print("FATAL: the weights cache is corrupt", file=sys.stderr, flush=True)
    os._exit(7)

def run(data):
    return data
"""

# Serves until a file named "broken" appears beside it (the test says when: nothing a sandboxed replica
# writes outlives its start), then exits in every init().
BREAKS_LATER = """
import os, pathlib, sys

def init():
    if (pathlib.Path(__file__).parent / "broken").exists():
        print("FATAL: the licence server refused a second start", file=sys.stderr, flush=True)
        os._exit(9)

def run(data):
    return {"echo": data}
"""


def _alive(pid: int | None) -> bool:
    try:
        return pid is not None and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _no_server_paths(text: str) -> None:
    for path in (str(settings.BASE_DIR), str(settings.VAR_DIR), ".venv", "site-packages", "/tmp/"):
        assert path not in text, f"{path!r} shown to the user:\n{text}"


def test_an_init_that_exits_fails_the_deploy_after_three_tries_in_the_scripts_own_words(make_deployment):
    deployment = make_deployment(INIT_EXITS, name="init-exits")
    started = time.monotonic()
    operation = run_operation(deployment.deploy_op, timeout=120)
    assert operation.state == "failed"
    assert time.monotonic() - started < 60  # not LYNX_DEPLOY_TIMEOUT_SECONDS' 15 minutes
    deployment = Deployment.objects.get(pk=deployment.pk)
    assert deployment.state == ServiceState.FAILED
    for text in (deployment.error, operation.error):
        assert "FATAL: the weights cache is corrupt" in text and "loading the weights" in text, text
        assert "failed to start 3 times" in text and "init() exited" in text, text
        _no_server_paths(text)

    # Nothing keeps running, and nothing starts it again: not the supervisor, not the reconciler.
    (replica,) = control.read_status(state_dir(deployment))["replicas"]
    assert replica["state"] == "dead" and replica["gave_up"] and replica["restarts"] == 2
    assert replica["last_termination"]["reason"] == "InitExited"
    assert not _alive(replica["pid"]) and not _alive(replica["server_pid"])
    services_reconcile()
    time.sleep(3)
    (later,) = control.read_status(state_dir(deployment))["replicas"]
    assert (later["state"], later["restarts"]) == ("dead", 2)
    # Its front still answers, and says there is nothing to serve.
    port = deployment.local_port
    assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 503
    log = control.tail_logs(state_dir(deployment), lines=2000)[replica["name"]]
    assert log.count(f"lynx: starting {replica['name']}") == 3, log


def test_a_replica_that_cannot_start_again_is_not_restarted_in_a_loop_by_the_reconciler(make_deployment):
    deployment = make_deployment(BREAKS_LATER, name="breaks-later")
    # Scripts are kept by the deployment's id and content: an earlier run's may be this very folder.
    broken = service_spec(deployment).entry_script.parent / "broken"
    broken.unlink(missing_ok=True)
    operation = run_operation(deployment.deploy_op, timeout=60)
    assert operation.state == "succeeded", operation.error
    (replica,) = control.read_status(state_dir(deployment))["replicas"]
    broken.touch()
    os.kill(replica["server_pid"], signal.SIGKILL)  # it dies while serving: the reconciler restarts it

    def gave_up():
        services_reconcile()
        status = control.read_status(state_dir(deployment))
        return status["replicas"][0]["gave_up"] and status

    status = wait_for(gave_up, 60, interval=1, message="the restarted replica to fail three starts")
    restarts = status["replicas"][0]["restarts"]
    assert restarts == 3  # the reconciler's one, then the supervisor's two tries
    for _ in range(5):
        services_reconcile()
        time.sleep(1)
    assert control.read_status(state_dir(deployment))["replicas"][0]["restarts"] == restarts
    deployment = Deployment.objects.get(pk=deployment.pk)
    assert deployment.state == ServiceState.UNHEALTHY
    assert "the licence server refused a second start" in deployment.error
    _no_server_paths(deployment.error)
    by_reconciler = AuditEvent.objects.filter(
        action="deployment.restart", resource_id=deployment.pk, actor_name="system", after={}
    )
    assert by_reconciler.count() == 1
