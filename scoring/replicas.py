"""Replica processes: each is Microsoft's inference server (gunicorn + azureml_inference_server_http) on a
Unix socket the supervisor binds in the deployment's state directory, running the deployment's entry script
against the model laid out as AKS does it, inside the sandbox (scoring.sandbox) unless the supervisor was told
--no-sandbox.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from . import sandbox
from .supervisor_log import RotatingWriter

GUNICORN_CONF = Path(__file__).with_name("gunicorn_conf.py")
SERVER_APP = "azureml_inference_server_http.server.entry:app"
GRACEFUL_TIMEOUT_S = 10
PROBE_THREADS = 2
MAX_BATCH_THREADS = 256
# The Lynx source root, on the replicas' import path: entry scripts `from scoring.batching import Batcher`.
LYNX_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MAX_BATCH_SIZE = 32  # as a Lynx deployment's (deployments.models.Deployment)
DEFAULT_MAX_BATCH_WAIT_MS = 50
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
# Environment variables a replica must not inherit from whoever started the supervisor (a Celery worker has
# the database URL and Django's secrets): user code runs in the replica.
_SECRET_MARKERS = ("SECRET", "PASSWORD", "TOKEN", "CREDENTIAL", "_KEY", "DATABASE_URL", "REDIS_URL", "BROKER")
_DROPPED_PREFIXES = ("LYNX_", "DJANGO_", "CELERY_", "AZUREML_", "AML_")
# glibc's malloc gives threads arenas of their own, up to 8 per core, and a replica has max_batch_size + 4
# server threads besides TensorFlow's: with two arenas a replica stays a few MB smaller after load and stops
# creeping up under repeated load, at no cost in throughput measured (bench.replica_memory). A value set in
# the supervisor's environment (MALLOC_ARENA_MAX, or glibc.malloc.arena_max in GLIBC_TUNABLES) is kept.
MALLOC_ARENA_MAX = "2"
# run/<replica index>/sock: a replica's socket, in a directory of the supervisor's (0700) that no sandbox
# sees. Inside its sandbox, a replica's working directory is a tmpfs of its own at that same path.
RUN_DIR = "run"
SOCKET_NAME = "sock"  # short names: a socket's whole path must fit in 107 bytes
_MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes, the last a NUL


class SpecError(ValueError):
    pass


@dataclass(frozen=True)
class ReplicaSpec:
    """What one generation of replicas runs: the CLI flags, or the fields of desired.json."""

    entry_script: str
    model_path: str
    model_name: str
    model_version: str
    replicas: int = 1
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_batch_wait_ms: int = DEFAULT_MAX_BATCH_WAIT_MS
    ready_timeout_s: float = 120.0
    memory_limit_mb: int = 0  # resident memory a replica may hold, its processes together; 0: no limit
    # The deployment asked for a GPU: the entry script is told (LYNX_REQUIRE_GPU=1), and Lynx's default script
    # then fails its init() when its framework sees none instead of running on the CPU.
    require_gpu: bool = False

    @classmethod
    def build(
        cls,
        *,
        entry_script: str | os.PathLike,
        model_path: str | os.PathLike,
        model_name: str | None = None,
        model_version: str | int | None = None,
        replicas: int = 1,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_batch_wait_ms: int = DEFAULT_MAX_BATCH_WAIT_MS,
        ready_timeout_s: float = 120.0,
        memory_limit_mb: int = 0,
        require_gpu: bool = False,
    ) -> ReplicaSpec:
        """Validate and normalise (absolute paths, default name = basename of the model, version 1)."""
        script = Path(entry_script).expanduser().resolve()
        model = Path(model_path).expanduser().resolve()
        if not script.is_file():
            raise SpecError(f"entry script not found: {script}")
        if not model.exists():
            raise SpecError(f"model not found: {model}")
        name = str(model_name) if model_name else model.name
        version = str(model_version) if model_version not in (None, "") else "1"
        for label, value in (("model name", name), ("model version", version)):
            if not _SAFE_NAME.match(value):
                raise SpecError(f"{label} {value!r} must be letters, digits, '.', '_' or '-'")
        for label, number, low in (
            ("replicas", replicas, 1),
            ("max_batch_size", max_batch_size, 1),
            ("max_batch_wait_ms", max_batch_wait_ms, 0),
            ("memory_limit_mb", memory_limit_mb, 0),
        ):
            if not isinstance(number, int) or isinstance(number, bool) or number < low:
                raise SpecError(f"{label} must be an integer >= {low}, not {number!r}")
        if replicas > 32:
            raise SpecError("replicas must be at most 32")
        if not float(ready_timeout_s) > 0:
            raise SpecError("ready_timeout_s must be positive")
        return cls(
            str(script),
            str(model),
            name,
            version,
            replicas,
            max_batch_size,
            max_batch_wait_ms,
            float(ready_timeout_s),
            memory_limit_mb,
            bool(require_gpu),
        )

    @classmethod
    def from_mapping(cls, data: Any) -> ReplicaSpec:
        if not isinstance(data, dict):
            raise SpecError("desired state must be a JSON object")
        known = {"entry_script", "model_path", "model_name", "model_version", "replicas", "max_batch_size"}
        known |= {"max_batch_wait_ms", "ready_timeout_s", "memory_limit_mb", "require_gpu"}
        missing = {"entry_script", "model_path"} - data.keys()
        if missing:
            raise SpecError(f"desired state lacks {', '.join(sorted(missing))}")
        return cls.build(**{key: value for key, value in data.items() if key in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def threads(self) -> int:
        """Server threads per replica: enough for a full batch to gather in the batcher, and a few more."""
        return min(self.max_batch_size, MAX_BATCH_THREADS) + PROBE_THREADS + 2

    @property
    def max_in_flight(self) -> int:
        """Requests the front proxy forwards to one replica at once; the rest wait in the proxy. The threads
        left over answer health probes at once, however busy the model is: a probe that queued behind a
        long batch would time out and take a healthy replica out of rotation."""
        return self.threads - PROBE_THREADS


def lay_out_model(state_dir: Path, spec: ReplicaSpec) -> Path:
    """Link the model where AKS mounts it: <app root>/azureml-models/<name>/<version>/<basename>. Returns the
    AZUREML_MODEL_DIR (the version folder); its app root is `app_root(model_dir)`.

    Each model version gets an app root of its own, holding that version only, as a replica on AKS sees it:
    `Model.get_model_path(name)` picks the highest version under the app root, so after a rollback from v2 to
    v1 a shared root would still hand the script v2.
    """
    root = state_dir / "apps" / f"{spec.model_name}-{spec.model_version}"
    version_dir = root / "azureml-models" / spec.model_name / spec.model_version
    version_dir.mkdir(parents=True, exist_ok=True)
    link = version_dir / Path(spec.model_path).name
    if link.is_symlink() and os.readlink(link) == spec.model_path:
        return version_dir
    if link.exists() and not link.is_symlink():
        raise SpecError(f"{link} exists and is not a link this runtime made")
    # Replace atomically: replicas of the serving generation may still be reading through the old link.
    temp = version_dir / f".{link.name}.{os.getpid()}.tmp"
    if temp.is_symlink():
        temp.unlink()
    os.symlink(spec.model_path, temp)
    os.replace(temp, link)
    return version_dir


def sandbox_inputs(spec: ReplicaSpec, model_dir: Path) -> list[Path]:
    """What a sandboxed replica of `spec` reads besides Python and Lynx: bound read-only, nothing else is."""
    return [Path(spec.model_path), Path(spec.entry_script).parent, app_root(model_dir)]


def app_root(model_dir: Path) -> Path:
    """The AML_APP_ROOT of a model laid out by `lay_out_model`."""
    return Path(model_dir).parents[2]


def replica_environment(base: dict[str, str], *, state_dir: Path, model_dir: Path, spec: ReplicaSpec) -> dict:
    env = {
        name: value
        for name, value in base.items()
        if not name.startswith(_DROPPED_PREFIXES)
        and not any(marker in name.upper() for marker in _SECRET_MARKERS)
    }
    env.update(
        {
            # The inference server reads these when it is imported: they must be in the environment at exec.
            "AZUREML_MODEL_DIR": str(model_dir),
            "AML_APP_ROOT": str(app_root(model_dir)),
            "AZUREML_ENTRY_SCRIPT": spec.entry_script,
            # As on Azure, modules next to the entry script are importable.
            "AZUREML_SOURCE_DIRECTORY": str(Path(spec.entry_script).parent),
            "PYTHONPATH": os.pathsep.join(p for p in (base.get("PYTHONPATH", ""), str(LYNX_ROOT)) if p),
            "LYNX_MAX_BATCH_SIZE": str(spec.max_batch_size),
            "LYNX_MAX_BATCH_WAIT_MS": str(spec.max_batch_wait_ms),
            "SERVICE_NAME": spec.model_name,
            "TF_CPP_MIN_LOG_LEVEL": base.get("TF_CPP_MIN_LOG_LEVEL", "2"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if spec.require_gpu:
        env["LYNX_REQUIRE_GPU"] = "1"
    if "MALLOC_ARENA_MAX" not in env and "glibc.malloc.arena_max" not in env.get("GLIBC_TUNABLES", ""):
        env["MALLOC_ARENA_MAX"] = MALLOC_ARENA_MAX
    return env


_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent(parent_pid: int):
    def preexec() -> None:
        # Runs in the child between fork and exec. SIGTERM lets gunicorn stop its worker cleanly.
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:  # the supervisor died before prctl took effect
            os._exit(1)

    return preexec


@dataclass(frozen=True)
class Confinement:
    """How the supervisor's replicas are sandboxed: the bwrap binary, and what every sandbox hides."""

    binary: str
    hidden: tuple[Path, ...]  # Lynx's var/, the state directory, the key file
    uid: int | None  # the uid replicas drop to (Lynx runs as root), or None


