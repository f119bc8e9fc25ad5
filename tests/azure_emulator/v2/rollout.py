"""A managed online deployment's create or update, as Azure runs it, with the emulator's v1 machinery.

queued → building (build.py solves the environment, or fails with its log: ImageBuildFailure; skipped when
an image of the same environment exists, or the environment is an image without a conda file) →
provisioning (instances allocated; the storage initializer downloads the model and the code from the blobs
the SDK uploaded) → starting (hosts.py runs the deployed score.py in Microsoft's inference server) →
Succeeded when the server's liveness endpoint answers (init() is done). Failures:

* the container exits during init() → Failed, ResourceNotReady, the script's traceback in get_logs();
* the liveness probe gives up (its own settings: initialDelay + period × failureThreshold, real seconds, as
  the kubelet counts them) → the container is killed → Failed, ResourceNotReady ("Liveness probe failed");
* not ready within the deployment timeout (Azure's pace, floored at `host_start_floor_seconds` real seconds
  so that a real process can start at any time scale) → Failed, DeploymentTimeout;
* canceled on demand (control knob) → Canceled.

A failed or canceled update keeps the previous revision serving (Azure's rolling update keeps the old
instances); the deployment's provisioningState is then Failed (unverified which state Azure shows).
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .. import catalog, lifecycle
from ..build import BuildResult, build_image, cuda_major, environment_digest
from ..hosts import FrontEnd, HostSpec, ScoringHost
from ..state import iso_now
from . import assets, errors, kubernetes
from .resources import OnlineDeployment

if TYPE_CHECKING:
    from ..emulator import AzureEmulator

# Azure's defaults for a managed deployment (reference-yaml-deployment-managed-online).
DEFAULT_PROBE = {
    "initialDelay": "PT10S",
    "period": "PT10S",
    "timeout": "PT2S",
    "successThreshold": 1,
    "failureThreshold": 30,
}
DEFAULT_REQUEST_SETTINGS = {"requestTimeout": "PT5S", "maxConcurrentRequestsPerInstance": 1}
# What makes an update a new revision (new containers) rather than a scale change.
_REVISION_FIELDS = ("model", "codeConfiguration", "environmentId", "environmentVariables", "instanceType")
_DURATION = re.compile(r"^P(?:T(?:(?P<h>[\d.]+)H)?(?:(?P<m>[\d.]+)M)?(?:(?P<s>[\d.]+)S)?)?$")


def seconds_of(duration: Any, default: float) -> float:
    """An ISO 8601 duration ("PT10S", "PT1M30S") in seconds."""
    found = _DURATION.match(str(duration or ""))
    if not duration or found is None:
        return default
    return float(found["h"] or 0) * 3600 + float(found["m"] or 0) * 60 + float(found["s"] or 0)


def revision_changes(old: dict[str, Any], new: dict[str, Any]) -> bool:
    old_props, new_props = old.get("properties") or {}, new.get("properties") or {}
    return any(old_props.get(f) != new_props.get(f) for f in _REVISION_FIELDS)


def _timeout_step(d: OnlineDeployment | None) -> str:
    kubernetes_deployment = d is not None and d.is_kubernetes
    return "kubernetes_deployment_timeout" if kubernetes_deployment else "managed_deployment_timeout"


def deployment_timeout_seconds(emu: AzureEmulator, d: OnlineDeployment | None = None) -> float:
    """Azure's deployment timeout (managed: 3600 s, unverified; Kubernetes: the 20-min in-cluster timeout),
    paced, floored at `host_start_floor_seconds` real seconds."""
    return max(emu.pace(catalog.azure_seconds(_timeout_step(d))), emu.host_start_floor_seconds)


def _provision_seconds(emu: AzureEmulator, d: OnlineDeployment) -> float:
    """Managed: allocating VMs and pulling the image; Kubernetes: pods scheduled on existing nodes."""
    return emu.pace(catalog.azure_seconds("rollout" if d.is_kubernetes else "managed_provision"))


def liveness_window_seconds(d: OnlineDeployment) -> float:
    probe = {**DEFAULT_PROBE, **(d.properties.get("livenessProbe") or {})}
    initial = seconds_of(probe.get("initialDelay"), 10)
    period = seconds_of(probe.get("period"), 10)
    return initial + period * int(probe.get("failureThreshold") or 30)


def _log(lines: list[str], text: str) -> None:
    lines.append(f"{iso_now()} | {text}")


def _operation_end(
    emu: AzureEmulator, d: OnlineDeployment, status: str, error: dict[str, Any] | None
) -> None:
    op = emu.v2.operations.get(d.operation_id)
    if op is not None:
        op.end(status, error)


# --- starting and ending a revision --------------------------------------------------------------


def begin(
    emu: AzureEmulator, d: OnlineDeployment, operation_id: str, state: str, *, needs_host: bool
) -> None:
    d.provisioning_state, d.error, d.operation_id = state, None, operation_id
    d.needs_host = needs_host
    d.phase, d.deadline = "queued", 0.0
    lifecycle.wake_in(emu, 0)


def settle(emu: AzureEmulator, d: OnlineDeployment, status: str, error: dict[str, Any] | None = None) -> None:
    """End the revision in progress; the operation and the deployment end together."""
    _operation_end(emu, d, status, error)
    d.provisioning_state = {"Succeeded": "Succeeded", "Canceled": "Canceled"}.get(status, "Failed")
    d.error = error
    if d.new_host is not None and status != "Succeeded":
        _keep_server_log(d, d.new_host)
        d.new_host.stop()
        d.new_host = None
    d.phase, d.deadline = "", 0.0


def cancel(emu: AzureEmulator, d: OnlineDeployment) -> None:
    if d.provisioning_state in ("Creating", "Updating"):
        _log(d.storage_log, "Operation canceled")
        settle(emu, d, "Canceled", errors.canceled())


def begin_delete(d: OnlineDeployment, operation_id: str) -> None:
    stop_hosts(d)
    d.provisioning_state, d.operation_id, d.phase = "Deleting", operation_id, ""
    d.deadline = time.monotonic()


def stop_hosts(d: OnlineDeployment, wait: bool = False) -> None:
    for host in (d.host, d.new_host):
        if host is not None:
            host.stop(wait=wait)
    d.host = d.new_host = None


def _enter(emu: AzureEmulator, d: OnlineDeployment, phase: str, seconds: float) -> None:
    d.enter(phase, seconds)
    lifecycle.wake_in(emu, seconds)


# --- the environment and its image --------------------------------------------------------------------


def environment(emu: AzureEmulator, d: OnlineDeployment) -> tuple[str, str, dict[str, Any]]:
    """(name, version, properties) of the deployment's registered environment version."""
    return assets.environment_version(emu, str(d.properties.get("environmentId") or ""))


