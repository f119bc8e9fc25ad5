"""A deployer's score.py is code its deployer runs: on the local target it runs in a sandbox (bubblewrap) that
keeps Lynx's secrets, database, broker and other deployments out of its reach, and where the sandbox cannot
start, development says so and production refuses to deploy."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
from django.conf import settings

from scoring import control, sandbox
from scoring.state_dir import EXIT_NO_SANDBOX

from .conftest import PRIMARY_KEY, REPO, SECONDARY_KEY, wait_for

CANARY = f"canary-{uuid.uuid4().hex}"

# Reads one target each, records what it got (None: nothing), and hands the record back from run().
_MALICIOUS_SCRIPT = """
import glob, json, os, socket

TARGETS = json.loads({targets!r})
CANARY = {canary!r}
found = {{}}


def _read(path):
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        return f"read {{len(data)}} bytes"
    except OSError:
        return None


def _list(path):
    try:
        return sorted(os.listdir(path))
    except OSError:
        return None


def _write(path):
    try:
        with open(path, "ab") as handle:
            handle.write(b"")
        return "opened for writing"
    except OSError:
        return None


def _tcp(host, port):
    try:
        with socket.create_connection((host, port), timeout=2) as conn:
            return f"connected to {{host}}:{{port}}"
    except OSError:
        return None


def _unix(path):
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(2)
            conn.connect(path)
            return "connected"
    except OSError:
        return None


def _environ(path):
    text = _read_text(path)
    return f"{{path}} holds the canary" if text and CANARY in text else None


def _read_text(path):
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return None


def init():
    for name, path in TARGETS["read"].items():
        found[f"read {{name}}"] = _read(path)
    for name, path in TARGETS["list"].items():
        found[f"list {{name}}"] = _list(path)
    found["peek"] = {{name: _list(path) for name, path in TARGETS["peek"].items()}}
    for name, path in TARGETS["write"].items():
        found[f"write {{name}}"] = _write(path)
    for name, (host, port) in TARGETS["tcp"].items():
        found[f"tcp {{name}}"] = _tcp(host, port)
    for name, path in TARGETS["unix"].items():
        found[f"unix {{name}}"] = _unix(path)
    found["environ of pid 1"] = _environ("/proc/1/environ")
    found["environ of the parent"] = _environ(f"/proc/{{os.getppid()}}/environ")
    found["environ of any process"] = next(
        (hit for hit in map(_environ, glob.glob("/proc/[0-9]*/environ")) if hit), None
    )
    found["own environment"] = "the canary" if CANARY in json.dumps(dict(os.environ)) else None
    leaked = sorted(n for n in os.environ if any(m in n for m in ("SECRET", "PASSWORD", "DATABASE", "REDIS")))
    found["secret-looking variables"] = leaked or None
    from scoring.batching import Batcher  # the Lynx source root stays importable, read-only

    found["batching"] = Batcher.__name__


def run(raw_data):
    return found
"""


def _require_sandbox() -> None:
    available = sandbox.availability()
    if not available.available:
        if os.environ.get("CI") == "true":
            pytest.fail(available.message)
        pytest.skip(available.message)


@contextlib.contextmanager
def _listening_tcp() -> Iterator[int]:
    """A host service on 127.0.0.1 that certainly answers: the stand-in for anything Lynx runs there."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = server.accept()
                conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        server.close()


@contextlib.contextmanager
def _listening_unix(path: Path) -> Iterator[None]:
    """The embedded Redis socket: the real one when it runs, else a listener at its path."""
    if path.exists():
        yield
        return
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    try:
        yield
    finally:
        server.close()
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _existing(paths: list[Path]) -> Iterator[None]:
    """Each secret the script goes for exists on the host, so that 'got nothing' means the sandbox held."""
    made = []
    for path in paths:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(CANARY)
            path.chmod(0o600)
            made.append(path)
    try:
        yield
    finally:
        for path in made:
            path.unlink(missing_ok=True)


