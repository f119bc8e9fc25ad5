"""In compose the web container POSTs test images to a replica set that runs in the worker container: the
front proxy there binds LYNX_LOCAL_BIND_HOST (0.0.0.0) and its scoring URI names LYNX_LOCAL_PUBLIC_HOST (the
worker's service name). Only the key-checking proxy listens on TCP; the replicas stay on Unix sockets."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
import requests

from deployments.backends.base import ClusterSpec, ServiceSpec
from targets.local.backend import LocalBackend

from .conftest import PRIMARY_KEY, REPO, SECONDARY_KEY, wait_for

PUBLIC_HOST = "lynx-worker-under-test"  # a name, not an address: the test reaches the proxy over loopback


def _spec(tmp_path: Path) -> ServiceSpec:
    scripts, model = tmp_path / "scripts", tmp_path / "model"
    scripts.mkdir()
    model.mkdir()
    (scripts / "score.py").write_text(
        "def init():\n    pass\n\n\ndef run(data):\n    return {'echo': len(data)}\n"
    )
    (model / "weights.bin").write_bytes(b"\0")
    return ServiceSpec(
        name="public-host",
        cluster=ClusterSpec(name="local", vm_size="local"),
        model_name="probe",
        model_version=1,
        model_path=model,
        entry_script=scripts / "score.py",
        environment_yaml="",
        primary_key=PRIMARY_KEY,
        secondary_key=SECONDARY_KEY,
    )


def _tcp_listeners(pid: int) -> list[tuple[str, int]]:
    process = psutil.Process(pid)
    found = []
    for proc in (process, *process.children(recursive=True)):
        try:
            connections = proc.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        found += [tuple(c.laddr) for c in connections if c.status == psutil.CONN_LISTEN]
    return found


@pytest.mark.slow
def test_a_supervisor_bound_to_every_interface_reports_the_public_host_and_checks_the_key(settings, tmp_path):
    settings.LYNX_LOCAL_BIND_HOST = "0.0.0.0"
    settings.LYNX_LOCAL_PUBLIC_HOST = PUBLIC_HOST
    backend = LocalBackend(tmp_path / "local", require_sandbox=False)
    spec = _spec(tmp_path)
    backend.deploy_service(spec)
    try:

        def healthy():
            observed = backend.observe_service(spec)
            assert observed.state in ("Transitioning", "Healthy"), observed.error
            return observed if observed.state == "Healthy" else None

        observed = wait_for(healthy, timeout=90, what="the service to be Healthy")
        port = int((backend.state_dir(spec) / "port").read_text())
        assert observed.scoring_uri == f"http://{PUBLIC_HOST}:{port}/score"
        assert observed.swagger_uri == f"http://{PUBLIC_HOST}:{port}/swagger.json"

        # One TCP listener in the whole process tree, the proxy's, on every interface; replicas use sockets.
        supervisor = int((backend.state_dir(spec) / "supervisor.pid").read_text())
        assert _tcp_listeners(supervisor) == [("0.0.0.0", port)]

        # The public name resolves only inside compose's network: ask over loopback, which 0.0.0.0 includes.
        url = f"http://127.0.0.1:{port}/score"
        answer = requests.post(
            url, data=b"abc", headers={"Authorization": f"Bearer {PRIMARY_KEY}"}, timeout=30
        )
        assert answer.status_code == 200 and answer.json() == {"echo": 3}
        assert requests.post(url, data=b"abc", timeout=30).status_code == 401
        wrong = requests.post(url, data=b"abc", headers={"Authorization": "Bearer not-the-key"}, timeout=30)
        assert wrong.status_code == 401
    finally:
        backend.delete_service(spec)


def _local_hosts(**env: str) -> tuple[str, str]:
    """settings.LYNX_LOCAL_BIND_HOST and LYNX_LOCAL_PUBLIC_HOST as a fresh process reads them from `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LYNX_LOCAL_")}
    out = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings as s; "
         "print(s.LYNX_LOCAL_BIND_HOST, s.LYNX_LOCAL_PUBLIC_HOST)"],
        cwd=REPO, env={**base, "DJANGO_SETTINGS_MODULE": "lynx.settings", **env},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    bind, public = out.stdout.split()
    return bind, public


def test_the_scoring_uri_names_a_reachable_host_by_default():
    assert _local_hosts() == ("127.0.0.1", "127.0.0.1")
    # A wildcard bind address is nobody's destination: the URI falls back to loopback unless told a name.
    assert _local_hosts(LYNX_LOCAL_BIND_HOST="0.0.0.0") == ("0.0.0.0", "127.0.0.1")
    assert _local_hosts(LYNX_LOCAL_BIND_HOST="0.0.0.0", LYNX_LOCAL_PUBLIC_HOST="worker") == (
        "0.0.0.0",
        "worker",
    )
    assert _local_hosts(LYNX_LOCAL_BIND_HOST="10.1.2.3") == ("10.1.2.3", "10.1.2.3")


# --- The compose worker runs as root; the web process, which stores uploaded models, as uid 10001 ---------

WEB_UID = 10001


def _owned_by_web(path: Path, mode: int) -> Path:
    os.chown(path, WEB_UID, WEB_UID)
    path.chmod(mode)
    return path


@pytest.mark.skipif(os.geteuid() != 0, reason="the worker container runs as root; only root can chown here")
def test_a_root_worker_opens_a_model_the_web_user_stored_to_the_sandbox_user_only_inside_var():
    from scoring import sandbox

    # Under /tmp, not pytest's tmp_path: that sits in a 0700 directory which would shield any file below it.
    top = Path(tempfile.mkdtemp(prefix="lynx-root-worker-"))
    try:
        top.chmod(0o755)
        (top / "var").mkdir()
        var = _owned_by_web(top / "var", 0o700)
        model = var / "models" / "digits-1"
        model.mkdir(parents=True)
        for directory in (var / "models", model):
            _owned_by_web(directory, 0o700)
        weights = model / "weights.bin"
        weights.write_bytes(b"\0")
        _owned_by_web(weights, 0o600)

        sandbox.grant_read([model], sandbox.SANDBOX_UID, sandbox.SANDBOX_GID)
        assert weights.stat().st_mode & 0o777 == 0o604 and model.stat().st_mode & 0o777 == 0o705
        assert var.stat().st_mode & 0o777 == 0o700  # var/ still keeps every other host user out

        # Outside a directory that keeps others out, another user's file is not root's to open up.
        for path, mode in ((var, 0o755), (var / "models", 0o755), (model, 0o755), (weights, 0o600)):
            path.chmod(mode)
        with pytest.raises(sandbox.SandboxError, match="not readable by the sandbox's user"):
            sandbox.grant_read([model], sandbox.SANDBOX_UID, sandbox.SANDBOX_GID)
        assert weights.stat().st_mode & 0o777 == 0o600
    finally:
        shutil.rmtree(top)
