"""The backend's AKS web services: register the model, deploy, update, restart, observe, delete, keys."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from deployments.backends.base import (
    BackendError,
    KeyName,
    ReplicaObservation,
    ServiceObservation,
    ServiceSpec,
)
from deployments.cuda import GPU_BASE_IMAGE, check_gpu_environment
from deployments.vm_sizes import vm_size_info
from scoring.replicas import PROBE_THREADS

from .clusters import ClusterOperations
from .errors import _azure, _format_error, _not_found

LYNX_VERSION_TAG = "lynx_model_version"
_CWD_LOCK = threading.Lock()  # Model.register only uploads paths under the current directory

# Batching on AKS. azureml-fe hands each replica replica_max_concurrent_requests requests at a time (default
# 1) and answers 503 once a request has queued max_request_wait_time ms (default 500). With 1, the replica's
# batcher never sees two requests together. The rule: as many concurrent requests as a batch holds, capped at
# AKS_MAX_CONCURRENT_REQUESTS (each one is a thread holding an image in the replica), and a queue wait of the
# batch wait plus AKS_QUEUE_MARGIN_MS for the model call it waits behind, never below Azure's 500 ms.
AKS_MAX_CONCURRENT_REQUESTS = 32
AKS_DEFAULT_MAX_REQUEST_WAIT_MS = 500
AKS_QUEUE_MARGIN_MS = 1000
# MMS operation states that end it without success (its words; "Cancelled" with two l's).
FAILED_OPERATION_STATES = ("Failed", "TimedOut", "Cancelled", "Canceled")


def aks_concurrency(max_batch_size: int, max_batch_wait_ms: int) -> dict[str, int]:
    """azureml-fe's front-end limits for a deployment's batching settings (the rule above)."""
    return {
        "replica_max_concurrent_requests": max(1, min(max_batch_size, AKS_MAX_CONCURRENT_REQUESTS)),
        "max_request_wait_time": max(
            AKS_DEFAULT_MAX_REQUEST_WAIT_MS, max_batch_wait_ms + AKS_QUEUE_MARGIN_MS
        ),
    }


def aks_server_threads(max_batch_size: int) -> int:
    """gunicorn threads for Microsoft's inference server in the image, the local replicas' rule
    (scoring.replicas.ReplicaSpec.threads) with azureml-fe's cap: one per request azureml-fe may hand the
    replica at once, plus the probe threads and two spare. The server runs one sync gunicorn worker with one
    thread unless told otherwise, so without this the requests azureml-fe admits together are still served
    one at a time and the batcher never sees two."""
    concurrent = aks_concurrency(max_batch_size, 0)["replica_max_concurrent_requests"]
    return concurrent + PROBE_THREADS + 2


def aks_server_environment(max_batch_size: int) -> dict[str, str]:
    """The image's environment that sets those threads. azureml-inference-server-http (1.5.1) builds
    gunicorn's argv with -b, -w, --timeout and log settings but no --threads, so gunicorn takes --threads from
    GUNICORN_CMD_ARGS (command line over GUNICORN_CMD_ARGS over defaults)."""
    return {"GUNICORN_CMD_ARGS": f"--threads {aks_server_threads(max_batch_size)}"}


class ServiceOperations(ClusterOperations):
    """AzureMLBackend's web service calls (they check the cluster through ClusterOperations)."""

    def _get_service(self, spec: ServiceSpec) -> Any | None:
        from azureml.core import Webservice
        from azureml.exceptions import WebserviceException

        ws = self._ws(spec.cluster)
        with _azure(f"Reading service {spec.name!r}"):
            try:
                return Webservice(ws, spec.name)
            except WebserviceException as exc:
                if _not_found(exc):
                    return None
                raise

    def _ready_cluster(self, spec: ServiceSpec) -> Any:
        compute = self._get_compute(spec.cluster)
        if compute is None:
            raise BackendError(f"Cluster {spec.cluster.name!r} does not exist in the workspace.")
        if compute.provisioning_state in ("Creating", "Updating"):
            raise BackendError(
                f"Cluster {spec.cluster.name!r} is still {compute.provisioning_state}.", transient=True
            )
        if compute.provisioning_state != "Succeeded":
            raise BackendError(
                f"Cluster {spec.cluster.name!r} is {compute.provisioning_state}; it cannot take deployments."
            )
        info = vm_size_info(compute.agent_vm_size or spec.cluster.vm_size)
        if spec.gpu_enabled and info is not None and not info.is_gpu:
            raise BackendError(
                f"Cluster {spec.cluster.name!r} runs {info.vm_size}, which has no GPU; "
                "deploy without GPU or to a GPU cluster."
            )
        return compute

    def _model(self, spec: ServiceSpec) -> Any:
        """The registered model for this Lynx model version, registering it only once."""
        from azureml.core import Model

        ws = self._ws(spec.cluster)
        with _azure(f"Looking up model {spec.model_name!r}"):
            existing = Model.list(
                ws, name=spec.model_name, tags=[[LYNX_VERSION_TAG, str(spec.model_version)]], expand=False
            )
        if existing:
            return max(existing, key=lambda m: m.version)
        path = Path(spec.model_path).resolve()
        with _azure(f"Registering model {spec.model_name!r}"), _CWD_LOCK:
            # Model.register refuses paths outside the current directory (a path-traversal guard).
            previous = os.getcwd()
            os.chdir(path.parent)
            try:
                return Model.register(
                    ws,
                    model_path=path.name,
                    model_name=spec.model_name,
                    tags={LYNX_VERSION_TAG: str(spec.model_version)},
                    description=f"Lynx model {spec.model_name} v{spec.model_version}",
                )
            finally:
                os.chdir(previous)

    @staticmethod
    def _check_cuda(spec: ServiceSpec) -> None:
        """Refuse, before anything reaches Azure, a GPU deployment whose framework cannot use the image's
        CUDA."""
        if not spec.gpu_enabled:
            return
        check = check_gpu_environment(spec.environment_yaml, GPU_BASE_IMAGE)
        if check.errors:
            raise BackendError(" ".join(check.errors))

    def _inference_config(self, spec: ServiceSpec, extra_env: dict[str, str] | None = None) -> Any:
        from azureml.core import Environment
        from azureml.core.model import InferenceConfig

        with tempfile.TemporaryDirectory() as tmp, _azure("Preparing the environment"):
            conda_file = Path(tmp) / "environment.yml"
            conda_file.write_text(spec.environment_yaml)
            env = Environment.from_conda_specification(f"lynx-{spec.name}", str(conda_file))
        gpu_env: dict[str, str] = {}
        if spec.gpu_enabled:
            # A CUDA 12 base image (enable_gpu is deprecated; the SDK's DEFAULT_GPU_IMAGE is CUDA 11.8, on
            # which TensorFlow >= 2.15 silently runs on the CPU); score.py's init() fails if it sees no GPU.
            env.docker.base_image = GPU_BASE_IMAGE
            gpu_env["LYNX_REQUIRE_GPU"] = "1"
        env.environment_variables = {
            **(env.environment_variables or {}),
            "LYNX_MAX_BATCH_SIZE": str(spec.max_batch_size),
            "LYNX_MAX_BATCH_WAIT_MS": str(spec.max_batch_wait_ms),
            **aks_server_environment(spec.max_batch_size),
            **gpu_env,
            **(extra_env or {}),
        }
        entry = Path(spec.entry_script).resolve()
        with _azure("Checking the entry script"):
            return InferenceConfig(
                entry_script=entry.name, source_directory=str(entry.parent), environment=env
            )

    @staticmethod
    def _scale_kwargs(spec: ServiceSpec) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "cpu_cores": spec.cpu_cores,
            "memory_gb": spec.memory_gb,
            **aks_concurrency(spec.max_batch_size, spec.max_batch_wait_ms),
        }
        if spec.gpu_enabled:
            kwargs["gpu_cores"] = max(spec.gpu_cores, 1)
        if spec.autoscale_enabled:
            kwargs.update(
                autoscale_enabled=True,
                autoscale_min_replicas=spec.autoscale_min_replicas,
                autoscale_max_replicas=spec.autoscale_max_replicas,
                autoscale_target_utilization=spec.autoscale_target_utilization,
            )
        else:
            kwargs.update(autoscale_enabled=False, num_replicas=spec.replicas)
        return kwargs

    @staticmethod
    def _auth_kwargs(spec: ServiceSpec) -> dict[str, bool]:
        # Key or token auth, never both: the SDK refuses auth_enabled=True with token_auth_enabled=True.
        if spec.token_auth_enabled:
            return {"auth_enabled": False, "token_auth_enabled": True}
        return {"auth_enabled": True, "token_auth_enabled": False}

    def deploy_service(self, spec: ServiceSpec) -> str | None:
        """Start the deployment; returns the MMS operation's URL (None when the service already existed)."""
        from azureml.core import Model
        from azureml.core.webservice import AksWebservice

        if self._get_service(spec) is not None:
            return None  # already deployed or deploying: never a second service
        self._check_cuda(spec)
        compute = self._ready_cluster(spec)
        model = self._model(spec)
        inference_config = self._inference_config(spec)
        with _azure(f"Deploying service {spec.name!r}"):
            config = AksWebservice.deploy_configuration(**self._auth_kwargs(spec), **self._scale_kwargs(spec))
            try:
                service = Model.deploy(
                    self._ws(spec.cluster),
                    spec.name,
                    [model],
                    inference_config=inference_config,
                    deployment_config=config,
                    deployment_target=compute,
                    overwrite=False,
                )
            except Exception as exc:
                if "with the same name already exists" in str(exc):
                    return None  # a concurrent delivery won the race; that service is ours
                raise
        return getattr(service, "_operation_endpoint", None) or None

    def _existing_service(self, spec: ServiceSpec) -> Any:
        service = self._get_service(spec)
        if service is None:
            raise BackendError(f"Service {spec.name!r} does not exist in the workspace.")
        return service

    def update_service(self, spec: ServiceSpec) -> str | None:
        """Start a rolling update; returns the MMS operation's URL."""
        service = self._existing_service(spec)
        self._check_cuda(spec)
        if spec.gpu_enabled:
            self._ready_cluster(spec)
        # The model, score.py and environment always go with it: an edited score.py or environment under the
        # same model version is a new revision too. Both auth flags always go: the SDK refuses token auth on a
        # key-auth service unless key auth is switched off in the same call, and token -> key with only
        # token_auth_enabled=False would leave the service with no auth at all.
        kwargs = {
            **self._scale_kwargs(spec),
            **self._auth_kwargs(spec),
            "models": [self._model(spec)],
            "inference_config": self._inference_config(spec),
        }
        with _azure(f"Updating service {spec.name!r}"):
            service.update(**kwargs)
        return getattr(service, "_operation_endpoint", None) or None

    def restart_service(self, spec: ServiceSpec) -> str | None:
        """AKS web services have no restart call; a rolling update with a new environment variable is one."""
        service = self._existing_service(spec)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        with _azure(f"Restarting service {spec.name!r}"):
            service.update(
                models=[self._model(spec)],
                inference_config=self._inference_config(spec, {"LYNX_RESTARTED_AT": stamp}),
            )
        return getattr(service, "_operation_endpoint", None) or None

    def _read_operation(self, spec: ServiceSpec, operation_ref: str) -> dict[str, Any] | None:
        """One GET of an MMS operation (no waiting): its state, error, sub-operation and build log. None when
        MMS no longer knows it (404: the service's state alone then decides) or when the reference does not
        point at this workspace's Model Management Service (the workspace's token is never sent elsewhere).

        The SDK reads operations only through Webservice._get_operation_state on a service object, and a
        failed deploy can leave no service to hold one; so this makes the same GET with the workspace's own
        signed-in auth (Workspace._auth). Private, but safe to rely on: azureml-core is frozen (support ended
        30 June 2026, no further releases), so neither can move under Lynx.
        """
        import requests
        from azureml._model_management._util import _get_mms_url

        ws = self._ws(spec.cluster)
        with _azure(f"Reading the deployment operation of {spec.name!r}"):
            if not self._is_workspace_operation(operation_ref, _get_mms_url(ws)):
                return None
            response = requests.get(operation_ref, headers=ws._auth.get_authentication_header(), timeout=60)
            if response.status_code == 404:
                return None
            if response.status_code >= 400:
                raise BackendError(
                    f"Reading the deployment operation of {spec.name!r}: {response.text[:500]} "
                    f"(HTTP {response.status_code})",
                    transient=response.status_code in (408, 429, 500, 502, 503, 504),
                )
            return response.json()

    @staticmethod
    def _is_workspace_operation(operation_ref: str, mms_url: str) -> bool:
        """Whether a reference names an operation of this workspace's MMS: https, MMS's host, and a path
        under the workspace's `/modelmanagement/.../workspaces/<ws>/operations/`. Anything else would carry
        the workspace's token to another host, over plain http, or to another workspace's resources."""
        ref, mms = urlsplit(operation_ref), urlsplit(mms_url)
        prefix = mms.path.rstrip("/") + "/operations/"
        return (
            ref.scheme == "https"
            and ref.netloc.lower() == mms.netloc.lower()
            and ref.path.startswith(prefix)
            and "/" not in ref.path[len(prefix) :].strip("/")
            and ".." not in ref.path
        )

    @staticmethod
    def _operation_error(operation: dict[str, Any]) -> str:
        """The operation's error in Azure's words, with the image build log when the build failed."""
        error = _format_error(operation.get("error"))
        log_uri = operation.get("operationLog")
        if operation.get("state") in FAILED_OPERATION_STATES and not error:
            error = f"The deployment operation ended {operation.get('state')}."
        if error and log_uri:
            error += f" Build log: {log_uri}"
        return error

    def observe_service(self, spec: ServiceSpec, operation_ref: str | None = None) -> ServiceObservation:
        """The service as Azure shows it and, given the MMS operation of a deploy or update, that operation's
        state and error (which decide the result: a failed update can leave the old revision Healthy)."""
        operation = self._read_operation(spec, operation_ref) if operation_ref else None
        observed = self._observe_service_state(spec)
        if operation is None:
            return observed
        state = str(operation.get("state") or "")
        sub = (operation.get("operationDetails") or {}).get("subOperationType") or ""
        error = self._operation_error(operation)
        progress = (*observed.progress, f"Operation {state}{f' ({sub})' if sub else ''}")
        if state in FAILED_OPERATION_STATES:
            return replace(observed, operation_state=state, error=error, progress=(*progress, error))
        return replace(observed, operation_state=state, progress=progress)

    def _observe_service_state(self, spec: ServiceSpec) -> ServiceObservation:
        service = self._get_service(spec)
        if service is None:
            return ServiceObservation(state="Missing")
        status = getattr(service, "deployment_status", None) or {}
        desired = int(status.get("desiredReplicas") or getattr(service, "num_replicas", None) or 0)
        available = int(status.get("availableReplicas") or 0)
        replicas = tuple(
            ReplicaObservation(name=f"{spec.name}-{i}", state="ready" if i < available else "starting")
            for i in range(max(desired, available))
        )
        error = _format_error(service.error)
        progress = (f"{service.state}",) + ((error,) if error else ())
        return ServiceObservation(
            state=service.state or "Unknown",
            scoring_uri=getattr(service, "scoring_uri", None) or "",
            swagger_uri=getattr(service, "swagger_uri", None) or "",
            replicas=replicas,
            error=error,
            progress=progress,
            stats={"desired_replicas": float(desired), "available_replicas": float(available)},
        )

    def delete_service(self, spec: ServiceSpec) -> None:
        service = self._get_service(spec)
        if service is None:
            return
        with _azure(f"Deleting service {spec.name!r}"):
            service.delete()

    def service_logs(self, spec: ServiceSpec, lines: int = 200) -> dict[str, str]:
        service = self._existing_service(spec)
        with _azure(f"Reading logs of {spec.name!r}"):
            return {
                "inference-server": service.get_logs(num_lines=lines),
                "storage-initializer": service.get_logs(num_lines=lines, init=True),
            }

    def service_keys(self, spec: ServiceSpec) -> tuple[str, str]:
        if spec.token_auth_enabled:
            return "", ""  # a token-auth service has no keys: clients ask for a token (service_access_token)
        service = self._existing_service(spec)
        with _azure(f"Reading keys of {spec.name!r}"):
            primary, secondary = service.get_keys()
        return primary, secondary

    def regenerate_key(self, spec: ServiceSpec, key: KeyName) -> tuple[str, str]:
        service = self._existing_service(spec)
        with _azure(f"Regenerating the {key.lower()} key of {spec.name!r}"):
            service.regen_key(key)
            primary, secondary = service.get_keys()
        return primary, secondary

    def service_access_token(self, spec: ServiceSpec) -> tuple[str, dt.datetime | None]:
        """A token for a token-auth service (`get_access_token()`) and when to ask for a new one."""
        service = self._existing_service(spec)
        with _azure(f"Getting an access token for {spec.name!r}"):
            token = service.get_access_token()
        refresh = getattr(token, "refresh_after", None)
        return token.access_token, refresh if isinstance(refresh, dt.datetime) else None