def mms_environment(name: str, props: dict[str, Any]) -> dict[str, Any]:
    """The v2 environment in the shape build.py reads (v1's `environment`): conda file + base image."""
    conda = yaml.safe_load(props.get("condaFile") or "") or {}
    return {
        "name": name,
        "python": {"condaDependencies": conda},
        "docker": {"baseImage": props.get("image") or ""},
        "inferencingStackVersion": None,
    }


def _start(emu: AzureEmulator, d: OnlineDeployment) -> None:
    if not d.needs_host and d.host is not None:
        _log(d.storage_log, f"Scaling {d.name} to {d.instance_count} instance(s) of {d.instance_type}")
        _enter(emu, d, "provisioning", _provision_seconds(emu, d))
        return
    env_name, env_version, props = environment(emu, d)
    if not props.get("condaFile"):
        # An image used as is (a curated inference image): nothing to build.
        d.build = BuildResult(
            digest=environment_digest(props),
            ok=True,
            python=(3, 10),
            base_image=str(props.get("image") or ""),
            cuda_major=cuda_major(str(props.get("image") or "")),
            gpu_usable=cuda_major(str(props.get("image") or "")) is not None,
        )
        _enter(emu, d, "provisioning", _provision_seconds(emu, d))
        return
    digest = environment_digest(mms_environment(env_name, props))
    if digest in emu.images:
        d.build = emu.images[digest]
        _enter(emu, d, "provisioning", _provision_seconds(emu, d))
        return
    _log(d.storage_log, f"Building image for environment {env_name}:{env_version}")
    _enter(emu, d, "building", emu.pace(catalog.azure_seconds("image_build")))


def _finish_build(emu: AzureEmulator, d: OnlineDeployment) -> None:
    env_name, env_version, props = environment(emu, d)
    log_path = f"azureml/ImageLogs/{d.operation_id}/build.log"
    log_uri = f"https://{emu.storage_account}.blob.core.windows.net/{log_path}"
    result = build_image(mms_environment(env_name, props), log_uri=log_uri, stamp=f"{iso_now()} | ")
    emu.blobs[log_path] = ("\n".join(result.log) + "\n").encode()
    d.build = result
    if not result.ok:
        settle(emu, d, "Failed", errors.image_build_failure(env_name, env_version, log_uri))
        return
    emu.images[result.digest] = result
    _enter(emu, d, "provisioning", _provision_seconds(emu, d))


# --- the container --------------------------------------------------------------------------------------


def _gpus(emu: AzureEmulator, d: OnlineDeployment) -> int:
    """The container's GPUs: a managed instance's (its VM size's), a Kubernetes pod's GPU limit."""
    if d.is_kubernetes:
        return kubernetes.gpus_of(emu, d)
    size = catalog.vm_size(d.instance_type)
    return size.nvidia_gpus_per_node if size is not None else 0


