"""`lynx` against the real Lynx: the live server, a real Celery worker and beat, real local replicas.

The command runs as its own process (`python -m cli`), as a person's shell or a CI job runs it, with nothing
but LYNX_URL and a token made by the token service.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from api.tokens import token_create
from deployments.models import AuditEvent, Cluster, Deployment, Operation, OperationKind
from deployments.states import ProvisioningState, ServiceState
from tests.cli.conftest import BASE_DIR
from tests.conftest import digit_images

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _lynx_runner(url: str, token: str, home: Path):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "LYNX_URL": url,
        "LYNX_TOKEN": token,
        "PYTHONUNBUFFERED": "1",
    }

    def lynx(*argv: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli", *argv],
            cwd=BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return lynx


def test_the_command_line_runs_the_local_lifecycle_and_the_audit_log_names_its_token(
    live_server, deployer, demo_model, celery_processes, stop_local_replicas, tmp_path: Path
):
    celery_processes("worker")
    celery_processes("beat")
    token = token_create(actor=deployer, owner=deployer, name="ci").secret
    lynx = _lynx_runner(live_server.url, token, tmp_path)

    me = lynx("whoami", "--json")
    assert me.returncode == 0, me.stderr
    assert json.loads(me.stdout)["token"]["name"] == "ci"

    cluster = lynx("clusters", "create", "local-gpu", "--target", "local", "--wait")
    assert cluster.returncode == 0, cluster.stdout + cluster.stderr
    assert Cluster.objects.get(name="local-gpu").provisioning_state == ProvisioningState.SUCCEEDED

    deploy = lynx(
        "deploy", "digits-ci", "--model", "digits", "--cluster", "local-gpu", "--replicas", "2", "--wait"
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    # Every progress line came out once, in order, ending with the operation's own last word.
    operation = Operation.objects.get(kind=OperationKind.SERVICE_DEPLOY, resource_name="digits-ci")
    assert deploy.stdout.splitlines() == [line.text for line in operation.lines.order_by("id")]
    assert deploy.stdout.splitlines()[-1].startswith("Succeeded: digits-ci is Healthy"), deploy.stdout
    assert Deployment.objects.get(name="digits-ci").state == ServiceState.HEALTHY

    listed = lynx("deployments", "list", "--json")
    (item,) = json.loads(listed.stdout)["items"]
    assert (item["name"], item["replicas"], item["state"]) == ("digits-ci", 2, "Healthy")

    image = tmp_path / "three.png"
    image.write_bytes(digit_images(3, count=1)[0])
    scored = lynx("score", "digits-ci", str(image), timeout=60)
    assert scored.returncode == 0, scored.stderr
    table = scored.stdout.splitlines()
    assert table[0].split() == ["LABEL", "SCORE"]
    assert table[1].split()[0] == "three", scored.stdout

    delete = lynx("deployments", "delete", "digits-ci", "--wait")
    assert delete.returncode == 0, delete.stdout + delete.stderr
    assert Deployment.objects.get(name="digits-ci").state == ServiceState.DELETED

    drop = lynx("clusters", "delete", "local-gpu", "--wait")
    assert drop.returncode == 0, drop.stdout + drop.stderr
    assert Cluster.objects.get(name="local-gpu").provisioning_state == ProvisioningState.DELETED

    # Each thing asked for through the command line is recorded as dana's, made through the token "ci".
    asked = [
        "cluster.create",
        "deployment.create",
        "deployment.test_score",
        "deployment.delete",
        "cluster.delete",
    ]
    events = {e.action: e for e in AuditEvent.objects.filter(action__in=asked)}
    assert sorted(events) == sorted(asked)
    for action in asked:
        assert (events[action].actor_name, events[action].via) == ("dana", "token ci"), action

    # And the API's audit log says so to the command line too.
    audit = lynx("audit", "--actor", "dana", "--action", "deployment", "--json")
    assert audit.returncode == 0, audit.stderr
    rows = json.loads(audit.stdout)["items"]
    created = [row for row in rows if row["action"] == "deployment.create"]
    assert [(row["actor"], row["via"]) for row in created] == [("dana", "token ci")]
