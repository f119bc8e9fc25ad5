"""The backend's AKS web services: register the model, deploy, update, restart, observe, delete, keys."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from deployments.backends.base import (
    BackendError,
    KeyName,
    ReplicaObservation,
    ServiceObservation,
    ServiceSpec,
)
from deployments.vm_sizes import vm_size_info

from .clusters import ClusterOperations
from .errors import _azure, _format_error, _not_found

LYNX_VERSION_TAG = "lynx_model_version"
_CWD_LOCK = threading.Lock()  # Model.register only uploads paths under the current directory


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

    def _inference_config(self, spec: ServiceSpec, extra_env: dict[str, str] | None = None) -> Any:
        from azureml.core import Environment
        from azureml.core.environment import DEFAULT_GPU_IMAGE
        from azureml.core.model import InferenceConfig

        with tempfile.TemporaryDirectory() as tmp, _azure("Preparing the environment"):
            conda_file = Path(tmp) / "environment.yml"
            conda_file.write_text(spec.environment_yaml)
            env = Environment.from_conda_specification(f"lynx-{spec.name}", str(conda_file))
        if spec.gpu_enabled:
            env.docker.base_image = DEFAULT_GPU_IMAGE  # CUDA base image (enable_gpu is deprecated)
        env.environment_variables = {
            **(env.environment_variables or {}),
            "LYNX_MAX_BATCH_SIZE": str(spec.max_batch_size),
            "LYNX_MAX_BATCH_WAIT_MS": str(spec.max_batch_wait_ms),
            **(extra_env or {}),
        }
        entry = Path(spec.entry_script).resolve()
        with _azure("Checking the entry script"):
            return InferenceConfig(
                entry_script=entry.name, source_directory=str(entry.parent), environment=env
            )

    @staticmethod
    def _scale_kwargs(spec: ServiceSpec) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"cpu_cores": spec.cpu_cores, "memory_gb": spec.memory_gb}
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

    def deploy_service(self, spec: ServiceSpec) -> None:
        from azureml.core import Model
        from azureml.core.webservice import AksWebservice

        if self._get_service(spec) is not None:
            return  # already deployed or deploying: never a second service
        compute = self._ready_cluster(spec)
        model = self._model(spec)
        inference_config = self._inference_config(spec)
        with _azure(f"Deploying service {spec.name!r}"):
            config = AksWebservice.deploy_configuration(auth_enabled=True, **self._scale_kwargs(spec))
            try:
                Model.deploy(
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
                    return  # a concurrent delivery won the race; that service is ours
                raise

    def _existing_service(self, spec: ServiceSpec) -> Any:
        service = self._get_service(spec)
        if service is None:
            raise BackendError(f"Service {spec.name!r} does not exist in the workspace.")
        return service

    def update_service(self, spec: ServiceSpec) -> None:
        service = self._existing_service(spec)
        if spec.gpu_enabled:
            self._ready_cluster(spec)
        kwargs = self._scale_kwargs(spec)
        wanted = self._find_model(spec)
        if wanted is None or wanted.id not in [m.id for m in service.models]:
            kwargs.update(models=[self._model(spec)], inference_config=self._inference_config(spec))
        with _azure(f"Updating service {spec.name!r}"):
            service.update(**kwargs)

    def _find_model(self, spec: ServiceSpec) -> Any | None:
        from azureml.core import Model

        with _azure(f"Looking up model {spec.model_name!r}"):
            found = Model.list(
                self._ws(spec.cluster),
                name=spec.model_name,
                tags=[[LYNX_VERSION_TAG, str(spec.model_version)]],
                expand=False,
            )
        return max(found, key=lambda m: m.version) if found else None

    def restart_service(self, spec: ServiceSpec) -> None:
        """AKS web services have no restart call; a rolling update with a new environment variable is one."""
        service = self._existing_service(spec)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        with _azure(f"Restarting service {spec.name!r}"):
            service.update(
                models=[self._model(spec)],
                inference_config=self._inference_config(spec, {"LYNX_RESTARTED_AT": stamp}),
            )

    def observe_service(self, spec: ServiceSpec) -> ServiceObservation:
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
