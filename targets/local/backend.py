"""The local target: this machine, running entry scripts under Microsoft's inference server.

Each deployment gets a state directory holding its replicas' supervisor (`python -m
scoring.runtime serve`, started detached so it outlives the worker that started it), its key
file, status and logs. The supervisor holds a lock on its state directory for its whole life:
that lock is what makes deploy idempotent and replicas impossible to duplicate.

Replicas run in a bubblewrap sandbox (scoring.sandbox). Where it cannot start, development runs them
without it and says so; production refuses to deploy.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings

from deployments.backends.base import (
    Backend,
    BackendError,
    ClusterObservation,
    ClusterSpec,
    KeyName,
    ReplicaObservation,
    ServiceObservation,
    ServiceSpec,
    TargetTraits,
)
from deployments.crypto import new_key
from scoring import control, sandbox
from scoring.state_dir import (
    KEY_FILE,
    PORT_FILE,
    SPAWNED_AT_FILE,
    SUPERVISOR_LOG,
    SUPERVISOR_PID_FILE,
    process_alive,
)

# How long a freshly spawned supervisor may take to take its lock and write its first status.
SPAWN_GRACE_SECONDS = 30


def host_gpus() -> tuple[int, str]:
    """The NVIDIA GPUs this host has, as nvidia-smi lists them (none when there is no driver)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0, ""
    names = [line.strip() for line in out.splitlines() if line.strip()]
    return len(names), (names[0] if names else "")


