"""A web service's deployment as MMS runs it: build the image, roll out, start the scoring host, settle.

Called by `Simulation.tick` (under the emulator's lock) on every request. Each service moves through the
phases `state.Service` describes; the scoring host's watcher thread says when init() is done or the process
died, so nothing here waits on a process. A phase's end and a host's news also wake the clock (`wake`), so a
deployment advances at its own pace and not only when a client happens to poll (the SDK polls every 5 s).
The service's state/error and its MMS operation's state/error are always set together (`settle`), as MMS
reports them.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from . import catalog
from .build import BuildResult, build_image, environment_digest
from .hosts import HostSpec, ScoringHost, write_models, write_source
from .state import Operation, Service, iso_now

if TYPE_CHECKING:
    from .emulator import AzureEmulator

IMAGE_BUILD_SHARE = 240 / 330  # of `service_deploy_seconds` (build + rollout): Azure's 240 s vs 90 s


# --- timings -----------------------------------------------------------------------------------------


def build_seconds(emu: AzureEmulator) -> float:
    return emu.service_deploy_seconds * IMAGE_BUILD_SHARE


def rollout_seconds(emu: AzureEmulator) -> float:
    return emu.service_deploy_seconds * (1 - IMAGE_BUILD_SHARE)


def service_delete_seconds(emu: AzureEmulator) -> float:
    """Deleting a service's pods and routes; never longer than the emulator's (compute) delete delay."""
    return min(emu.delete_seconds, emu.pace(catalog.azure_seconds("service_delete")))


def deployment_timeout_seconds(emu: AzureEmulator) -> float:
    """MMS's deployment timeout at the emulator's pace, but long enough for a real process to start."""
    return max(emu.pace(catalog.azure_seconds("mms_deployment_timeout")), emu.host_start_floor_seconds)


# --- Azure's error shapes --------------------------------------------------------------------------------


def _get_logs_hint(name: str) -> str:
    return (
        f"Please check the logs for your container instance: {name}. From the AML SDK, you can run "
        "print(service.get_logs()) if you have service object to fetch the logs."
    )


def crash_error(name: str) -> dict[str, Any]:
    """MMS's error when the container exits during init() (Kubernetes: CrashLoopBackOff)."""
    return {
        "code": "KubernetesDeploymentFailed",
        "statusCode": 400,
        "message": "Kubernetes Deployment failed",
        "details": [
            {
                "code": "CrashLoopBackOff",
                "message": "Your container application crashed. This may be caused by errors in your scoring "
                "file's init() function.\n\t1. "
                + _get_logs_hint(name)
                + "\n\t2. You can interactively debug "
                "your scoring file locally. Please refer to https://docs.microsoft.com/azure/machine-learning/"
                "how-to-debug-visual-studio-code#debug-and-troubleshoot-deployments for more information.",
            }
        ],
    }


def unhealthy_error(name: str) -> dict[str, Any]:
    """A Healthy service whose container died: its replicas are restarting (Back-off restarting)."""
    return {
        "code": "ServiceUnhealthy",
        "statusCode": 503,
        "message": "Service is unhealthy: no replica is ready.",
        "details": [
            {
                "code": "CrashLoopBackOff",
                "message": "Back-off restarting failed container. " + _get_logs_hint(name),
            }
        ],
    }


def timed_out_error(name: str, seconds: float) -> dict[str, Any]:
    return {
        "code": "DeploymentTimedOut",
        "statusCode": 504,
        "message": "The deployment operation polling has TimedOut. The service creation is taking longer "
        "than "
        f"our internal threshold of {int(seconds)} seconds. " + _get_logs_hint(name),
    }


def cancelled_error() -> dict[str, Any]:
    return {"code": "OperationCancelled", "statusCode": 400, "message": "The operation was cancelled."}


def compute_gone_error(compute: str) -> dict[str, Any]:
    return {
        "code": "ComputeNotFound",
        "statusCode": 404,
        "message": f"Compute {compute} was deleted; its services were deleted with it.",
    }


# --- the clock -------------------------------------------------------------------------------------------


def wake(emu: AzureEmulator) -> None:
    """Run the emulator's clock now, as a request would."""
    with emu._lock:
        emu.tick()


def wake_in(emu: AzureEmulator, seconds: float) -> None:
    timer = threading.Timer(max(seconds, 0.0) + 0.01, wake, args=(emu,))
    timer.daemon = True
    timer.start()


