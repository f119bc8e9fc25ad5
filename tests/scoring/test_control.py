"""The control client, the key store and the replica environment, without starting replicas."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from scoring import control
from scoring.keys import Keys, KeyStore
from scoring.replicas import ReplicaSpec, SpecError, lay_out_model, replica_environment
from scoring.state_dir import acquire_lock

from .conftest import DEFAULT_ENTRY_SCRIPT, REPO, wait_for


def test_write_key_file_is_private_json_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "keys.json"
    control.write_key_file(path, "p1", "s1")
    control.write_key_file(path, "p2", "s2")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"primary": "p2", "secondary": "s2"}
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]


def test_key_store_follows_the_key_file_and_fails_closed(tmp_path):
    path = tmp_path / "keys.json"
    control.write_key_file(path, "old-primary", "old-secondary")
    store = KeyStore(key_file=path)
    assert store.accepts_authorization("Bearer old-primary")
    assert store.accepts_authorization("bearer old-secondary")
    assert not store.accepts_authorization("Bearer nope")
    assert not store.accepts_authorization("old-primary")
    assert not store.accepts_authorization(None)

    control.write_key_file(path, "new-primary", "old-secondary")
    assert not store.accepts_authorization("Bearer old-primary")
    assert store.accepts_authorization("Bearer new-primary")

    path.write_text("{not json")
    assert not store.accepts_authorization("Bearer new-primary")
    path.unlink()
    assert not store.accepts_authorization("Bearer new-primary")


def test_fixed_keys_without_a_secondary_accept_only_the_primary():
    store = KeyStore(keys=Keys("only"))
    assert store.accepts_authorization("Bearer only")
    assert not store.accepts_authorization("Bearer ")


def test_nothing_runs_in_an_empty_state_dir(tmp_path):
    assert control.is_running(tmp_path) is False
    assert control.read_status(tmp_path) is None
    assert control.stop(tmp_path) is True
    assert control.stop_all(tmp_path) == 0
    with pytest.raises(control.NotRunning):
        control.restart_dead(tmp_path)


def test_is_running_follows_the_lock(tmp_path):
    fd = acquire_lock(tmp_path)
    try:
        assert control.is_running(tmp_path)
        assert acquire_lock(tmp_path, wait_s=0.1) is None
    finally:
        os.close(fd)
    assert not control.is_running(tmp_path)


@pytest.mark.slow
def test_spawn_on_a_state_dir_already_served_exits_3_and_says_why(tmp_path, demo_model_dir):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    fd = acquire_lock(state_dir)  # stands in for a running supervisor
    try:
        control.write_key_file(tmp_path / "keys.json", "k1", "k2")
        pid = control.spawn(
            state_dir=state_dir, entry_script=DEFAULT_ENTRY_SCRIPT, model_path=demo_model_dir,
            model_name="digits", model_version=1, port=control.free_port(), replicas=1,
            key_file=tmp_path / "keys.json",
        )  # fmt: skip
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=30, what="the second supervisor to exit")
    finally:
        os.close(fd)
    assert "already served by another supervisor" in (state_dir / "supervisor.log").read_text()
    assert not (state_dir / "logs").exists()


def test_free_port_can_be_bound():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", control.free_port()))


def test_tail_logs_gives_the_last_lines_of_each_replica_and_of_the_supervisor(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "replica-10.log").write_text("".join(f"line {i}\n" for i in range(5000)))
    (tmp_path / "logs" / "replica-2.log").write_text("booting\ninit() failed\n")
    (tmp_path / "supervisor.log").write_text("http://127.0.0.1:1/score\n")
    logs = control.tail_logs(tmp_path, lines=3)
    assert list(logs) == ["replica-2", "replica-10", "supervisor"]
    assert logs["replica-10"] == "line 4997\nline 4998\nline 4999"
    assert logs["replica-2"] == "booting\ninit() failed"
    assert logs["supervisor"] == "http://127.0.0.1:1/score"


def test_control_imports_neither_tensorflow_nor_django_nor_aiohttp():
    code = "import sys, scoring.control; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    top_level = {name.split(".")[0] for name in out.stdout.split()}
    assert "scoring" in top_level
    assert not {"tensorflow", "django", "aiohttp", "numpy", "psutil"} & top_level


def test_replica_environment_points_at_the_model_and_drops_secrets(tmp_path, demo_model_dir):
    spec = ReplicaSpec.build(
        entry_script=DEFAULT_ENTRY_SCRIPT, model_path=demo_model_dir, model_name="digits", model_version=7,
        max_batch_size=8, max_batch_wait_ms=3,
    )  # fmt: skip
    model_dir = lay_out_model(tmp_path, spec)
    base = {"PATH": "/usr/bin", "SECRET_KEY": "s", "DATABASE_URL": "postgres://", "LYNX_ENCRYPTION_KEY": "k",
            "AWS_SECRET_ACCESS_KEY": "a", "AZUREML_MODEL_DIR": "/elsewhere", "HOME": "/root"}  # fmt: skip
    env = replica_environment(base, state_dir=tmp_path, model_dir=model_dir, spec=spec)
    assert model_dir == tmp_path / "apps" / "digits-7" / "azureml-models" / "digits" / "7"
    assert (model_dir / demo_model_dir.name).resolve() == demo_model_dir.resolve()
    assert env["AZUREML_MODEL_DIR"] == str(model_dir)
    assert env["AML_APP_ROOT"] == str(tmp_path / "apps" / "digits-7")
    assert env["AZUREML_ENTRY_SCRIPT"] == str(DEFAULT_ENTRY_SCRIPT)
    assert (env["LYNX_MAX_BATCH_SIZE"], env["LYNX_MAX_BATCH_WAIT_MS"]) == ("8", "3")
    assert env["PATH"] == "/usr/bin" and env["HOME"] == "/root"
    assert not {"SECRET_KEY", "DATABASE_URL", "LYNX_ENCRYPTION_KEY", "AWS_SECRET_ACCESS_KEY"} & env.keys()


@pytest.mark.parametrize(
    "change",
    [
        {"model_name": "../escape"},
        {"model_version": "1/2"},
        {"replicas": 0},
        {"entry_script": "/nonexistent.py"},
    ],
)
def test_replica_spec_rejects_unsafe_or_impossible_values(demo_model_dir, change):
    with pytest.raises(SpecError):
        ReplicaSpec.build(**{"entry_script": DEFAULT_ENTRY_SCRIPT, "model_path": demo_model_dir, **change})


def _processes_of(state_dir: Path) -> list[int]:
    """Processes naming the state directory on their command line (supervisor) or working in it (replicas)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (
                str(state_dir) in (entry / "cmdline").read_bytes().decode(errors="replace")
                or os.readlink(entry / "cwd") == str(state_dir)
            ):
                found.append(int(entry.name))
        except OSError:
            pass
    return found