class LocalBackend:
    name = "local"

    def __init__(self, root: Path, *, require_sandbox: bool | None = None) -> None:
        self.root = Path(root)
        self._require_sandbox = require_sandbox  # None: as settings.PRODUCTION says

    @staticmethod
    def hosts() -> tuple[str, str]:
        """Where the front proxy listens and the host its scoring URI names: the web process POSTs test
        images there, from another container in compose (settings.LYNX_LOCAL_BIND_HOST, _PUBLIC_HOST)."""
        # Must be imported here: the backend itself needs no Django, only this default does.
        return settings.LYNX_LOCAL_BIND_HOST, settings.LYNX_LOCAL_PUBLIC_HOST

    @property
    def require_sandbox(self) -> bool:
        if self._require_sandbox is None:
            # Must be imported here: the backend itself needs no Django, only this default does.
            return bool(getattr(settings, "PRODUCTION", False))
        return self._require_sandbox

    def sandboxed(self) -> bool:
        """Whether replicas will run in the sandbox: False where it cannot start, in development; in
        production that is a refusal (BackendError): an entry script is code its deployer runs as Lynx."""
        available = sandbox.availability()
        if available.available:
            return True
        if self.require_sandbox:
            raise BackendError(
                "Lynx runs in production mode and does not run entry scripts outside the replica sandbox, "
                f"which cannot start on this host: {available.message}"
            )
        return False

    # --- clusters: the local machine always exists; a cluster is a directory that says it is in use
    def _cluster_dir(self, cluster: ClusterSpec) -> Path:
        return self.root / "clusters" / cluster.name

    def provision_cluster(self, cluster: ClusterSpec) -> None:
        self._cluster_dir(cluster).mkdir(parents=True, exist_ok=True)

    def cluster_facts(self, cluster: ClusterSpec, observed: ClusterObservation) -> dict[str, Any]:
        return {"gpu_count": observed.gpu_count, "gpu_kind": observed.gpu_kind}

    def observe_cluster(self, cluster: ClusterSpec) -> ClusterObservation:
        if not self._cluster_dir(cluster).exists():
            return ClusterObservation(provisioning_state="Deleted")
        count, kind = host_gpus()
        return ClusterObservation(provisioning_state="Succeeded", gpu_count=count, gpu_kind=kind)

    def delete_cluster(self, cluster: ClusterSpec) -> None:
        shutil.rmtree(self._cluster_dir(cluster), ignore_errors=True)

    # --- services --------------------------------------------------------------------------------
    def state_dir(self, spec: ServiceSpec) -> Path:
        return self.root / "services" / spec.name

    def _write_keys(self, state_dir: Path, primary: str, secondary: str) -> None:
        control.write_key_file(state_dir / KEY_FILE, primary, secondary)

    def deploy_service(self, spec: ServiceSpec) -> str | None:
        if spec.gpu_enabled and host_gpus()[0] == 0:
            raise BackendError("This host has no GPU: deploy with the GPU switched off, or to a GPU cluster.")
        sandboxed = self.sandboxed()
        state_dir = self.state_dir(spec)
        state_dir.mkdir(parents=True, exist_ok=True)
        self._write_keys(state_dir, spec.primary_key, spec.secondary_key)
        if control.is_running(state_dir):
            return None  # a re-delivered step: the replicas are already there, adopt them
        self._spawn(spec, state_dir, sandboxed=sandboxed)
        return None  # the supervisor is the operation: observe_service follows it

    def _spawn(self, spec: ServiceSpec, state_dir: Path, *, sandboxed: bool) -> None:
        # The port never moves while the deployment exists: clients hold its scoring URI. Lynx reserves it in
        # the database at creation (spec.port); a deployment from before that keeps the first port it got.
        port_file = state_dir / PORT_FILE
        port = spec.port or (int(port_file.read_text()) if port_file.exists() else control.free_port())
        bind_host, public_host = self.hosts()
        if not _port_bindable(bind_host, port):
            raise BackendError(
                f"Port {port}, where {spec.name}'s scoring URI points, is in use by another process. "
                "Lynx does not move a deployment to another port (its clients would lose it): stop that "
                "process, then deploy again."
            )
        port_file.write_text(str(port))
        (state_dir / SPAWNED_AT_FILE).write_text(str(time.time()))
        pid = control.spawn(
            state_dir=state_dir,
            entry_script=spec.entry_script,
            model_path=spec.model_path,
            model_name=spec.model_name,
            model_version=spec.model_version,
            port=port,
            replicas=spec.replicas,
            key_file=state_dir / KEY_FILE,
            max_batch_size=spec.max_batch_size,
            max_batch_wait_ms=spec.max_batch_wait_ms,
            memory_limit_mb=memory_limit_mb(spec),
            sandbox=sandboxed,
            host=bind_host,
            public_host=public_host,
            require_gpu=spec.gpu_enabled,
        )
        (state_dir / SUPERVISOR_PID_FILE).write_text(str(pid))

    def update_service(self, spec: ServiceSpec) -> str | None:
        state_dir = self.state_dir(spec)
        if not control.is_running(state_dir):
            return self.deploy_service(spec)
        control.roll(
            state_dir,
            {
                "entry_script": str(spec.entry_script),
                "model_path": str(spec.model_path),
                "model_name": spec.model_name,
                "model_version": spec.model_version,
                "replicas": spec.replicas,
                "max_batch_size": spec.max_batch_size,
                "max_batch_wait_ms": spec.max_batch_wait_ms,
                "memory_limit_mb": memory_limit_mb(spec),
                "require_gpu": spec.gpu_enabled,
            },
        )
        return None

    def observe_service(self, spec: ServiceSpec, operation_ref: str | None = None) -> ServiceObservation:
        state_dir = self.state_dir(spec)
        status = control.read_status(state_dir)
        if status is None:
            if self._recently_spawned(state_dir) and not self._supervisor_exited(state_dir):
                return ServiceObservation(
                    state="Transitioning", progress=("waiting for the replica supervisor",)
                )
            return ServiceObservation(
                state="Missing",
                error="No replica supervisor is running for this service. Its last log lines:\n"
                + self._supervisor_log_tail(state_dir, lines=8),
            )
        listed = status.get("replicas", [])
        replicas = tuple(
            ReplicaObservation(
                name=r["name"],
                state=r["state"],
                pid=r.get("pid"),
                restarts=int(r.get("restarts", 0)),
                last_termination=(r.get("last_termination") or {}).get("reason", ""),
                gave_up=bool(r.get("gave_up")),
            )
            for r in listed
        )
        ready = sum(r.state == "ready" for r in replicas)
        dead = [r for r in listed if r["state"] == "dead"]
        rollout = status.get("rollout") or {}
        serving_script = (status.get("spec") or {}).get("entry_script") or str(spec.entry_script)
        if dead:
            state, error = "Unhealthy", self._replica_errors(state_dir, dead, serving_script)
        elif ready == len(replicas) and ready >= 1 and rollout.get("state") != "in_progress":
            state, error = "Healthy", ""
        else:
            state, error = "Transitioning", ""
            # Being restarted by the supervisor itself (OOMKilled, a failed start tried again): say why.
            if rollout.get("state") != "in_progress":
                ended = [r.get("last_termination") or {} for r in listed if r["state"] != "ready"]
                error = "\n".join(e["message"] for e in ended if e.get("message"))
        if rollout.get("state") == "failed":
            failed = [r for r in rollout.get("replicas", []) if r.get("state") == "dead"]
            if failed:  # a rolling update whose new replicas never got ready: their script's own words
                error = self._replica_errors(state_dir, failed[:1], str(spec.entry_script))
            elif not dead:
                error = rollout.get("error", "the rolling update failed")
        instance = status.get("instance", "")
        # Numbers, and also the sandbox's state and the replica table: not only floats.
        stats: dict[str, Any] = dict(
            status.get("stats") or {},
            rollout_generation=rollout.get("generation", 0),
            sandbox=status.get("sandbox") or {},  # the deployment page says when it is off, and why
            # The page's replica table: state, restarts, and how each last ended (as kubectl shows).
            replicas=[
                {
                    "name": r["name"],
                    "state": r["state"],
                    "restarts": r.get("restarts", 0),
                    "last_termination": r.get("last_termination"),
                    "rss_mb": round((r.get("rss_bytes") or 0) / 2**20),
                }
                for r in listed
            ],
            memory_limit_mb=(status.get("spec") or {}).get("memory_limit_mb", 0),
        )
        return ServiceObservation(
            state=state,
            scoring_uri=status.get("scoring_uri", ""),
            swagger_uri=status.get("swagger_uri", ""),
            replicas=replicas,
            error=error,
            stats=stats,
            events=tuple(
                {**event, "id": f"{instance}#{event['seq']}"} for event in status.get("events") or []
            ),
        )

    def _recently_spawned(self, state_dir: Path) -> bool:
        stamp = state_dir / SPAWNED_AT_FILE
        return stamp.exists() and time.time() - float(stamp.read_text() or 0) < SPAWN_GRACE_SECONDS

    def _supervisor_exited(self, state_dir: Path) -> bool:
        pid_file = state_dir / SUPERVISOR_PID_FILE
        if not pid_file.exists():
            return False
        return not process_alive(int(pid_file.read_text()))

    def _supervisor_log_tail(self, state_dir: Path, lines: int = 20) -> str:
        log = state_dir / SUPERVISOR_LOG
        if not log.exists():
            return "the replica supervisor is not running"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def _replica_errors(self, state_dir: Path, dead: list[dict], entry_script: str) -> str:
        """Why each replica ended, and what its entry script last said (no server paths: users read it)."""
        parts = []
        for replica in dead:
            ended = (replica.get("last_termination") or {}).get("message") or (
                f"{replica['name']} exited with code {replica.get('exit_code')}"
            )
            said = control.script_error(state_dir, replica["name"], Path(entry_script).parent)
            parts.append(f"{ended}.\nThe entry script's last lines:\n{said}" if said else f"{ended}.")
        return "\n\n".join(parts)

    def delete_service(self, spec: ServiceSpec) -> None:
        state_dir = self.state_dir(spec)
        control.stop(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)

    def restart_service(self, spec: ServiceSpec) -> str | None:
        state_dir = self.state_dir(spec)
        if control.is_running(state_dir):
            control.restart_dead(state_dir)
            return None
        return self.deploy_service(spec)

    def service_logs(self, spec: ServiceSpec, lines: int = 200) -> dict[str, str]:
        return control.tail_logs(self.state_dir(spec), lines=lines)

    def service_keys(self, spec: ServiceSpec) -> tuple[str, str]:
        return spec.primary_key, spec.secondary_key

    def service_access_token(self, spec: ServiceSpec) -> tuple[str, datetime | None]:
        raise BackendError("The local target scores with keys; it has no token auth.")

    def regenerate_key(self, spec: ServiceSpec, key: KeyName) -> tuple[str, str]:
        primary, secondary = spec.primary_key, spec.secondary_key
        if key == "Primary":
            primary = new_key()
        else:
            secondary = new_key()
        state_dir = self.state_dir(spec)
        if state_dir.exists():
            # The front re-reads the key file when it changes: the old key stops working at once.
            self._write_keys(state_dir, primary, secondary)
        return primary, secondary


def memory_limit_mb(spec: ServiceSpec) -> int:
    """The deployment's memory setting as the supervisor's per-replica limit (GB as Azure counts: 1024 MB)."""
    return max(0, round(spec.memory_gb * 1024))


def _port_bindable(host: str, port: int) -> bool:
    """The supervisor could listen there: nobody else listens. SO_REUSEADDR, as the supervisor binds, so a
    connection of an earlier run lingering in TIME_WAIT (a client's kept-alive one) is no obstacle."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def make_backend(cluster: ClusterSpec) -> Backend:
    """Every local cluster is this machine: one state directory for all its deployments."""
    return LocalBackend(settings.LYNX_LOCAL_DIR)


TRAITS = TargetTraits(
    label="Local (this machine)",
    poll_factor=1,
    makes_keys=False,
    reserves_port=True,
    on_this_host=True,
    priced_by_size=False,
    logs_on_page=True,
    autoscale=False,
    gpus_per_node=False,
    removes_failed_clusters=False,
    missing_is_final=False,
    removes_abandoned_services=False,
)
