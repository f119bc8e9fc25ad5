"""Scoring hosts: the deployed score.py in Microsoft's inference server, one process group per service.

A host is laid out from what the SDK uploaded, as an AKS pod has it: the source directory (the artifacts
`environmentImageRequest.assets` name, the tarball unpacked) under an app root, the registered models under
`<app root>/azureml-models/<name>/<version>`, the environment's variables, cwd the entry script's folder.
It runs `python -m azureml_inference_server_http.amlserver` with the emulator's own interpreter (the image
the build step solved is not really installed) and a `sitecustomize` that shows TensorFlow the node's GPUs.

A watcher thread per host polls the server's liveness endpoint (`GET /`), which answers once the script's
`init()` is done, and notes when the process exits; the emulator's clock (`tick`) reads those flags, so no
request ever waits on a host while holding the emulator's lock.

`FrontEnd` is azureml-fe's part: at most replicas × maxConcurrentRequestsPerContainer requests in flight,
503 after maxQueueWaitMs in the queue, 504 after scoringTimeoutMs.
"""

from __future__ import annotations

import http.client
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .emulator import AzureEmulator

logger = logging.getLogger("azure_emulator")

GPU_SHIM = Path(__file__).resolve().with_name("gpu_shim")
# Request headers that belong to one hop (azureml-fe opens its own connection to the pod).
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host", "te"}
_RESPONSE_SKIP = {"content-length", "transfer-encoding", "connection", "date", "server", "keep-alive"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _safe_join(root: Path, relative: str) -> Path:
    target = (root / PurePosixPath(relative.lstrip("/"))).resolve()
    if root.resolve() not in target.parents and target != root.resolve():
        raise ValueError(f"path {relative!r} leaves {root}")
    return target


# --- laying out a pod's files -------------------------------------------------------------------------


def _artifact_blob(emu: AzureEmulator, url: str) -> bytes | None:
    """`aml://artifact/<artifact id>` → the bytes the SDK uploaded for it."""
    artifact_id = url.removeprefix("aml://artifact/")
    blob_path = emu.artifacts.get(artifact_id)
    return emu.blobs.get(blob_path) if blob_path else None


def write_source(emu: AzureEmulator, image_request: dict[str, Any], app_root: Path) -> None:
    """The driver program and the source directory (a tarball marked `unpack`), as in /var/azureml-app."""
    app_root.mkdir(parents=True, exist_ok=True)
    for asset in image_request.get("assets") or []:
        content = _artifact_blob(emu, str(asset.get("url") or ""))
        if content is None:
            continue
        if asset.get("unpack"):
            with tarfile.open(fileobj=io.BytesIO(content)) as archive:
                archive.extractall(app_root, filter="data")
        else:
            _safe_join(app_root, str(asset.get("id") or "asset")).write_bytes(content)


def write_models(emu: AzureEmulator, model_ids: list[str], models_root: Path) -> Path:
    """Each registered model's files under <models_root>/<name>/<version>/; returns AZUREML_MODEL_DIR."""
    dirs: list[Path] = []
    for model_id in model_ids:
        model = next((m for m in emu.models if m.id == model_id), None)
        if model is None:
            continue
        version_dir = models_root / model.name / str(model.version)
        version_dir.mkdir(parents=True, exist_ok=True)
        dirs.append(version_dir)
        asset = emu.assets.get(model.url.removeprefix("aml://asset/")) or {}
        for artifact in asset.get("artifacts") or []:
            prefix = str(artifact.get("prefix") or "")
            # The registered path (a folder or one file) keeps its own name under the version folder.
            parent = prefix.rsplit("/", 1)[0]
            for artifact_id, blob_path in list(emu.artifacts.items()):
                if artifact_id != prefix and not artifact_id.startswith(prefix + "/"):
                    continue
                target = _safe_join(version_dir, artifact_id[len(parent) + 1 :])
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(emu.blobs.get(blob_path, b""))
    models_root.mkdir(parents=True, exist_ok=True)
    return dirs[0] if len(dirs) == 1 else models_root


# --- the host process -------------------------------------------------------------------------------


@dataclass
class HostSpec:
    """What a host runs: where, with which script, model folder, variables and GPUs."""

    service: str
    root: Path
    entry_script: str  # relative to the app root, as AZUREML_ENTRY_SCRIPT says ("src/score.py")
    variables: dict[str, str]
    gpus_allocated: int
    gpus_visible: int  # what the framework can use: 0 when it cannot load the image's CUDA


class ScoringHost:
    """One inference-server process for one service revision."""

    def __init__(self, spec: HostSpec, on_change: Callable[[], None] | None = None) -> None:
        self.spec = spec
        self.on_change = on_change  # told (from the watcher thread) when init() is done and when it exits
        self.app_root = spec.root / "var" / "azureml-app"
        self.log_path = spec.root / "host.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.ready = False  # init() done: the liveness endpoint answered
        self.exit_code: int | None = None
        self.started_at = 0.0
        self._stopping = False

    @property
    def model_dir(self) -> str:
        return self.spec.variables.get("AZUREML_MODEL_DIR", "")

    @property
    def exited(self) -> bool:
        return self.exit_code is not None

    def environment(self) -> dict[str, str]:
        """A pod's environment: no variable of the emulator's own process leaks in but PATH/HOME/locale."""
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR", "TZ")}
        env = {
            **keep,
            # Its own HOME: gunicorn's control socket lives there, and two hosts must not share one.
            "HOME": str(self.spec.root),
            **self.spec.variables,
            "AML_APP_ROOT": str(self.app_root),
            "AZUREML_ENTRY_SCRIPT": str(self.app_root / self.spec.entry_script),
            "SERVER_PORT": str(self.port),
            "PYTHONPATH": str(GPU_SHIM),
            "PYTHONUNBUFFERED": "1",
            "AZURE_EMULATOR_GPUS": str(self.spec.gpus_visible),
        }
        if self.spec.gpus_allocated:
            # As the NVIDIA device plugin sets it for the container's allocated GPUs.
            env["NVIDIA_VISIBLE_DEVICES"] = ",".join(
                f"GPU-{self.spec.service[:8]}-{i:04d}" for i in range(self.spec.gpus_allocated)
            )
        env.setdefault("WORKER_COUNT", "1")
        return env

    def start(self) -> None:
        self.port = _free_port()
        entry = self.app_root / self.spec.entry_script
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "azureml_inference_server_http.amlserver",
                    "--entry_script",
                    str(entry),
                    "--port",
                    str(self.port),
                ],
                cwd=str(entry.parent if entry.parent.is_dir() else self.app_root),
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends gunicorn and its workers
            )
        finally:
            log.close()
        self.started_at = time.monotonic()
        threading.Thread(target=self._watch, name=f"host-{self.spec.service}", daemon=True).start()

    def _watch(self) -> None:
        process = self.process
        assert process is not None
        while process.poll() is None and not self.ready and not self._stopping:
            if self._live():
                self.ready = True
                self._tell()
                break
            time.sleep(0.1)
        self.exit_code = process.wait()
        self._tell()

    def _tell(self) -> None:
        if self.on_change is not None and not self._stopping:
            self.on_change()

    def _live(self) -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1.0)
        try:
            connection.request("GET", "/")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    def stop(self, wait: bool = False) -> None:
        """SIGTERM to the process group (gunicorn stops its workers), SIGKILL if it lingers.

        Called under the emulator's lock, so it does not wait unless asked: a reaper thread escalates.
        """
        self._stopping = True
        process = self.process
        if process is None or process.poll() is not None:
            return
        self._signal(signal.SIGTERM)
        if wait:
            self._reap(process)
        else:
            threading.Thread(target=self._reap, args=(process,), daemon=True).start()

    def _signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def _reap(self, process: subprocess.Popen[bytes]) -> None:
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            process.wait(timeout=5)

    def kill(self) -> None:
        """The container dies (OOMKilled, a segfault): the process group gets SIGKILL."""
        if self.process is not None and self.process.poll() is None:
            self._signal(signal.SIGKILL)

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes, timeout: float
    ) -> tuple[int, dict[str, str], bytes]:
        """The request as the client sent it (method, headers, raw bytes) to the server's /score."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP | {"content-length"}}
            connection.request(method, path, body=body if body or method != "GET" else None, headers=sent)
            response = connection.getresponse()
            return (
                response.status,
                {k: v for k, v in response.getheaders() if k.lower() not in _RESPONSE_SKIP},
                response.read(),
            )
        finally:
            connection.close()


class FrontEnd:
    """azureml-fe for one service: admission by capacity with a bounded queue wait."""

    def __init__(self) -> None:
        self._in_flight = 0
        self._free = threading.Condition()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def admit(self, capacity: int, wait_seconds: float) -> bool:
        deadline = time.monotonic() + wait_seconds
        with self._free:
            while self._in_flight >= capacity:
                left = deadline - time.monotonic()
                if left <= 0 or not self._free.wait(left):
                    if self._in_flight >= capacity:
                        return False
            self._in_flight += 1
            return True

    def release(self) -> None:
        with self._free:
            self._in_flight -= 1
            self._free.notify()
