"""The Azure ML target: AKS clusters and AKS web services through azureml-core (SDK v1).

Every call starts Azure's work and returns; nothing here waits on a long-running operation
(`wait_for_completion`/`wait_for_deployment` poll without end, and an object fetched afresh has no
operation endpoint to wait on anyway). Callers poll `observe_*` instead. Two SDK calls still block
for a few seconds by design of the SDK: `regen_key` and `Webservice.delete` poll their operation
every 5 s until it ends.

azureml is imported lazily, so importing this module is cheap (it only sets two SDK environment
defaults, below). The SDK reads its cloud definition (`ARM_CLOUD_METADATA_URL`) and its retry/backoff
settings once, when it is first imported.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import math
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deployments.vm_sizes import validate_aks_cluster, vm_size_info

from .base import (
    BackendError,
    ClusterObservation,
    ClusterSpec,
    KeyName,
    ReplicaObservation,
    ServiceObservation,
    ServiceSpec,
    WorkspaceSpec,
)

# Must be in the environment before azureml.core is first imported (it is read at import time).
os.environ.setdefault("AZUREML_LOG_DEPRECATION_WARNING_ENABLED", "False")
# The SDK sleeps 32/64/128 s between retries of an HTTP 429; Lynx retries transient errors itself.
os.environ.setdefault("AZUREML_DEFAULT_BACKOFF", "2")

TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 530})
# The SDK sometimes rewraps a network failure in its own exception, keeping only the words.
_NETWORK_WORDS = re.compile(r"timed out|Error connecting to|Connection aborted|Max retries exceeded", re.I)
LYNX_VERSION_TAG = "lynx_model_version"
_CWD_LOCK = threading.Lock()  # Model.register only uploads paths under the current directory
_WORKSPACES: dict[WorkspaceSpec, Any] = {}
_WORKSPACES_LOCK = threading.Lock()


# --- error translation -----------------------------------------------------------------------------


def _azure_message(body: Any) -> str:
    """Azure's own words from an ARM, RP or MMS error body (the three envelopes differ)."""
    if not isinstance(body, dict):
        return str(body)
    if "error_details" in body:
        return _azure_message(body["error_details"])
    error = body.get("error") if isinstance(body.get("error"), dict) else body
    code, message = error.get("code", ""), error.get("message") or ""
    details = [d.get("message", "") for d in error.get("details") or [] if isinstance(d, dict)]
    text = f"{code}: {message}" if code and code not in message else message
    extra = "; ".join(d for d in details if d and d not in text)
    return f"{text} ({extra})" if extra else text


def _parse_sdk_error(exc: BaseException) -> tuple[int | None, str]:
    """(HTTP status, Azure's message) from the SDK's exceptions, which embed the response as text."""
    text = getattr(exc, "message", None) or getattr(exc, "error_msg", None) or str(exc)
    text = str(text)
    status_match = re.search(r"Response Code: (\d{3})", text) or re.search(r'"status_code": (\d{3})', text)
    status = int(status_match.group(1)) if status_match else getattr(exc, "status_code", None)
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    body: Any = None
    content = re.search(r"Content: (b?(['\"]).*\2)\s*$", text, re.DOTALL)
    try:
        if content:
            raw = ast.literal_eval(content.group(1))
            body = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        elif text.lstrip().startswith("{"):
            body = json.loads(text)
    except (ValueError, SyntaxError):
        body = None
    message = _azure_message(body) if body else text.split("\nTrace ID:")[0].strip()
    return (status if isinstance(status, int) else None), message


def _to_backend_error(exc: BaseException, action: str) -> BackendError:
    import requests
    from azure.core.exceptions import ServiceRequestError, ServiceResponseError

    if isinstance(exc, BackendError):
        return exc
    network = (
        requests.ConnectionError,
        requests.Timeout,
        TimeoutError,
        ConnectionError,
        ServiceRequestError,
        ServiceResponseError,
    )
    if isinstance(exc, network) or isinstance(getattr(exc, "inner_exception", None), network):
        return BackendError(
            f"{action}: could not reach Azure ({exc.__class__.__name__}: {exc})", transient=True
        )
    if isinstance(exc, ValueError) and "authority configuration" in str(exc):
        return BackendError(f"{action}: Azure AD does not know this tenant ID. {exc}", transient=False)
    status, message = _parse_sdk_error(exc)
    if exc.__class__.__name__ == "AuthenticationError":
        return BackendError(f"{action}: Azure AD refused the service principal. {message}", transient=False)
    suffix = f" (HTTP {status})" if status else ""
    transient = status in TRANSIENT_STATUSES or (status is None and bool(_NETWORK_WORDS.search(message)))
    return BackendError(f"{action}: {message}{suffix}", transient=transient)