def _host_can_connect(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


@pytest.fixture
def malicious_deployment(monkeypatch, tmp_path) -> Iterator[dict]:
    """A deployment laid out as the local backend lays one out, whose score.py goes for everything Lynx has,
    next to another deployment's state directory."""
    _require_sandbox()
    # What make run's environment carries: the supervisor inherits it, the replica must not see it.
    monkeypatch.setenv("LYNX_ADMIN_PASSWORD", CANARY)
    monkeypatch.setenv("SECRET_KEY_FOR_THE_TEST", CANARY)
    var = settings.VAR_DIR
    tag = uuid.uuid4().hex[:8]
    services = settings.LYNX_LOCAL_DIR / "services"
    state_dir, other = services / f"sbx-{tag}", services / f"sbx-other-{tag}"
    other.mkdir(parents=True)
    control.write_key_file(other / "keys.json", "the-other-deployments-key", "")
    state_dir.mkdir(parents=True)
    key_file = state_dir / "keys.json"
    control.write_key_file(key_file, PRIMARY_KEY, SECONDARY_KEY)
    model = var / "models" / f"sbx-{tag}"
    model.mkdir(parents=True)
    (model / "weights.bin").write_bytes(b"\0" * 64)

    secrets = {
        "secret key": var / "secret_key",
        "encryption key": var / "encryption_key",
        "SQLite database": var / "lynx.sqlite3",
        "own key file": key_file,
        "other deployment's key file": other / "keys.json",
    }
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        secrets["test database"] = Path(settings.DATABASES["default"]["TEST"]["NAME"])
    with (
        _listening_tcp() as canary_port,
        _listening_unix(settings.EMBEDDED_REDIS_SOCKET),
        _existing(list(secrets.values())),
    ):
        targets = {
            "read": {name: str(path) for name, path in secrets.items()},
            "list": {"other deployment's state directory": str(other)},
            # What these list must not show: where they lead to the replica's own files, they are there.
            "peek": {"Lynx var/": str(var), "own state directory": str(state_dir)},
            "write": {
                "SQLite database": str(var / "lynx.sqlite3"),
                "Lynx source": str(REPO / "scoring" / f".sandbox-probe-{tag}"),
            },
            "tcp": {
                "Redis": ["127.0.0.1", 6379],
                "PostgreSQL": ["127.0.0.1", 5432],
                "a host service": ["127.0.0.1", canary_port],
            },
            "unix": {"embedded Redis": str(settings.EMBEDDED_REDIS_SOCKET)},
        }
        # Lynx writes entry scripts where service_files_write() does: var/scripts/<id>-<digest>/score.py.
        script = var / "scripts" / f"sbx-{tag}" / "score.py"
        script.parent.mkdir(parents=True)
        script.write_text(_MALICIOUS_SCRIPT.format(targets=json.dumps(targets), canary=CANARY))
        port = control.free_port()
        pid = control.spawn(
            state_dir=state_dir,
            entry_script=script,
            model_path=model,
            model_name="probe",
            model_version=1,
            port=port,
            replicas=1,
            key_file=key_file,
            ready_timeout_s=60,
        )
        try:
            yield {
                "state_dir": state_dir,
                "port": port,
                "pid": pid,
                "targets": targets,
                "canary_port": canary_port,
            }
        finally:
            control.stop(state_dir)
            (REPO / "scoring" / f".sandbox-probe-{tag}").unlink(missing_ok=True)
            for path in (state_dir, other, model, script.parent):
                subprocess.run(["rm", "-rf", str(path)], check=False)


def _ready_status(state_dir: Path) -> dict:
    def ready():
        status = control.read_status(state_dir)
        if status and [r["state"] for r in status["replicas"]] == ["ready"]:
            return status
        if status and status["replicas"] and status["replicas"][0]["state"] == "dead":
            pytest.fail("the replica died:\n" + control.tail_logs(state_dir)["replica-0"])
        return None

    return wait_for(ready, timeout=90, what="the replica to be ready")


@pytest.mark.slow
def test_a_malicious_score_py_gets_nothing_of_lynx_and_serves_only_through_the_front_port(
    malicious_deployment,
):
    served = malicious_deployment
    status = _ready_status(served["state_dir"])
    # The host can reach what the script goes for: "got nothing" below is the sandbox's doing.
    assert _host_can_connect("127.0.0.1", served["canary_port"])

    url = f"http://127.0.0.1:{served['port']}/score"
    assert requests.post(url, data=b"{}", timeout=10).status_code == 401
    response = requests.post(url, data=b"{}", headers={"Authorization": f"Bearer {PRIMARY_KEY}"}, timeout=30)
    assert response.status_code == 200, response.text
    found = response.json()
    assert found.pop("batching") == "Batcher"
    peek = found.pop("peek")
    got = {target: value for target, value in found.items() if value is not None}
    assert got == {}, f"the entry script got: {json.dumps(got, indent=2)}"
    # var/ shows only the directories that lead to this replica's model, script and state; its state
    # directory only its app root and its private directory: no secrets, database, keys or logs.
    assert set(peek["Lynx var/"] or []) <= {"local", "models", "scripts"}, peek
    assert set(peek["own state directory"] or []) <= {"apps", "run"}, peek
    expected = {
        f"{kind} {name}"
        for kind in ("read", "list", "write", "tcp", "unix")
        for name in served["targets"][kind]
    }
    assert expected <= found.keys()

    assert status["sandbox"]["enabled"] is True and status["sandbox"]["engine"] == "bubblewrap"
    (replica,) = status["replicas"]
    server = [replica["server_pid"], *replica["worker_pids"]]
    assert replica["worker_pids"], replica
    own_net = os.readlink("/proc/self/ns/net")
    for pid in server:
        process = psutil.Process(pid)
        if os.geteuid() == 0:  # dropped from root to an unprivileged uid, as the host sees it
            assert process.uids().real != 0 and process.uids().effective != 0, process.uids()
        assert os.readlink(f"/proc/{pid}/ns/net") != own_net  # no network of the host's
        assert process.net_connections(kind="inet") == []  # no TCP listener: nothing answers but the front
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert CANARY.encode() not in environ and b"DATABASE_URL" not in environ
    # The replica listens on a Unix socket inside the deployment's state directory, and only there.
    socket_path = Path(replica["socket"])
    assert socket_path.is_socket() and served["state_dir"] in socket_path.parents
    assert "port" not in replica or not replica["port"]


@pytest.fixture
def no_bwrap(monkeypatch, tmp_path):
    """Point the sandbox probe at a bubblewrap that is not installed."""
    monkeypatch.setenv(sandbox.BWRAP_ENV, str(tmp_path / "no-such-bwrap"))
    available = sandbox.availability()
    assert not available.available
    return available


def test_without_bubblewrap_the_probe_says_how_to_install_it(no_bwrap):
    assert "apt-get install bubblewrap" in no_bwrap.message
    assert sandbox.availability() is no_bwrap  # probed once, then cached


def test_the_runtime_refuses_to_serve_unsandboxed_unless_told_no_sandbox(no_bwrap, tmp_path):
    script, model = tmp_path / "score.py", tmp_path / "model"
    script.write_text("def init():\n    pass\n\ndef run(data):\n    return data\n")
    model.mkdir()
    key_file = tmp_path / "keys.json"
    control.write_key_file(key_file, PRIMARY_KEY, "")
    out = subprocess.run(
        [sys.executable, "-m", "scoring.runtime", "serve", "--entry-script", str(script),
         "--model", str(model), "--port", str(control.free_port()), "--key-file", str(key_file),
         "--state-dir", str(tmp_path / "state")],
        cwd=REPO, capture_output=True, text=True, timeout=60, env=dict(os.environ),
    )  # fmt: skip
    assert out.returncode == EXIT_NO_SANDBOX, out.stderr
    assert "apt-get install bubblewrap" in out.stderr and "--no-sandbox" in out.stderr


def _spec(tmp_path: Path, name: str):
    from deployments.backends.base import ClusterSpec, ServiceSpec

    script_dir = tmp_path / "scripts"
    script_dir.mkdir(exist_ok=True)
    script = script_dir / "score.py"
    script.write_text("def init():\n    pass\n\n\ndef run(data):\n    return {'echo': len(data)}\n")
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "weights.bin").write_bytes(b"\0")
    return ServiceSpec(
        name=name,
        cluster=ClusterSpec(name="local", vm_size="local", node_count=1, cluster_purpose="DevTest"),
        model_name="probe",
        model_version=1,
        model_path=model,
        entry_script=script,
        environment_yaml="",
        primary_key=PRIMARY_KEY,
        secondary_key=SECONDARY_KEY,
    )


