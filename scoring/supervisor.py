"""The supervisor: one front proxy, R replica processes, status.json, and signals from Lynx.

Replica states: "starting" (alive, not answering its health probe yet, or not any more), "ready" (its
`GET /` answers 200; it gets traffic), "dead" (its process exited). Dead replicas are restarted only on
SIGUSR1: Lynx's reconciler sees "dead" first, marks the service Unhealthy, then asks. SIGUSR2 rolls to
desired.json.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import psutil

from . import sandbox
from .fsutil import atomic_write_json, read_json
from .keys import KeyStore
from .proxy import FrontProxy
from .replicas import (
    GRACEFUL_TIMEOUT_S,
    Confinement,
    Replica,
    ReplicaSpec,
    SpecError,
    lay_out_model,
    replica_environment,
    sandbox_inputs,
)
from .state_dir import DESIRED_FILE, EXIT_OK, EXIT_PORT_IN_USE, STATUS_FILE

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 1.0
READY_PROBE_INTERVAL_S = 1.0
UNREADY_AFTER_FAILURES = 3
DRAIN_TIMEOUT_S = 30.0
MAX_START_ATTEMPTS = 3  # starts in a row that exit before ready; then the replica is left dead (gave_up)
RESTART_BACKOFF_S = 1.0  # before the supervisor's own restarts (a failed start, OOMKilled): 1, 2, 4 … s
RESTART_BACKOFF_MAX_S = 30.0
MEMORY_CHECK_INTERVAL_S = 0.5
WORKER_LOST_GRACE_S = 1.0  # a starting replica's server lost its worker: time for it to exit by itself


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Supervisor:
    def __init__(
        self,
        *,
        state_dir: Path,
        port: int,
        host: str = "127.0.0.1",
        public_host: str | None = None,
        spec: ReplicaSpec,
        model_dir: Path,
        keys: KeyStore,
        confinement: Confinement | None = None,
        sandbox_status: dict[str, Any] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.confinement = confinement  # None: replicas run unsandboxed (--no-sandbox)
        self.sandbox_status = sandbox_status or {"enabled": confinement is not None, "engine": sandbox.ENGINE}
        self.port = port
        self.host = host  # the front proxy's bind address; replicas listen on Unix sockets only
        # The URIs name a host other processes can reach: a wildcard bind address is no such name.
        self.public_host = public_host or ("127.0.0.1" if host in ("0.0.0.0", "::", "") else host)
        self.spec = spec
        self.model_dir = model_dir  # AZUREML_MODEL_DIR of the serving generation, laid out by the caller
        self.state = "starting"
        self.started_at = _now_iso()
        self.generation = 0
        self.serving: list[Replica] = []  # the generation that gets traffic
        self.incoming: list[Replica] = []  # a rollout's new generation, until it is ready
        self.failed: list[Replica] = []  # the last rollout's replicas when it failed (for their logs)
        self.retiring: list[Replica] = []  # the previous generation, draining after a switch
        self.rollout: dict[str, Any] = {}
        self.proxy = FrontProxy(keys=keys, ready_replicas=lambda: self._ready)
        self._ready: tuple[Replica, ...] = ()
        self._generations = itertools.count(1)
        self._indexes = itertools.count(0)
        self._tasks: set[asyncio.Task] = set()
        self._initial: asyncio.Task | None = None
        self._roll_task: asyncio.Task | None = None
        self._roll_requested = False
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()
        self._me = psutil.Process()
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=50)
        self._event_seq = itertools.count(1)

    @property
    def base_uri(self) -> str:
        host = f"[{self.public_host}]" if ":" in self.public_host else self.public_host  # an IPv6 address
        return f"http://{host}:{self.port}"

    @property
    def scoring_uri(self) -> str:
        return f"{self.base_uri}/score"

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, self._on_stop, signum)
        loop.add_signal_handler(signal.SIGUSR1, self._on_restart_dead)
        loop.add_signal_handler(signal.SIGUSR2, self._on_roll)
        try:
            await self.proxy.start(self.host, self.port)
        except OSError as error:
            logger.error("cannot listen on %s:%s: %s", self.host, self.port, error.strerror or error)
            return EXIT_PORT_IN_USE
        print(self.scoring_uri, flush=True)
        self.state = "running"
        writer = asyncio.get_running_loop().create_task(self._write_status_loop())
        self._initial = self._spawn(self._start_initial_generation())
        await self._stop.wait()
        await self._shutdown()
        await writer  # it sees state "stopped", writes once more and returns
        logger.info("stopped")
        return EXIT_OK

    # ---- signals -------------------------------------------------------------------------------------------

    def _on_stop(self, signum: int) -> None:
        logger.info("%s: stopping", signal.Signals(signum).name)
        self._stop.set()

    def _on_restart_dead(self) -> None:
        if self._stop.is_set():
            return
        # A replica that failed to start MAX_START_ATTEMPTS times stays down until a rollout replaces it:
        # restarting it would only fail again, in a loop with whoever keeps asking.
        dead = [r for r in self.serving if r.state == "dead" and not r.gave_up]
        logger.info("SIGUSR1: restarting %s", ", ".join(r.name for r in dead) or "nothing (no dead replica)")
        for replica in dead:
            replica.restarts += 1
            self._launch(replica)

    def _on_roll(self) -> None:
        if self._stop.is_set():
            return
        logger.info("SIGUSR2: rolling to %s", DESIRED_FILE)
        self._roll_requested = True  # several signals during one rollout coalesce into one more rollout
        if self._roll_task is None:
            self._roll_task = self._spawn(self._roll_loop())

    # ---- replicas ------------------------------------------------------------------------------------------

    def prepare_sandbox_inputs(self, spec: ReplicaSpec, model_dir: Path) -> None:
        """Check and open up what a generation's replicas read (sandbox.SandboxError when they cannot)."""
        if self.confinement is not None:
            inputs = sandbox_inputs(spec, model_dir)
            sandbox.prepare_inputs(inputs, hidden=self.confinement.hidden, uid=self.confinement.uid)

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _changed_now(self) -> None:
        self._ready = tuple(r for r in self.serving if r.state == "ready")
        rollout = self.rollout
        if (
            rollout.get("state") == "failed"
            and rollout.get("generation") == self.generation
            and len(self._ready) == len(self.serving) > 0
        ):
            # The serving generation's own start failed (slow, or a replica died) and has since recovered:
            # all ready after all, or dead ones restarted by SIGUSR1.
            self._finish_rollout(rollout, None)
        self._changed.set()

    def _new_generation(self, spec: ReplicaSpec, model_dir: Path, generation: int) -> list[Replica]:
        env = replica_environment(dict(os.environ), state_dir=self.state_dir, model_dir=model_dir, spec=spec)
        return [
            Replica(
                index=next(self._indexes),
                generation=generation,
                spec=spec,
                env=env,
                state_dir=self.state_dir,
                model_dir=model_dir,
                confinement=self.confinement,
            )
            for _ in range(spec.replicas)
        ]

    def _launch(self, replica: Replica) -> None:
        try:
            replica.start()
        except OSError as error:
            logger.error("%s: cannot start: %s", replica.name, error)
            replica.state, replica.exit_code = "dead", None
            self._changed_now()
            return
        how = "sandboxed" if replica.sandboxed else "unsandboxed"
        logger.info("%s: started %s, pid %s, socket %s", replica.name, how, replica.pid, replica.socket_path)
        self._follow_log(replica)
        self._changed_now()
        self._spawn(self._watch(replica, replica.process))

    @staticmethod
    def _follow_log(replica: Replica) -> None:
        """Copy what the replica prints (its pipe) to its rotated log, as it comes, until the pipe closes (its
        processes are gone). A replica that prints faster than the disk takes blocks on its full pipe."""
        fd, replica.log_pipe = replica.log_pipe, None
        if fd is None:
            return
        os.set_blocking(fd, False)
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                data = os.read(fd, 2**16)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if data:
                try:
                    replica.log.write(data)
                except OSError as error:  # a full disk: the replica goes on, its lines are lost
                    logger.warning("%s: cannot write its log: %s", replica.name, error)
                return
            loop.remove_reader(fd)
            os.close(fd)

        loop.add_reader(fd, readable)

    async def _watch(self, replica: Replica, process) -> None:
        """Follow one process of a replica until it exits: health probes, its memory, its server's worker
        while it starts, and what happens once it is gone (see `_exited`)."""
        probe: asyncio.Task | None = None
        next_probe = 0.0
        next_memory_check = 0.0
        worker_lost_at: float | None = None
        while replica.process is process:
            code = process.poll()
            if code is not None:
                await self._exited(replica, code)
                break
            if replica.state == "starting" and replica.ready_at is None and not replica.kill_reason:
                # gunicorn's arbiter boots a new worker whenever one exits, for ever: a worker that exits in
                # init() (os._exit, a fatal signal) would leave the replica "starting" for good. It is a
                # failed start, like an arbiter that exits. The arbiter gets a moment to exit by itself
                # first: it does when init() raised (its worker's "boot error", code 3, says more).
                if worker_lost_at is None and replica.lost_workers():
                    worker_lost_at = time.monotonic()
                elif worker_lost_at is not None and time.monotonic() - worker_lost_at > WORKER_LOST_GRACE_S:
                    logger.warning("%s: its server's worker exited during init()", replica.name)
                    replica.kill_reason = "InitExited"
                    replica.kill()
            if self._memory_limit(replica) and time.monotonic() >= next_memory_check:
                next_memory_check = time.monotonic() + MEMORY_CHECK_INTERVAL_S
                self._check_memory(replica)
            if probe is None and time.monotonic() >= next_probe and not replica.stopping:
                probe = asyncio.get_running_loop().create_task(self._probe(replica.socket_path))
            if probe is not None and probe.done():
                self._record_probe(replica, probe.result())
                probe = None
                next_probe = time.monotonic() + (READY_PROBE_INTERVAL_S if replica.state == "ready" else 0.0)
            await asyncio.sleep(0.1 if replica.state == "starting" else 0.25)
        if probe is not None:
            probe.cancel()

    @staticmethod
    def _memory_limit(replica: Replica) -> int:
        """The replica's memory limit in bytes, 0 for none."""
        return replica.spec.memory_limit_mb * 2**20

    def _check_memory(self, replica: Replica) -> None:
        """Stop a replica whose processes together hold more memory than its deployment allows, as the
        kernel's OOM killer does a container over its cgroup limit. Without cgroups, polling its resident
        memory is the mechanism: RLIMIT_AS would refuse TensorFlow, which reserves large virtual ranges."""
        limit = self._memory_limit(replica)
        used = replica.memory_bytes()
        if used <= limit or replica.kill_reason or replica.stopping:
            return
        replica.kill_reason = "OOMKilled"
        replica.oom_rss_bytes = used
        mb = (used / 2**20, limit / 2**20)
        logger.warning("%s: %.0f MB resident, over its %.0f MB limit: killing it", replica.name, *mb)
        replica.kill()

    async def _exited(self, replica: Replica, code: int) -> None:
        """A replica's process is gone. Stopped on purpose: "dead" and that is all. Otherwise, as Kubernetes
        with restartPolicy Always would: killed for memory, it is restarted after a back-off; exited before it
        was ever ready (a failed start), it is tried again up to MAX_START_ATTEMPTS times, then stays "dead"
        for good (gave_up), so that neither this supervisor nor Lynx's reconciler restarts it in a loop; died
        after it was ready, it stays "dead" until Lynx's reconciler has seen it and asks (SIGUSR1)."""
        await self.proxy.forget(replica)
        if replica.state == "dead":
            return
        reason, replica.kill_reason = replica.kill_reason, None
        never_ready = replica.ready_at is None
        replica.exit_code = code
        if replica.stopping or self._stop.is_set():
            replica.state = "dead"
            logger.info("%s: exited with code %s", replica.name, code)
            self._changed_now()
            return
        if reason == "OOMKilled":
            message = (
                f"{replica.name} used {replica.oom_rss_bytes / 2**20:.0f} MB, over the deployment's "
                f"{replica.spec.memory_limit_mb} MB memory limit: killed (OOMKilled)"
            )
        elif reason == "InitExited":
            message = f"{replica.name}: the entry script's init() exited the process before it was ready"
        else:
            reason = "Error"
            when = "before it was ready" if never_ready else "while serving"
            message = f"{replica.name} exited with code {code} {when}"
        replica.last_termination = {"reason": reason, "exit_code": code, "at": _now_iso()}
        if never_ready:
            replica.failed_starts += 1
        if never_ready and replica.failed_starts >= MAX_START_ATTEMPTS:
            replica.state, replica.gave_up = "dead", True
            message += f"; it failed to start {replica.failed_starts} times in a row: not restarted again"
            self._event(replica, reason, message)
            return
        if never_ready or reason == "OOMKilled":
            if reason == "OOMKilled":
                replica.oom_kills += 1
            tries = replica.failed_starts if never_ready else replica.oom_kills
            delay = min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_S * 2 ** (tries - 1))
            message += f"; restarting it in {delay:g} s"
            replica.state = "starting"  # waiting to be started again: no traffic, and not "dead" to Lynx
            self._event(replica, reason, message)
            self._spawn(self._restart_later(replica, replica.process, delay))
            return
        # Died while serving: Lynx's reconciler sees it dead, records why and restarts it (SIGUSR1).
        replica.state, replica.last_termination["message"] = "dead", message
        logger.warning("%s", message)
        self._changed_now()

    async def _restart_later(self, replica: Replica, process, delay: float) -> None:
        await asyncio.sleep(delay)
        # Not if it was stopped meanwhile (a rollout replaced it, or the supervisor is stopping).
        if replica.process is process and not replica.stopping and not self._stop.is_set():
            replica.restarts += 1
            self._launch(replica)

    def _event(self, replica: Replica, reason: str, message: str) -> None:
        """Something Lynx shows on the deployment's page (status.json's "events", newest last)."""
        logger.warning("%s", message)
        if replica.last_termination is not None:
            replica.last_termination["message"] = message
        self.events.append(
            {"seq": next(self._event_seq), "at": _now_iso(), "replica": replica.name, "reason": reason,
             "message": message, "restarts": replica.restarts}
        )  # fmt: skip
        self._changed_now()

    async def _probe(self, socket_path: Path) -> bool:
        """`GET /` on the replica's socket answers 200: the same way in as the proxy's."""
        writer = None
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                reader, writer = await asyncio.open_unix_connection(str(socket_path))
                writer.write(b"GET / HTTP/1.1\r\nHost: replica\r\nConnection: close\r\n\r\n")
                await writer.drain()
                status_line = await reader.readline()
            return status_line.split(b" ", 2)[1:2] == [b"200"]
        except (TimeoutError, OSError, ValueError):
            return False
        finally:
            if writer is not None:
                writer.close()

    def _record_probe(self, replica: Replica, healthy: bool) -> None:
        if healthy:
            replica.probe_failures = 0
            if replica.state == "ready" and replica.oom_kills and time.time() - (replica.ready_at or 0) > 300:
                replica.oom_kills = 0  # five quiet minutes: the next OOMKilled restarts it without back-off
            if replica.state == "starting":
                replica.failed_starts = 0
                replica.state, replica.ready_at = "ready", time.time()
                logger.info("%s: ready after %.1f s", replica.name, replica.ready_at - replica.started_at)
                self._changed_now()
            return
        replica.probe_failures += 1
        if replica.state == "ready" and replica.probe_failures >= UNREADY_AFTER_FAILURES:
            logger.warning(
                "%s: %s failed health probes, out of rotation", replica.name, replica.probe_failures
            )
            replica.state = "starting"
            self._changed_now()

    async def _wait_ready(self, replicas: list[Replica], timeout_s: float) -> str | None:
        """None once every replica is ready; otherwise why not."""
        deadline = time.monotonic() + timeout_s
        while True:
            dead = [r for r in replicas if r.state == "dead"]
            if dead:
                r = dead[0]
                what = (r.last_termination or {}).get("message") or f"{r.name} exited with code {r.exit_code}"
                # No file paths here: this reaches the deployment's page; Lynx adds the script's own lines.
                return f"{what} (it exited before it was ready)" if "exited" not in what else what
            if all(r.state == "ready" for r in replicas):
                return None
            if time.monotonic() >= deadline:
                return f"replicas not ready after {timeout_s:g} s"
            await asyncio.sleep(0.1)

    async def _stop_replicas(self, replicas: list[Replica]) -> None:
        for replica in replicas:
            replica.terminate()
        deadline = time.monotonic() + GRACEFUL_TIMEOUT_S + 5
        while any(r.poll() is None for r in replicas) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for replica in replicas:
            if replica.poll() is None:
                logger.warning("%s: did not stop in time, killing it", replica.name)
                replica.kill()
        while any(r.poll() is None for r in replicas):
            await asyncio.sleep(0.05)
        for replica in replicas:
            await self.proxy.forget(replica)
            shutil.rmtree(replica.private_dir, ignore_errors=True)  # stopped for good: its socket goes too
            if replica.state != "dead":
                replica.state, replica.exit_code = "dead", replica.poll()
                logger.info("%s: stopped (exit code %s)", replica.name, replica.exit_code)
        self._changed_now()

    # ---- generations and rollouts --------------------------------------------------------------------------

    def _begin_rollout(self, generation: int, request_id: str | None) -> dict[str, Any]:
        self.failed = []
        self.rollout = {
            "generation": generation,
            "state": "in_progress",
            "error": None,
            "request_id": request_id,
            "started_at": _now_iso(),
            "finished_at": None,
        }
        self._changed.set()
        return self.rollout

    def _finish_rollout(self, rollout: dict[str, Any], error: str | None) -> None:
        rollout.update(state="failed" if error else "succeeded", error=error, finished_at=_now_iso())
        if error:
            logger.error("rollout to generation %s failed: %s", rollout["generation"], error)
        else:
            logger.info("rollout to generation %s succeeded", rollout["generation"])
        self._changed.set()

    async def _start_initial_generation(self) -> None:
        generation = next(self._generations)
        rollout = self._begin_rollout(generation, None)
        self.serving = self._new_generation(self.spec, self.model_dir, generation)
        self.generation = generation
        for replica in self.serving:
            self._launch(replica)
        # Nothing to fall back to: replicas that fail stay "dead" for Lynx to see and restart.
        self._finish_rollout(rollout, await self._wait_ready(self.serving, self.spec.ready_timeout_s))

    async def _roll_loop(self) -> None:
        try:
            if self._initial is not None:
                await asyncio.wait([self._initial])
            while self._roll_requested and not self._stop.is_set():
                self._roll_requested = False
                try:
                    await self._roll_once()
                except Exception as error:  # a bug must not leave the rollout "in_progress" for ever
                    logger.exception("rollout crashed")
                    if self.rollout.get("state") == "in_progress":
                        self._finish_rollout(self.rollout, f"internal error: {error!r}")
        finally:
            self._roll_task = None

    async def _roll_once(self) -> None:
        """Start the new generation, wait until it is ready, switch traffic, then drain and stop the old."""
        desired = read_json(self.state_dir / DESIRED_FILE)
        request_id = desired.get("request_id") if isinstance(desired, dict) else None
        generation = next(self._generations)
        rollout = self._begin_rollout(generation, request_id)
        try:
            spec = ReplicaSpec.from_mapping(desired)
            model_dir = lay_out_model(self.state_dir, spec)
            self.prepare_sandbox_inputs(spec, model_dir)
        except (SpecError, OSError, TypeError) as error:
            self._finish_rollout(rollout, f"invalid desired state: {error}")
            return
        incoming = self._new_generation(spec, model_dir, generation)
        self.incoming = incoming
        for replica in incoming:
            self._launch(replica)
        not_ready = await self._wait_ready(incoming, spec.ready_timeout_s)
        if not_ready:
            await self._stop_replicas(incoming)
            self.incoming, self.failed = [], incoming
            self._finish_rollout(rollout, not_ready)
            return

        old, self.serving, self.incoming = self.serving, incoming, []
        self.spec, self.model_dir, self.generation = spec, model_dir, generation
        self.retiring = old
        self._changed_now()  # the switch: from here on the proxy picks only new replicas
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while any(r.in_flight for r in old) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self._stop_replicas(old)
        self.retiring = []
        self._finish_rollout(rollout, None)

    # ---- shutdown and status -------------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        self.state = "stopping"
        self._changed.set()
        for task in (self._roll_task, self._initial):
            if task is not None:
                task.cancel()
        await self.proxy.close()  # stop accepting; requests in flight get up to 5 s
        await self._stop_replicas(self.serving + self.incoming + self.retiring)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        self.state = "stopped"
        self._changed.set()

    async def _write_status_loop(self) -> None:
        # Never cancelled: it returns after writing the "stopped" status. (On Python 3.11 a cancel arriving
        # inside wait_for just as the awaited event fires is swallowed; that once hung the shutdown here.)
        while True:
            self._changed.clear()
            self._write_status()
            if self.state == "stopped":
                return
            try:
                async with asyncio.timeout(1.0):
                    await self._changed.wait()
                await asyncio.sleep(0.05)  # let a burst of changes settle into one write
            except TimeoutError:
                pass

    def _write_status(self) -> None:
        rollout = dict(self.rollout)
        if self.incoming or self.failed:  # in progress, or failed: the new generation's replicas
            rollout["replicas"] = [r.describe() for r in self.incoming or self.failed]
        stats = self.proxy.stats.snapshot()
        stats["supervisor_rss_bytes"] = self._me.memory_info().rss
        status = {
            "state": self.state,
            "pid": os.getpid(),
            "port": self.port,
            "scoring_uri": self.scoring_uri,
            "swagger_uri": f"{self.base_uri}/swagger.json",
            "started_at": self.started_at,
            "updated_at": _now_iso(),
            "generation": self.generation,
            "spec": self.spec.to_dict(),
            "model_dir": str(self.model_dir),
            "desired_replicas": self.spec.replicas,
            "ready_replicas": len(self._ready),
            "replicas": [r.describe() for r in self.serving],
            "retiring": [r.describe() for r in self.retiring],
            "rollout": rollout,
            "sandbox": self.sandbox_status,
            "stats": stats,
            # Replica terminations (OOMKilled, failed starts), newest last; "seq" counts up for this
            # supervisor ("instance"), so Lynx records each once.
            "instance": f"{os.getpid()}@{self.started_at}",
            "events": list(self.events),
        }
        try:
            atomic_write_json(self.state_dir / STATUS_FILE, status)
        except OSError as error:
            logger.error("cannot write %s: %s", STATUS_FILE, error)