@contextmanager
def _azure(action: str) -> Iterator[None]:
    """Translate whatever the SDK raises into a BackendError carrying Azure's message."""
    try:
        yield
    except BackendError:
        raise
    except Exception as exc:  # the SDK raises many unrelated types (see _to_backend_error)
        raise _to_backend_error(exc, action) from exc


def _not_found(exc: BaseException) -> bool:
    text = str(exc)
    return "ComputeTargetNotFound" in text or "WebserviceNotFound" in text


# --- workspace ---------------------------------------------------------------------------------------


def _connect(spec: WorkspaceSpec) -> Any:
    from azureml.core import Workspace
    from azureml.core.authentication import ServicePrincipalAuthentication

    auth = ServicePrincipalAuthentication(
        tenant_id=spec.tenant_id,
        service_principal_id=spec.client_id,
        service_principal_password=spec.client_secret,
    )
    where = (
        f"Connecting to workspace {spec.workspace_name!r} (resource group {spec.resource_group!r}, "
        f"subscription {spec.subscription_id})"
    )
    with _azure(where):
        return Workspace(spec.subscription_id, spec.resource_group, spec.workspace_name, auth=auth)


def _workspace(spec: WorkspaceSpec) -> Any:
    """A connected Workspace, kept per process (the auth object refreshes its own tokens)."""
    with _WORKSPACES_LOCK:
        ws = _WORKSPACES.get(spec)
    if ws is None:
        ws = _connect(spec)
        with _WORKSPACES_LOCK:
            if len(_WORKSPACES) > 32:
                _WORKSPACES.clear()
            _WORKSPACES[spec] = ws
    return ws


def test_connection(ws: WorkspaceSpec) -> str:
    """Sign in as the service principal and read the workspace; say what was found."""
    workspace = _connect(ws)
    return (
        f"Signed in as {ws.client_id} and found workspace {workspace.name!r} in resource group "
        f"{workspace.resource_group!r} ({workspace.location})."
    )


test_connection.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, despite the name