def test_production_refuses_to_deploy_locally_without_the_sandbox(no_bwrap, tmp_path):
    from deployments.backends.base import BackendError
    from targets.local.backend import LocalBackend

    backend = LocalBackend(tmp_path / "local", require_sandbox=True)
    spec = _spec(tmp_path, "refused")
    with pytest.raises(BackendError) as refusal:
        backend.deploy_service(spec)
    assert "sandbox" in str(refusal.value) and "apt-get install bubblewrap" in str(refusal.value)
    assert not control.is_running(backend.state_dir(spec))
    assert not (backend.state_dir(spec) / "supervisor.pid").exists()


@pytest.mark.slow
def test_development_runs_replicas_unsandboxed_without_bubblewrap_and_says_so(no_bwrap, tmp_path):
    from targets.local.backend import LocalBackend

    backend = LocalBackend(tmp_path / "local", require_sandbox=False)
    spec = _spec(tmp_path, "unsandboxed")
    backend.deploy_service(spec)
    try:

        def healthy():
            observed = backend.observe_service(spec)
            assert observed.state in ("Transitioning", "Healthy"), observed.error
            return observed if observed.state == "Healthy" else None

        observed = wait_for(healthy, timeout=90, what="the unsandboxed service to be Healthy")
        note = observed.stats["sandbox"]
        assert note["enabled"] is False
        assert "without a sandbox" in note["note"] and "apt-get install bubblewrap" in note["note"]
        response = requests.post(
            observed.scoring_uri, data=b"abc", headers={"Authorization": f"Bearer {PRIMARY_KEY}"}, timeout=30
        )
        assert response.status_code == 200 and response.json() == {"echo": 3}
    finally:
        backend.delete_service(spec)


