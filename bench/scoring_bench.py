"""Scoring throughput for ResNet-50: the model alone (in-process, batch 1 and 32) against three servers of one
replica each, under closed-loop load at several concurrency levels, all in the same run:

* BATCHED: a real local deployment of the default entry script (dynamic batching), the deployment defaults;
* HOWTO_AS_AZURE: the how-to's one-call-per-request script as the how-to's deployment runs it, one request
  at a time (AKS: replica_max_concurrent_requests=1, "do not change"; azmlinfsrv: one sync gunicorn worker);
* HOWTO_THREADED: the how-to's script on a Lynx replica (many server threads, the same settings as BATCHED),
  which isolates what batching adds over concurrent single-image calls: the headline batching_speedup.

Within a repeat the order rotates, so a change in the machine's background load weighs on all alike; ratios
are computed per repeat, then their median is taken.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from scoring import control
from scoring.replicas import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_WAIT_MS

from .load import closed_loop
from .report import Report, percentile

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ENTRY_SCRIPT = REPO / "scoring" / "entry_scripts" / "score_tf2.py"
HOWTO_ENTRY_SCRIPT = Path(__file__).resolve().with_name("howto_score.py")
IMAGE_COUNT = 64
SECTION = "scoring: ResNet-50 (224x224 JPEG in, top 5 out), 1 replica, closed-loop clients"
BATCHED = "batched (default script)"
HOWTO_AS_AZURE = "how-to script, 1 request at a time (as on AKS)"
HOWTO_THREADED = "how-to script, Lynx replica (threads)"
# A deployment's defaults: what a user gets without touching the settings.
MAX_BATCH_SIZE, MAX_BATCH_WAIT_MS = DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_WAIT_MS


def resnet_model(cache: Path) -> Path:
    """Built once per version of scoring/resnet_model.py (in a subprocess: no TensorFlow in this process)."""
    recipe = (REPO / "scoring" / "resnet_model.py").read_bytes()
    target = cache / hashlib.sha256(recipe).hexdigest()[:12]
    if not (target / "model" / "saved_model.pb").is_file():
        scratch = target.with_name(target.name + ".partial")
        shutil.rmtree(scratch, ignore_errors=True)
        subprocess.run(
            [sys.executable, "-m", "scoring.resnet_model", "build", "--out", str(scratch)],
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=600,
        )
        shutil.rmtree(target, ignore_errors=True)
        scratch.rename(target)
    return target


def photo_like_jpegs(count: int, size: int = 224, seed: int = 7) -> list[bytes]:
    """Smooth random colour fields with grain, JPEG quality 90: about the size of a 224x224 photo (~16 KB)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        coarse = Image.fromarray((rng.random((7, 7, 3)) * 255).astype(np.uint8)).resize(
            (size, size), Image.BICUBIC
        )
        pixels = np.asarray(coarse, np.float32) + rng.normal(0, 8, (size, size, 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


class Ceiling:
    """The bench.ceiling child process."""

    def __init__(self, model: Path, images: Path, log: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.ceiling", "--model", str(model), "--images", str(images)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
        )
        self.devices = json.loads(self._read())["devices"]

    def _read(self) -> str:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"bench.ceiling exited with code {self.process.wait()}")
        return line

    def measure(self, batch: int, seconds: float) -> dict:
        self.process.stdin.write(f"{batch} {seconds}\n")
        self.process.stdin.flush()
        return json.loads(self._read())

    def rss_bytes(self) -> int:
        return psutil.Process(self.process.pid).memory_info().rss

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Served:
    """A real local deployment: control.spawn, the supervisor, its front proxy and one replica."""

    def __init__(self, root: Path, name: str, entry_script: Path, model_dir: Path) -> None:
        self.state_dir = root / name
        key_file = root / f"{name}-keys.json"
        self.key = f"bench-{name}-key"
        control.write_key_file(key_file, self.key, self.key + "-2")
        self.port = control.free_port()
        control.spawn(
            state_dir=self.state_dir,
            entry_script=entry_script,
            model_path=model_dir,
            model_name="resnet50",
            model_version=1,
            port=self.port,
            replicas=1,
            key_file=key_file,
            max_batch_size=MAX_BATCH_SIZE,
            max_batch_wait_ms=MAX_BATCH_WAIT_MS,
            ready_timeout_s=600,
        )
        self.url = f"http://127.0.0.1:{self.port}/score"

    def wait_ready(self, timeout: float = 600) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = control.read_status(self.state_dir)
            if status is None:
                raise RuntimeError(
                    f"the supervisor for {self.state_dir} is not running; see its supervisor.log"
                )
            replicas = status.get("replicas", [])
            if any(r["state"] == "dead" for r in replicas):
                raise RuntimeError(f"a replica died: {control.tail_logs(self.state_dir, 30)}")
            if replicas and all(r["state"] == "ready" for r in replicas):
                return status
            time.sleep(0.2)
        raise TimeoutError(f"{self.state_dir.name} not ready after {timeout:g} s")

    def replica_rss_bytes(self) -> int:
        status = control.read_status(self.state_dir) or {}
        return sum(r.get("rss_bytes", 0) for r in status.get("replicas", []))

    def stop(self) -> None:
        control.stop(self.state_dir)

    def cpu_seconds(self) -> float:
        """CPU time of the supervisor (with its front proxy) and of every replica process."""
        status = control.read_status(self.state_dir) or {}
        pids = [status.get("pid")] + [
            p
            for r in status.get("replicas", [])
            for p in [r["pid"], r.get("server_pid"), *r["worker_pids"]]
            if p
        ]
        return _cpu_seconds(pids)


class SyncWorker:
    """The how-to's script as its deployment runs it: one request at a time (AKS admits one concurrent request
    per replica by default, and Microsoft's server runs one sync gunicorn worker). Straight on a port: no Lynx
    supervisor, no front proxy, no key check, so it pays less per request than BATCHED does."""

    def __init__(self, root: Path, entry_script: Path, model_dir: Path, log: Path) -> None:
        from scoring.replicas import SERVER_APP, ReplicaSpec, lay_out_model, replica_environment

        state_dir = root / "sync-worker"
        state_dir.mkdir(parents=True)
        spec = ReplicaSpec.build(entry_script=entry_script, model_path=model_dir, model_name="resnet50")
        env = replica_environment(
            dict(os.environ), state_dir=state_dir, model_dir=lay_out_model(state_dir, spec), spec=spec
        )
        self.port = control.free_port()
        self.url = f"http://127.0.0.1:{self.port}/score"
        self.key = "unused"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-b",
                f"127.0.0.1:{self.port}",
                "-w",
                "1",
                "--timeout",
                "300",
                SERVER_APP,
            ],
            cwd=state_dir,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 600) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the sync-worker server exited; see its log")
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise TimeoutError("the sync-worker server did not come up")

    def cpu_seconds(self) -> float:
        try:
            arbiter = psutil.Process(self.process.pid)
            return _cpu_seconds([arbiter.pid, *(child.pid for child in arbiter.children(recursive=True))])
        except psutil.Error:
            return 0.0

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def run(
    report: Report,
    *,
    var_dir: Path,
    repeats: int,
    levels: list[int],
    seconds: float,
    log: Callable[[str], None],
) -> None:
    bench_dir = var_dir / "bench"
    serve_root = bench_dir / "serve"
    control.stop_all(serve_root)  # anything a crashed earlier run left behind
    shutil.rmtree(serve_root, ignore_errors=True)
    serve_root.mkdir(parents=True)

    log("building the ResNet-50 SavedModel (once per recipe; cached)...")
    model_dir = resnet_model(var_dir / "cache" / "resnet50")
    bodies = photo_like_jpegs(IMAGE_COUNT)
    images_dir = bench_dir / "images"
    shutil.rmtree(images_dir, ignore_errors=True)
    images_dir.mkdir(parents=True)
    for index, body in enumerate(bodies):
        (images_dir / f"{index:03d}.jpg").write_bytes(body)

    log("starting the in-process model, two local deployments (batched, how-to) and a sync worker...")
    ceiling = Ceiling(model_dir / "model", images_dir, bench_dir / "ceiling.log")
    served: dict[str, Served | SyncWorker] = {}
    headline = 16 if 16 in levels else levels[-1]
    try:
        served[BATCHED] = Served(serve_root, "batched", DEFAULT_ENTRY_SCRIPT, model_dir)
        served[HOWTO_AS_AZURE] = SyncWorker(serve_root, HOWTO_ENTRY_SCRIPT, model_dir, bench_dir / "sync.log")
        served[HOWTO_THREADED] = Served(serve_root, "howto", HOWTO_ENTRY_SCRIPT, model_dir)
        for server in served.values():
            server.wait_ready()
        report.note(
            f"scoring ran on: {', '.join(ceiling.devices)} (TensorFlow, in-process and in the replicas)"
        )
        for repeat in range(repeats):
            log(f"scoring repeat {repeat + 1}/{repeats}")
            rates = {batch: _in_process(report, ceiling, batch, seconds) for batch in (1, 32)}
            throughput: dict[tuple[str, int], float] = {}
            efficiency: dict[tuple[str, int], float | None] = {}
            for level in levels:
                per_client = max(3, math.ceil(seconds * rates[32] / level))
                turn = (repeat + level) % len(served)
                names = list(served)[turn:] + list(served)[:turn]
                for name in names:
                    server = served[name]
                    result = closed_loop(
                        server.url,
                        server.key,
                        bodies,
                        concurrency=level,
                        per_client=per_client,
                        cpu_seconds=server.cpu_seconds,
                    )
                    if result.errors:
                        report.note(f"{name} c{level}: {len(result.errors)} failed, e.g. {result.errors[0]}")
                    row = f"{name}, c{level}"
                    throughput[(name, level)] = result.throughput
                    report.add(SECTION, row, "images/s", result.throughput)
                    report.add(SECTION, row, "img/CPU-s", result.per_cpu_second)
                    efficiency[(name, level)] = result.per_cpu_second
                    for q in (0.5, 0.95, 0.99):
                        report.add(SECTION, row, f"p{round(q * 100)} ms", result.latency(q))
                    report.add(SECTION, row, "avg batch", result.avg_batch_size)
            batched = throughput[(BATCHED, headline)]
            # The headline is the stricter comparison: the how-to's script with the same server threads.
            report.ratio(f"batching_speedup_c{headline}", batched / throughput[(HOWTO_THREADED, headline)])
            report.ratio(f"served_vs_ceiling_c{headline}", batched / rates[32])
            one_at_a_time = throughput[(HOWTO_AS_AZURE, headline)]
            report.ratio(f"batching_speedup_c{headline}_vs_one_at_a_time", batched / one_at_a_time)
            report.ratio("ceiling_batch32_vs_batch1", rates[32] / rates[1])
            batched_eff = efficiency[(BATCHED, headline)]
            howto_eff = efficiency[(HOWTO_THREADED, headline)]
            if batched_eff and howto_eff:
                report.ratio(f"batching_cpu_efficiency_c{headline}", batched_eff / howto_eff)
        memory = "memory: resident MB"
        for name, server in served.items():
            if not isinstance(server, Served):
                continue
            report.add(
                memory,
                f"ResNet-50 replica, {name} (arbiter + worker)",
                "MB",
                server.replica_rss_bytes() / 2**20,
            )
        report.add(memory, "ResNet-50 in-process (bench.ceiling)", "MB", ceiling.rss_bytes() / 2**20)
    finally:
        ceiling.close()
        for server in served.values():
            server.stop()


def _cpu_seconds(pids: list[int | None]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times() if pid else None
        except psutil.Error:
            continue
        if times is not None:
            total += times.user + times.system
    return total


def _in_process(report: Report, ceiling: Ceiling, batch: int, seconds: float) -> float:
    measured = ceiling.measure(batch, seconds)
    row = f"in-process, batch {batch}"
    report.add(SECTION, row, "images/s", measured["images_per_s"])
    report.add(SECTION, row, "img/CPU-s", measured["images_per_cpu_s"])
    for q in (0.5, 0.95, 0.99):
        report.add(SECTION, row, f"p{round(q * 100)} ms", percentile(measured["call_ms"], q), note="per call")
    return measured["images_per_s"]