def _enter(emu: AzureEmulator, svc: Service, phase: str, seconds: float) -> None:
    svc.enter(phase, seconds)
    wake_in(emu, seconds)


# --- phases --------------------------------------------------------------------------------------------


def _operation(emu: AzureEmulator, svc: Service) -> Operation | None:
    return emu.operations.get(svc.operation_id)


def _log(svc: Service, line: str) -> None:
    svc.log_lines.append(f"{iso_now()} | {line}")


def settle(emu: AzureEmulator, svc: Service, op_state: str, error: dict[str, Any] | None = None) -> None:
    """End the revision in progress: the operation ends `op_state`, the service's state follows as MMS's does.

    A failed update keeps the previous revision serving (Azure keeps the old pods): the service stays
    Healthy with the update's error beside it (which state MMS really shows then is unverified).
    """
    op = _operation(emu, svc)
    if op is not None and op.state in ("NotStarted", "Running"):
        op.state, op.error = op_state, error
    if op_state == "Succeeded":
        svc.state, svc.error = "Healthy", None
    elif svc.outcome == "Unschedulable":
        svc.state, svc.error = "Unschedulable", error
    elif svc.host is not None and not svc.host.exited:
        svc.state, svc.error = "Healthy", error
    else:
        svc.state, svc.error = "Failed", error
    if svc.new_host is not None and op_state != "Succeeded":
        svc.new_host.stop()
        svc.new_host = None
    svc.phase, svc.deadline = "", 0.0
    svc.updated_time = iso_now()


def _start_building(emu: AzureEmulator, svc: Service) -> None:
    op = _operation(emu, svc)
    if op is not None:
        op.state = "Running"
    environment = _environment(svc)
    if svc.needs_host and environment_digest(environment) not in emu.images:
        if op is not None:
            op.sub_operation = "BuildEnvironment"
        _log(svc, f"Building image for environment {environment.get('name')}")
        _enter(emu, svc, "building", build_seconds(emu))
    else:
        _start_rollout(emu, svc)


def _environment(svc: Service) -> dict[str, Any]:
    return dict((svc.payload.get("environmentImageRequest") or {}).get("environment") or {})


def _finish_build(emu: AzureEmulator, svc: Service) -> None:
    op = _operation(emu, svc)
    log_path = f"azureml/ImageLogs/{svc.operation_id}/build.log"
    log_uri = (
        f"https://{emu.storage_account}.blob.core.windows.net/{log_path}"
        "?sv=2019-07-07&sr=b&sp=r&se=2099-01-01T00%3A00%3A00Z&sig=emulator"
    )
    result = build_image(_environment(svc), log_uri=log_uri, stamp=f"{iso_now()} | ")
    emu.blobs[log_path] = ("\n".join(result.log) + "\n").encode()
    svc.build = result
    svc.log_lines.extend(result.log)
    if op is not None:
        op.log_uri = log_uri
    if not result.ok:
        settle(emu, svc, "Failed", result.error)
        return
    emu.images[result.digest] = result
    _start_rollout(emu, svc)


def _start_rollout(emu: AzureEmulator, svc: Service) -> None:
    op = _operation(emu, svc)
    if op is not None:
        op.sub_operation = "DeployService"
    if svc.needs_host or svc.host is None:
        svc.build = emu.images.get(environment_digest(_environment(svc))) or svc.build
    svc.log_lines.extend(emu.boot_log(svc))
    _enter(emu, svc, "rolling_out", rollout_seconds(emu))


def _finish_rollout(emu: AzureEmulator, svc: Service) -> None:
    if svc.outcome != "Healthy":
        settle(emu, svc, "Failed", svc.outcome_error)
        svc.log_lines.extend(emu.ready_log(svc))
        return
    if not svc.needs_host and svc.host is not None and not svc.host.exited:
        settle(emu, svc, "Succeeded")
        return
    svc.new_host = _start_host(emu, svc)
    _enter(emu, svc, "starting", deployment_timeout_seconds(emu))