def test_the_make_run_banner_says_replicas_run_unsandboxed_and_how_to_fix_it(no_bwrap):
    from lynx.launcher import sandbox_banner

    banner = sandbox_banner()
    assert "without a sandbox" in banner and "apt-get install bubblewrap" in banner
    refusal = sandbox_banner(production=True)
    assert "local deployments are refused" in refusal and "apt-get install bubblewrap" in refusal


def test_the_deployment_page_says_replicas_run_unsandboxed(no_bwrap):
    from types import SimpleNamespace

    from django.template.loader import render_to_string

    note = sandbox.unsandboxed_note(no_bwrap)
    deployment = SimpleNamespace(state="Healthy", scoring_uri="", swagger_uri="", error="", stats={
        "sandbox": {"enabled": False, "engine": "bubblewrap", "note": note}
    })  # fmt: skip
    html = render_to_string("deployments/_deployment_status.html", {"deployment": deployment})
    assert "without a sandbox" in html and "apt-get install bubblewrap" in html


def test_files_a_replica_reads_are_opened_to_the_sandbox_user_only_behind_a_private_directory(tmp_path):
    var = tmp_path / "var"
    model = var / "models" / "digits"
    model.mkdir(parents=True)
    (model / "weights.bin").write_bytes(b"\0")
    (model / "weights.bin").chmod(0o600)
    for directory in (model, model.parent, var):
        directory.chmod(0o700)  # as Lynx writes them, with umask 077

    sandbox.grant_read([model])
    assert (model / "weights.bin").stat().st_mode & 0o777 == 0o604
    assert model.stat().st_mode & 0o777 == 0o705
    assert var.stat().st_mode & 0o777 == 0o700  # what keeps the host's other users out stays shut


def test_a_file_the_sandbox_user_cannot_read_outside_a_private_directory_is_refused():
    import tempfile

    open_dir = Path(tempfile.mkdtemp(prefix="lynx-sandbox-test-"))
    try:
        open_dir.chmod(0o755)  # reachable by every user on the host: opening a file here would publish it
        model = open_dir / "model.bin"
        model.write_bytes(b"\0")
        model.chmod(0o600)
        with pytest.raises(sandbox.SandboxError, match="chmod -R o\\+rX"):
            sandbox.grant_read([model])
        assert model.stat().st_mode & 0o777 == 0o600
    finally:
        subprocess.run(["rm", "-rf", str(open_dir)], check=False)


def test_a_sandboxed_replica_keeps_only_the_environment_the_inference_server_needs():
    env = sandbox.environment(
        {
            "AZUREML_MODEL_DIR": "/m",
            "LYNX_MAX_BATCH_SIZE": "8",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "MALLOC_ARENA_MAX": "2",
            "LANG": "C.UTF-8",
            "TF_CLI_CONFIG_FILE": "/root/.terraformrc",  # Terraform's, not TensorFlow's
            "HOME": "/root",
            "SSH_AUTH_SOCK": "/run/ssh.sock",
            "DJANGO_SETTINGS_MODULE": "lynx.settings",
        }
    )
    assert env.keys() == {
        "AZUREML_MODEL_DIR", "LYNX_MAX_BATCH_SIZE", "TF_CPP_MIN_LOG_LEVEL", "MALLOC_ARENA_MAX", "LANG",
        "PATH", "HOME", "TMPDIR", "PYTHONNOUSERSITE", "PYTHONDONTWRITEBYTECODE",
    }  # fmt: skip
    assert (
        env["HOME"] == env["TMPDIR"] == "/tmp"
    )  # the private /tmp: its only writable place but its own directory