@pytest.mark.slow
def test_stop_right_after_spawn_leaves_nothing_running(tmp_path, demo_model_dir):
    control.write_key_file(tmp_path / "keys.json", "k1", "k2")
    state_dir = tmp_path / "state"
    control.spawn(
        state_dir=state_dir, entry_script=DEFAULT_ENTRY_SCRIPT, model_path=demo_model_dir,
        model_name="digits", model_version=1, port=control.free_port(), replicas=1,
        key_file=tmp_path / "keys.json",
    )  # fmt: skip
    assert control.is_running(state_dir)
    control.stop(state_dir)
    assert not control.is_running(state_dir)
    wait_for(lambda: not _processes_of(state_dir), timeout=15, what="every process to be gone")


def test_replicas_can_import_the_batching_helper_and_keep_threads_for_probes(tmp_path, demo_model_dir):
    for size in (1, 4, 32):
        spec = ReplicaSpec.build(
            entry_script=DEFAULT_ENTRY_SCRIPT, model_path=demo_model_dir, max_batch_size=size
        )
        assert spec.max_in_flight >= size  # a full batch can gather ...
        assert spec.threads - spec.max_in_flight >= 2  # ... and threads stay free to answer health probes
    env = replica_environment({"PYTHONPATH": "/site/x"}, state_dir=tmp_path, model_dir=tmp_path, spec=spec)
    assert env["PYTHONPATH"].split(os.pathsep) == ["/site/x", str(REPO)]
    probe = "import scoring.batching, sys; print(sorted({'tensorflow', 'django'} & set(sys.modules)))"
    env["PATH"] = os.environ["PATH"]
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"  # importable from anywhere, and light


def test_batching_is_on_by_default_with_the_deployment_defaults(demo_model_dir):
    spec = ReplicaSpec.build(entry_script=DEFAULT_ENTRY_SCRIPT, model_path=demo_model_dir)
    assert (spec.max_batch_size, spec.max_batch_wait_ms) == (32, 50)
    assert (
        ReplicaSpec.from_mapping(
            {"entry_script": str(DEFAULT_ENTRY_SCRIPT), "model_path": str(demo_model_dir)}
        ).max_batch_size
        == 32
    )


def test_each_model_version_gets_an_app_root_holding_only_that_version(tmp_path, demo_model_dir):
    """After a rollback from v2 to v1, Model.get_model_path(name) (highest version under the app root)
    must find v1, as on AKS, where a replica only ever sees the version it serves."""
    roots = {}
    for version in (2, 1):
        spec = ReplicaSpec.build(
            entry_script=DEFAULT_ENTRY_SCRIPT,
            model_path=demo_model_dir,
            model_name="digits",
            model_version=version,
        )
        model_dir = lay_out_model(tmp_path, spec)
        env = replica_environment({}, state_dir=tmp_path, model_dir=model_dir, spec=spec)
        roots[version] = Path(env["AML_APP_ROOT"])
    assert roots[1] != roots[2]
    assert [p.name for p in (roots[1] / "azureml-models" / "digits").iterdir()] == ["1"]