def _start_host(emu: AzureEmulator, svc: Service) -> ScoringHost:
    svc.revisions += 1
    root = emu.workdir / "hosts" / f"{svc.name}-{svc.revisions}"
    request = svc.payload.get("environmentImageRequest") or {}
    environment = _environment(svc)
    variables = {str(k): str(v) for k, v in (environment.get("environmentVariables") or {}).items()}
    host_spec = HostSpec(
        service=svc.name,
        root=root,
        entry_script=variables.get("AZUREML_ENTRY_SCRIPT") or str(request.get("driverProgram") or "main.py"),
        variables=variables,
        gpus_allocated=requested_gpus(svc.payload),
        gpus_visible=0,
    )
    host = ScoringHost(host_spec, on_change=lambda: wake(emu))
    write_source(emu, request, host.app_root)
    model_dir = write_models(emu, list(request.get("modelIds") or []), host.app_root / "azureml-models")
    variables["AZUREML_MODEL_DIR"] = str(model_dir)
    build: BuildResult | None = svc.build
    host_spec.gpus_visible = host_spec.gpus_allocated if build is not None and build.gpu_usable else 0
    host.start()
    pid = host.process.pid if host.process else "?"
    _log(svc, f"Starting container for {svc.name} (revision {svc.revisions}, pid {pid})")
    return host


def requested_gpus(payload: dict[str, Any]) -> int:
    return int(((payload.get("containerResourceRequirements") or {}).get("gpu")) or 0)


def _watch_start(emu: AzureEmulator, svc: Service, now: float) -> None:
    host: ScoringHost = svc.new_host
    if host.ready:
        old, svc.host, svc.new_host = svc.host, host, None
        if old is not None:
            old.stop()
        _log(svc, f"Container for {svc.name} is ready (liveness probe succeeded)")
        settle(emu, svc, "Succeeded")
    elif host.exited:
        _log(
            svc, f"Container for {svc.name} exited with code {host.exit_code} during init(): CrashLoopBackOff"
        )
        svc.new_host = None
        settle(emu, svc, "Failed", crash_error(svc.name))
        host_logs_kept(svc, host)
    elif now >= svc.deadline:
        seconds = deployment_timeout_seconds(emu)
        _log(svc, f"Container for {svc.name} not ready after {seconds:.0f}s: deployment timed out")
        settle(
            emu, svc, "TimedOut", timed_out_error(svc.name, catalog.azure_seconds("mms_deployment_timeout"))
        )
        host_logs_kept(svc, host)


def host_logs_kept(svc: Service, host: ScoringHost) -> None:
    """The failed container's output stays readable through get_logs(), as Kubernetes keeps it."""
    svc.log_lines.extend(host.log_lines())


def remove_service(emu: AzureEmulator, svc: Service) -> None:
    for host in (svc.host, svc.new_host):
        if host is not None:
            host.stop()
    svc.host = svc.new_host = None
    emu.services.pop(svc.name, None)


def _compute_gone(emu: AzureEmulator, svc: Service) -> bool:
    compute = emu.computes.get(str(svc.payload.get("computeName") or ""))
    return compute is None or compute.provisioning_state == "Deleting"


def advance_services(emu: AzureEmulator, now: float) -> None:
    """Move every service along its deployment; the services of a deleted compute go with it."""
    for svc in list(emu.services.values()):
        if _compute_gone(emu, svc):
            if svc.busy and not svc.deleting:
                settle(emu, svc, "Failed", compute_gone_error(str(svc.payload.get("computeName"))))
            remove_service(emu, svc)
        elif svc.deleting:
            if svc.deadline <= now:
                remove_service(emu, svc)
        elif svc.phase == "queued":
            _start_building(emu, svc)
        elif svc.phase == "building" and svc.deadline <= now:
            _finish_build(emu, svc)
        elif svc.phase == "rolling_out" and svc.deadline <= now:
            _finish_rollout(emu, svc)
        elif svc.phase == "starting":
            _watch_start(emu, svc, now)
        elif svc.phase == "" and svc.state == "Healthy" and svc.host is not None and svc.host.exited:
            _log(svc, f"Container for {svc.name} exited with code {svc.host.exit_code}: Back-off restarting")
            svc.state, svc.error = "Unhealthy", unhealthy_error(svc.name)
            svc.updated_time = iso_now()


def cancel(emu: AzureEmulator, svc: Service) -> None:
    """The revision in progress is cancelled: its operation ends Cancelled; a previous revision serves on."""
    if svc.busy and not svc.deleting:
        settle(emu, svc, "Cancelled", cancelled_error())


def capacity(payload: dict[str, Any]) -> int:
    """Requests azureml-fe admits at once: replicas (autoscale: the minimum) × concurrent per container."""
    autoscaler = payload.get("autoScaler") or {}
    replicas = payload.get("numReplicas")
    if not replicas:
        replicas = autoscaler.get("minReplicas") or 1
    return max(1, int(replicas)) * max(1, int(payload.get("maxConcurrentRequestsPerContainer") or 1))