def test_an_entry_script_kept_beside_lynx_secrets_is_refused(tmp_path):
    var = tmp_path / "var"
    state_dir = var / "local" / "services" / "digits"
    state_dir.mkdir(parents=True)
    # Its folder would be bound in whole, and var/ with it.
    with pytest.raises(sandbox.SandboxError, match="folders of their own"):
        sandbox.prepare_inputs([var], hidden=[var, state_dir], uid=None)
    sandbox.prepare_inputs([var / "scripts"], hidden=[var, state_dir], uid=None)


def test_a_key_file_beside_the_entry_script_stays_hidden(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    key_file = source / "keys.json"
    key_file.write_text("{}")
    sandbox.prepare_inputs([source], hidden=[key_file], uid=None)  # allowed: masked after the bind
    plan = sandbox.Plan(
        lynx_root=REPO, hidden=[key_file], read_only=[source], private_dir=tmp_path / "run", uid=None
    )
    args = sandbox.command("/usr/bin/bwrap", plan, ["true"])
    binds = [i for i, arg in enumerate(args) if arg == str(key_file)]
    assert args[binds[-1] - 2 : binds[-1]] == ["--ro-bind", "/dev/null"]
    assert args.index(str(source)) < binds[-1]


_FILTERED = """
import ctypes, json, os, subprocess, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
found = {}
found["unshare user"] = libc.unshare(0x10000000) == 0 or ctypes.get_errno()
found["unshare mount"] = libc.unshare(0x00020000) == 0 or ctypes.get_errno()
box = []
thread = threading.Thread(target=box.append, args=(1,))
thread.start()
thread.join()
found["thread"] = box == [1]
pid = os.fork()
if pid == 0:
    os._exit(7)
found["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7
found["subprocess"] = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True).stdout
found["subprocess"] = found["subprocess"].decode().strip()
found["seccomp"] = [line.split()[1] for line in open("/proc/self/status") if line.startswith("Seccomp:")]
print(json.dumps(found))
"""


@pytest.mark.skipif(not sandbox.seccomp_available(), reason=f"{sandbox.LIBSECCOMP} is not installed")
def test_the_seccomp_filter_refuses_new_namespaces_while_threads_fork_and_subprocesses_work():
    import errno

    argv = sandbox.enter_command([sys.executable, "-c", _FILTERED], listen_fd=None)
    argv.insert(argv.index("--"), "--seccomp")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    found = json.loads(done.stdout)
    assert found["unshare user"] == errno.EPERM and found["unshare mount"] == errno.EPERM, found
    assert found["thread"] and found["fork"] and found["subprocess"] == "42", found
    assert found["seccomp"] == ["2"], found


def test_the_in_sandbox_step_hands_the_server_its_listening_socket_at_fd_3(tmp_path):
    """gunicorn takes fd 3 as its listener when LISTEN_PID is its own pid: the supervisor's socket, never a
    path the server binds (or unlinks) itself."""
    path = tmp_path / "sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    with listener:
        shown = (
            "import os, socket; s = socket.socket(fileno=3); "
            "print(os.environ['LISTEN_PID'] == str(os.getpid()), os.environ['LISTEN_FDS'], s.getsockname())"
        )
        argv = sandbox.enter_command([sys.executable, "-c", shown], listen_fd=listener.fileno())
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, check=True, pass_fds=(listener.fileno(),)
        )
    assert done.stdout.split() == ["True", "1", str(path)]


def test_a_sandboxed_replica_gets_sized_tmpfs_only_scoring_of_lynx_and_no_capability(tmp_path):
    plan = sandbox.Plan(
        lynx_root=REPO, hidden=[REPO / "var"], read_only=[], private_dir=tmp_path / "run" / "0", uid=65534,
        listen_fd=5,
    )  # fmt: skip
    argv = sandbox.command("bwrap", plan, ["server"])
    pairs = list(zip(argv, argv[1:], strict=False))
    sized = {argv[i + 3]: int(argv[i + 1]) for i, arg in enumerate(argv) if arg == "--size"}
    assert sized[str(tmp_path / "run" / "0")] == sandbox.PRIVATE_DIR_BYTES
    assert sized["/tmp"] == sandbox.TMP_BYTES and sized["/dev/shm"] == sandbox.SHM_BYTES
    assert ("--ro-bind", str(REPO)) not in pairs and ("--ro-bind", str(REPO / "scoring")) in pairs
    assert ("--cap-drop", "ALL") in pairs and ("--remount-ro", "/") in pairs
    inner = argv[argv.index("--") + 1 :]
    assert inner[:4] == [sys.executable, "-I", "-S", str(sandbox.ENTER_SCRIPT)]
    assert {"--listen-fd", "--nproc", "--uid"} <= set(inner[: inner.index("--")])
    assert inner[-1] == "server"