def _start_container(emu: AzureEmulator, d: OnlineDeployment) -> None:
    if d.is_kubernetes and (reason := kubernetes.unschedulable_reason(emu, d)) is not None:
        # The pods stay Pending: Azure fails the deployment (the previous revision, if any, keeps serving).
        _log(d.storage_log, f"FailedScheduling: {reason}")
        settle(emu, d, "Failed", kubernetes.unschedulable(reason))
        return
    if not d.needs_host and d.host is not None and not d.host.exited:
        settle(emu, d, "Succeeded")
        return
    d.revisions += 1
    root = emu.workdir / "hosts" / f"v2-{d.endpoint}-{d.name}-{d.revisions}"
    app_root = root / "var" / "azureml-app"
    try:
        model_dir = _download_model(emu, d, app_root)
        entry_script = _download_code(emu, d, app_root)
    except assets.MissingBlob as missing:
        _log(d.storage_log, f"Failed to download {missing.uri}")
        settle(emu, d, "Failed", errors.model_download_failed(missing.uri))
        return
    variables = {str(k): str(v) for k, v in (d.properties.get("environmentVariables") or {}).items()}
    variables["AZUREML_MODEL_DIR"] = str(model_dir)
    gpus = _gpus(emu, d)
    build = d.build
    spec = HostSpec(
        service=f"{d.endpoint}-{d.name}",
        root=root,
        entry_script=entry_script,
        variables=variables,
        gpus_allocated=gpus,
        gpus_visible=gpus if build is not None and build.gpu_usable else 0,
    )
    host = ScoringHost(spec, on_change=lambda: lifecycle.wake(emu))
    host.start()
    if d.front_end is None:
        d.front_end = FrontEnd()
    d.new_host = host
    pid = host.process.pid if host.process else "?"
    _log(d.storage_log, f"Starting inference-server container (revision {d.revisions}, pid {pid})")
    _enter(emu, d, "starting", deployment_timeout_seconds(emu, d))
    d.probe_deadline = time.monotonic() + liveness_window_seconds(d)
    lifecycle.wake_in(emu, liveness_window_seconds(d))


def _download_model(emu: AzureEmulator, d: OnlineDeployment, app_root: Path) -> Path:
    model_id = str(d.properties.get("model") or "")
    name, version, files = assets.model_files(emu, model_id)
    model_dir = app_root / "azureml-models" / name / version
    model_dir.mkdir(parents=True, exist_ok=True)
    for relative, content in files:
        target = assets.safe_join(model_dir, relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    _log(d.storage_log, f"Downloaded model {name}:{version} ({len(files)} file(s)) to {model_dir}")
    return model_dir


def _download_code(emu: AzureEmulator, d: OnlineDeployment, app_root: Path) -> str:
    config = d.properties.get("codeConfiguration") or {}
    folder, files = assets.code_files(emu, str(config.get("codeId") or ""))
    for relative, content in files:
        target = assets.safe_join(app_root / folder, relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    _log(d.storage_log, f"Downloaded code {folder} ({len(files)} file(s)) to {app_root / folder}")
    return f"{folder}/{config.get('scoringScript') or 'score.py'}"


def _keep_server_log(d: OnlineDeployment, host: ScoringHost) -> None:
    """A dead container's output stays readable through get_logs(), as Azure keeps the last one."""
    d.server_log.extend(host.log_lines())


def _watch(emu: AzureEmulator, d: OnlineDeployment, now: float) -> None:
    host: ScoringHost = d.new_host
    if host.ready:
        old, d.host, d.new_host = d.host, host, None
        if old is not None:
            _keep_server_log(d, old)
            old.stop()
        settle(emu, d, "Succeeded")
    elif host.exited:
        reason = f"the container exited with code {host.exit_code} while running init()"
        settle(emu, d, "Failed", errors.container_crashed(reason))
    elif now >= d.probe_deadline:
        window = liveness_window_seconds(d)
        host.kill()
        reason = (
            f'Liveness probe failed: Get "http://127.0.0.1:{host.port}/": no answer within {window:g}s '
            "(initialDelay + period × failureThreshold); the container was restarted"
        )
        settle(emu, d, "Failed", errors.container_crashed(reason))
    elif now >= d.deadline:
        minutes = math.ceil(catalog.azure_seconds(_timeout_step(d)) / 60)
        settle(emu, d, "Failed", errors.deployment_timeout(minutes))


def advance_deployments(emu: AzureEmulator, now: float) -> None:
    for key, d in list(emu.v2.deployments.items()):
        if d.provisioning_state == "Deleting":
            if d.deadline <= now:
                stop_hosts(d)
                del emu.v2.deployments[key]
                endpoint = emu.v2.endpoints.get(d.endpoint)
                if endpoint is not None:
                    endpoint.traffic.pop(d.name, None)
                op = emu.v2.operations.get(d.operation_id)
                if op is not None and op.kind == "deployment":
                    op.end("Succeeded")
        elif d.phase == "queued":
            _start(emu, d)
        elif d.phase == "building" and d.deadline <= now:
            _finish_build(emu, d)
        elif d.phase == "provisioning" and d.deadline <= now:
            _start_container(emu, d)
        elif d.phase == "starting":
            _watch(emu, d, now)


def log_lines(d: OnlineDeployment, container: str) -> list[str]:
    if container == "StorageInitializer":
        return list(d.storage_log)
    lines = list(d.server_log)
    for host in (d.host, d.new_host):
        if host is not None:
            lines += host.log_lines()
    return lines