class Replica:
    """One replica process and what the supervisor knows about it."""

    def __init__(
        self,
        *,
        index: int,
        generation: int,
        spec: ReplicaSpec,
        env: dict,
        state_dir: Path,
        model_dir: Path | None = None,
        confinement: Confinement | None = None,
    ) -> None:
        self.index = index
        self.name = f"replica-{index}"
        self.generation = generation
        self.spec = spec
        self.env = env
        self.state_dir = state_dir
        self.model_dir = model_dir
        self.confinement = confinement
        self.log_path = state_dir / "logs" / f"{self.name}.log"
        # Its stdout and stderr go to a pipe the supervisor reads (follow_log), written to log_path rotated:
        # appended straight to the file, a script printing without end filled the host's disk.
        self.log = RotatingWriter(self.log_path)
        self.log_pipe: int | None = None  # the pipe's read end, until the supervisor takes it
        self.private_dir = state_dir / RUN_DIR / str(index)
        self.socket_path = self.private_dir / SOCKET_NAME
        self.process: subprocess.Popen | None = None
        self.state = "starting"
        self.restarts = 0
        self.exit_code: int | None = None
        self.started_at = 0.0
        self.ready_at: float | None = None
        self.probe_failures = 0
        self.in_flight = 0
        self.requests = 0
        # From the X-Lynx-Batch-Size of its answers: how many answers said, and the sum of 1/size, which
        # counts each model call once however many answers it produced.
        self.batched_requests = 0
        self.model_calls = 0.0
        self.stopping = False
        # Why the supervisor is killing it ("OOMKilled", "InitExited"), until its process has exited.
        self.kill_reason: str | None = None
        self.last_termination: dict[str, Any] | None = None  # as Kubernetes' lastState.terminated
        self.failed_starts = 0  # starts in a row that exited before the replica was ready
        self.gave_up = False  # failed to start too often: not restarted again
        self.oom_kills = 0  # OOMKilled in a row (sets the back-off before the next restart)
        self.oom_rss_bytes = 0
        self._seen_workers: set[int] = set()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def sandboxed(self) -> bool:
        return self.confinement is not None

    def start(self) -> None:
        """Start (or restart) the process, listening on its Unix socket."""
        self.state, self.exit_code, self.ready_at, self.probe_failures = "starting", None, None, 0
        self.stopping, self.kill_reason, self.gave_up = False, None, False
        self._seen_workers = set()
        if len(str(self.socket_path)) > _MAX_SOCKET_PATH:
            raise OSError(
                f"the socket path {self.socket_path} is too long for a Unix socket: "
                "use a shorter state directory"
            )
        # The supervisor binds and listens itself, and hands the server the listening socket: the path the
        # proxy and the health probe open is then the supervisor's, in a directory the replica cannot reach.
        # (Bound by the server in a directory it could write, it was replaced by a symlink to another socket
        # on the host, which the root proxy followed. Opening the path with O_PATH|O_NOFOLLOW would close that
        # too, but leave the replica owning what the proxy trusts.) A Unix socket, not a port: nothing but the
        # front proxy (root, or Lynx's user) can reach it, so nothing answers /score without a key; and inside
        # the sandbox there is no network to listen on.
        sandbox.prepare_socket_dir(self.private_dir)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.socket_path))
            listener.listen(2048)  # gunicorn's default backlog
            self._spawn(listener.fileno())
        finally:
            listener.close()  # the server holds it now: once it exits, connections are refused at once
        self.started_at = time.time()

    def _spawn(self, listen_fd: int) -> None:
        command = [
            sys.executable, "-m", "gunicorn",
            # No --bind: the in-sandbox step puts the listening socket at fd 3 and sets LISTEN_FDS/LISTEN_PID,
            # which gunicorn takes (as from systemd) instead of binding anything.
            "--workers", "1",
            "--threads", str(self.spec.threads),
            "--timeout", "300",
            "--graceful-timeout", str(GRACEFUL_TIMEOUT_S),
            # Longer than the proxy's pool keep-alive, so the proxy always closes an idle connection first
            # and never sends a request on a socket the replica is closing.
            "--keep-alive", "75",
            "--no-control-socket",
            "--config", str(GUNICORN_CONF),
            SERVER_APP,
        ]  # fmt: skip
        env = self.env
        if self.confinement is not None:
            command = sandbox.command(self.confinement.binary, self._plan(listen_fd), command)
            env = sandbox.environment(self.env)  # bwrap's own, too: it stays pid 1 in the sandbox
        else:
            command = sandbox.enter_command(command, listen_fd=listen_fd)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.log.write(f"--- {stamp} lynx: starting {self.name} (restart {self.restarts}) ---\n".encode())
        read_end, write_end = os.pipe()
        try:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=write_end,
                stderr=subprocess.STDOUT,
                cwd=self.private_dir,
                env=env,
                pass_fds=(listen_fd,),
                preexec_fn=_die_with_parent(os.getpid()),
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        self.log_pipe = read_end

    def _plan(self, listen_fd: int | None = None) -> sandbox.Plan:
        assert self.confinement is not None
        read_only = [Path(self.spec.model_path), Path(self.spec.entry_script).parent]
        if self.model_dir is not None:
            read_only = sandbox_inputs(self.spec, self.model_dir)
        return sandbox.Plan(
            lynx_root=LYNX_ROOT,
            hidden=self.confinement.hidden,
            read_only=read_only,
            private_dir=self.private_dir,
            uid=self.confinement.uid,
            listen_fd=listen_fd,
            seccomp=sandbox.seccomp_available(),
        )

    def poll(self) -> int | None:
        return self.process.poll() if self.process else 0

    def terminate(self) -> None:
        self.stopping = True
        if self.process and self.process.poll() is None:
            # Sandboxed, the process is bwrap, which would die at once and take gunicorn down with SIGKILL:
            # the server itself gets the SIGTERM, finishes its requests, and bwrap exits after it.
            server = self._server(self.processes()) if self.sandboxed else None
            try:
                (server or self.process).send_signal(signal.SIGTERM)
            except (psutil.Error, ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()

    def processes(self) -> list[psutil.Process]:
        """Its processes while they run: bwrap's two when sandboxed, then gunicorn's arbiter and workers."""
        if not self.process or self.process.poll() is not None:
            return []
        try:
            arbiter = psutil.Process(self.process.pid)
            return [arbiter, *arbiter.children(recursive=True)]
        except psutil.Error:
            return []

    def lost_workers(self) -> set[int]:
        """Server workers seen earlier that have exited since (gunicorn's arbiter boots another)."""
        server = self._server(self.processes())
        try:
            workers = {p.pid for p in server.children()} if server is not None else set()
        except psutil.Error:
            return set()
        lost = self._seen_workers - workers
        self._seen_workers |= workers
        return lost

    def memory_bytes(self) -> int:
        """Resident memory of all its processes together (bwrap's, the arbiter's and the workers')."""
        total = 0
        for process in self.processes():
            try:
                total += process.memory_info().rss
            except psutil.Error:
                pass
        return total

    @staticmethod
    def _server(processes: list[psutil.Process]) -> psutil.Process | None:
        """gunicorn's arbiter: the first process of the tree that is not bwrap."""
        for process in processes:
            try:
                if process.name() != "bwrap":
                    return process
            except psutil.Error:
                continue
        return None

    def describe(self, processes: list[psutil.Process] | None = None) -> dict[str, Any]:
        processes = self.processes() if processes is None else processes
        server = self._server(processes)
        workers: list[int] = []
        uid = None
        if server is not None:
            try:
                workers = [p.pid for p in server.children()]
                uid = server.uids().real
            except psutil.Error:
                pass
        rss = 0
        for process in processes:
            try:
                rss += process.memory_info().rss
            except psutil.Error:
                pass
        return {
            "name": self.name,
            "pid": self.pid,  # kill it and the replica is gone (bwrap takes its sandbox down with it)
            "server_pid": server.pid if server else None,
            "worker_pids": workers,
            "socket": str(self.socket_path),
            "sandboxed": self.sandboxed,
            "uid": uid,
            "state": self.state,
            "restarts": self.restarts,
            "failed_starts": self.failed_starts,
            "gave_up": self.gave_up,
            "last_termination": self.last_termination,
            "generation": self.generation,
            "exit_code": self.exit_code,
            "started_at": _iso(self.started_at),
            "ready_at": _iso(self.ready_at),
            "rss_bytes": rss,
            "requests": self.requests,
            "in_flight": self.in_flight,
            "avg_batch_size": average_batch_size(self.batched_requests, self.model_calls),
            "log": str(self.log_path),
        }


def average_batch_size(batched_requests: int, model_calls: float) -> float | None:
    return round(batched_requests / model_calls, 2) if model_calls > 0 else None


def _iso(timestamp: float | None) -> str | None:
    if not timestamp:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp)) + f".{int(timestamp % 1 * 1000):03d}Z"