def list_resources(ws: WorkspaceSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Compute targets and web services as Azure reports them (for the periodic sync)."""
    from azureml.core import Webservice
    from azureml.core.compute import ComputeTarget

    workspace = _workspace(ws)
    with _azure("Listing compute targets"):
        computes = [_compute_dict(c) for c in ComputeTarget.list(workspace)]
    with _azure("Listing web services"):
        services = [_service_dict(s) for s in Webservice.list(workspace)]
    return computes, services


def _compute_dict(c: Any) -> dict[str, Any]:
    return {
        "name": c.name,
        "compute_type": c.type,
        "provisioning_state": c.provisioning_state,
        "provisioning_errors": list(_format_errors(c.provisioning_errors)),
        "location": c.location,
        "vm_size": getattr(c, "agent_vm_size", None),
        "node_count": getattr(c, "agent_count", None),
        "cluster_purpose": getattr(c, "cluster_purpose", None),
        "is_attached": getattr(c, "is_attached", None),
        "cluster_fqdn": getattr(c, "cluster_fqdn", None),
        "resource_id": getattr(c, "cluster_resource_id", None),
    }


def _service_dict(s: Any) -> dict[str, Any]:
    return {
        "name": s.name,
        "compute_type": s.compute_type,
        "state": s.state,
        "error": _format_error(s.error),
        "compute_name": getattr(s, "compute_name", None),
        "scoring_uri": getattr(s, "scoring_uri", None),
        "num_replicas": getattr(s, "num_replicas", None),
        "models": [m.id for m in getattr(s, "models", [])],
        "created_time": s.created_time.isoformat() if s.created_time else None,
        "updated_time": s.updated_time.isoformat() if s.updated_time else None,
    }


def _format_error(error: Any) -> str:
    if not error:
        return ""
    return _azure_message(error) if isinstance(error, dict) else str(error)


def _format_errors(errors: Any) -> tuple[str, ...]:
    return tuple(_format_error(e.get("error", e) if isinstance(e, dict) else e) for e in errors or [])


# --- the backend --------------------------------------------------------------------------------------


class AzureMLBackend:
    """Backend for Azure ML AKS compute and AKS web services, signed in as a service principal."""

    name = "azureml"

    def __init__(self, workspace: WorkspaceSpec) -> None:
        self.workspace_spec = workspace

    def _ws(self, cluster: ClusterSpec | None = None) -> Any:
        return _workspace(
            (cluster.workspace if cluster and cluster.workspace else None) or self.workspace_spec
        )

    def _get_compute(self, cluster: ClusterSpec) -> Any | None:
        from azureml.core.compute import ComputeTarget
        from azureml.exceptions import ComputeTargetException

        ws = self._ws(cluster)
        with _azure(f"Reading cluster {cluster.name!r}"):
            try:
                return ComputeTarget(ws, cluster.name)
            except ComputeTargetException as exc:
                if _not_found(exc):
                    return None
                raise

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

    # --- clusters --------------------------------------------------------------------------------------

    def provision_cluster(self, cluster: ClusterSpec) -> None:
        from azureml.core.compute import AksCompute, ComputeTarget

        if self._get_compute(cluster) is not None:
            return  # already created (or being created): a re-delivered task must not create twice
        ws = self._ws(cluster)
        if cluster.attach_resource_id:
            config = AksCompute.attach_configuration(
                resource_id=cluster.attach_resource_id, cluster_purpose=cluster.cluster_purpose or None
            )
            with _azure(f"Attaching AKS cluster {cluster.attach_resource_id!r} as {cluster.name!r}"):
                ComputeTarget.attach(ws, cluster.name, config)
            return
        problems = validate_aks_cluster(
            cluster.vm_size, cluster.node_count, cluster.cluster_purpose, dt.date.today()
        )
        if vm_size_info(cluster.vm_size) is None:  # Azure knows more sizes than Lynx: let Azure decide
            problems = [p for p in problems if not p.startswith("Unknown VM size")]
        if problems:
            raise BackendError(" ".join(problems))
        with _azure(f"Creating AKS cluster {cluster.name!r}"):
            config = AksCompute.provisioning_configuration(
                agent_count=cluster.node_count,
                vm_size=cluster.vm_size,
                cluster_purpose=cluster.cluster_purpose,
                location=cluster.location or None,
            )
            ComputeTarget.create(ws, cluster.name, config)

    def observe_cluster(self, cluster: ClusterSpec) -> ClusterObservation:
        compute = self._get_compute(cluster)
        if compute is None:
            return ClusterObservation(provisioning_state="Deleted")
        if compute.type != "AKS":
            return ClusterObservation(
                provisioning_state=compute.provisioning_state or "Unknown",
                detail=f"{cluster.name} is a {compute.type} compute target, not AKS.",
            )
        info = vm_size_info(compute.agent_vm_size or "")
        nodes = compute.agent_count or 0
        # Kubernetes schedules an A10 partition as one whole nvidia.com/gpu per node.
        per_node = math.ceil(info.gpu_count) if info else 0
        detail = (
            f"{nodes} × {compute.agent_vm_size} ({compute.cluster_purpose}) in {compute.cluster_location}"
        )
        if compute.cluster_fqdn:
            detail += f", {compute.cluster_fqdn}"
        return ClusterObservation(
            provisioning_state=compute.provisioning_state or "Unknown",
            gpu_count=per_node * nodes,
            gpu_kind=info.gpu_kind if info else "",
            errors=_format_errors(compute.provisioning_errors),
            detail=detail,
        )

    def delete_cluster(self, cluster: ClusterSpec) -> None:
        compute = self._get_compute(cluster)
        if compute is None or compute.provisioning_state == "Deleting":
            return
        with _azure(f"Deleting cluster {cluster.name!r}"):
            if compute.is_attached or cluster.attach_resource_id:
                compute.detach()  # an attached cluster belongs to someone else: only let go of it
            else:
                compute.delete()

    # --- services --------------------------------------------------------------------------------------

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
