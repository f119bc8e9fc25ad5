"""`ManagedEndpointBackend`: Azure ML managed online endpoints through azure-ai-ml (SDK v2).

A Lynx deployment is one managed online endpoint of the same name (its scoring URI and keys stay across
updates); each Lynx revision runs as one of its deployments, named `rev<N>`. An update deploys the new
revision beside the live one at 0 % traffic, then gives it the traffic (all, or the canary share the owner
chose), then removes the revision traffic left. A Lynx "cluster" of this target is an instance type in a
workspace: nothing to create on Azure, so provisioning only checks that the region offers it, and each
deployment is billed as instance type × instance count (the deployment's replicas).
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployments.backends.base import (
    STAGE_DONE,
    BackendError,
    ClusterObservation,
    ClusterSpec,
    KeyName,
    ReplicaObservation,
    ServiceObservation,
    ServiceSpec,
    WorkspaceSpec,
)
from deployments.cuda import GPU_BASE_IMAGE, check_gpu_environment
from deployments.vm_sizes import vm_size_info

from ..v1.services import aks_concurrency, aks_server_environment
from .client import arm_get, ml_client
from .errors import azure_v2, not_found

# The CPU image of Azure ML's curated inference base (Ubuntu 22.04); GPU deployments use deployments.cuda's.
CPU_BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
BUSY = ("Creating", "Updating", "Deleting", "Provisioning")
RUNNING_OPERATION = ("Creating", "Updating", "Provisioning")  # a submission of ours may be behind it
LYNX_TAG = "lynx_deployment"  # the endpoint's tag: which Lynx deployment it is (Lynx's row id)
ENDED_BADLY = ("Failed", "Canceled")
LOG_TAIL_LINES = 30


def deployment_name(revision: int) -> str:
    """Azure's name for a Lynx revision's deployment (3–32 characters, a letter first)."""
    return f"rev{revision}"


def revision_of(name: str) -> int | None:
    return int(name[3:]) if name.startswith("rev") and name[3:].isdigit() else None


@dataclass
class Stage:
    """What one submission asked of Azure, kept by the step between observations (`operation_ref`)."""

    stage: str  # endpoint | deployment | traffic | remove
    name: str = ""  # the revision's deployment this operation is about
    url: str = ""  # Azure's operation status URL (Azure-AsyncOperation), when the SDK's poller had one
    percent: int = 100  # traffic: the share `name` gets
    remove: list[str] = field(default_factory=list)  # remove: the deployments being deleted

    def ref(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def parse(cls, ref: str | None) -> Stage | None:
        if not ref:
            return None
        try:
            return cls(**json.loads(ref))
        except (ValueError, TypeError):
            return None


def _polling_url(poller: Any) -> str:
    """Azure's operation URL from the SDK's poller (azure-core's polling method keeps it; there is no public
    accessor), so that a later step reads the operation's result without the poller."""
    try:
        return str(poller.polling_method()._operation.get_polling_url())
    except Exception:  # a poller without an operation resource: the resource's own state is the result
        return ""


class ManagedEndpointBackend:
    """Managed online endpoints in one workspace, signed in as a service principal."""

    name = "azureml_managed"

    def __init__(self, workspace: WorkspaceSpec) -> None:
        self.workspace = workspace

    @property
    def ml(self) -> Any:
        return ml_client(self.workspace)

    # --- clusters: an instance type in a workspace ------------------------------------------------------

    def _offered(self, cluster: ClusterSpec) -> Any:
        location = cluster.location or None
        with azure_v2(f"Listing the VM sizes of {location or 'the workspace region'}"):
            sizes = {size.name.lower(): size for size in self.ml.compute.list_sizes(location=location)}
        size = sizes.get(cluster.vm_size.lower())
        if size is None:
            raise BackendError(
                f"{cluster.vm_size} is not offered in {location or 'the workspace region'} (it may be "
                "retired, or not sold there): choose another instance type."
            )
        return size

    def provision_cluster(self, cluster: ClusterSpec) -> None:
        self._offered(cluster)  # nothing to create: the instances come with each deployment

    def observe_cluster(self, cluster: ClusterSpec) -> ClusterObservation:
        size = self._offered(cluster)
        info = vm_size_info(cluster.vm_size)
        gpus = int(getattr(size, "gpus", 0) or 0)
        kind = info.gpu_kind if info and gpus else ""
        return ClusterObservation(provisioning_state="Succeeded", gpu_count=gpus, gpu_kind=kind)

    def cluster_facts(self, cluster: ClusterSpec, observed: ClusterObservation) -> dict[str, Any]:
        return {"gpu_count": observed.gpu_count, "gpu_kind": observed.gpu_kind}

    def delete_cluster(self, cluster: ClusterSpec) -> None:
        return None  # nothing on Azure: each deployment's endpoint is deleted with the deployment

    # --- endpoints and deployments ----------------------------------------------------------------------

    def _endpoint(self, spec: ServiceSpec) -> Any | None:
        try:
            with azure_v2(f"Reading endpoint {spec.name!r}"):
                return self.ml.online_endpoints.get(spec.name)
        except BackendError as exc:
            if not_found(exc.__cause__ or exc):
                return None
            raise

    def _deployments(self, spec: ServiceSpec) -> dict[str, Any]:
        try:
            with azure_v2(f"Listing the deployments of {spec.name!r}"):
                return {d.name: d for d in self.ml.online_deployments.list(spec.name)}
        except BackendError as exc:
            if not_found(exc.__cause__ or exc):
                return {}
            raise

    def _check(self, spec: ServiceSpec) -> None:
        """Refuse, before anything reaches Azure, what Azure would fail after a long build."""
        if spec.gpu_enabled:
            check = check_gpu_environment(spec.environment_yaml, GPU_BASE_IMAGE)
            if check.errors:
                raise BackendError(" ".join(check.errors))

    def _new_endpoint(self, spec: ServiceSpec) -> Any:
        from azure.ai.ml.entities import ManagedOnlineEndpoint

        return ManagedOnlineEndpoint(
            name=spec.name,
            auth_mode="aml_token" if spec.token_auth_enabled else "key",
            description=f"Lynx deployment {spec.name}",
            tags=self._tags(spec),
        )

    @staticmethod
    def _tags(spec: ServiceSpec) -> dict[str, str]:
        return {"created_by": "lynx", LYNX_TAG: str(spec.lynx_id)}

    @staticmethod
    def _owned(spec: ServiceSpec, endpoint: Any) -> None:
        """Refuse an endpoint of that name that is not this deployment's: Lynx would take over its traffic and
        remove its deployments. (Endpoint names are unique in a region, across workspaces.)"""
        tags = dict(getattr(endpoint, "tags", None) or {})
        if tags.get(LYNX_TAG) != str(spec.lynx_id):
            raise BackendError(
                f"An endpoint named {spec.name} already exists in the workspace and is not this deployment's "
                f"(made outside Lynx, or left by another deployment): choose another name, or delete that "
                "endpoint on Azure first."
            )

    def _new_deployment(self, spec: ServiceSpec, **common: Any) -> Any:
        """The revision's deployment: whole instances of the cluster's instance type."""
        from azure.ai.ml.entities import ManagedOnlineDeployment

        return ManagedOnlineDeployment(
            instance_type=spec.cluster.vm_size, instance_count=spec.replicas, **common
        )

    def deploy_service(self, spec: ServiceSpec) -> str | None:
        """Create the endpoint (key or token auth); the revision's deployment follows once it exists."""
        self._check(spec)
        endpoint = self._endpoint(spec)
        if endpoint is not None:
            self._owned(spec, endpoint)
        if endpoint is not None and endpoint.provisioning_state == "Succeeded":
            return self._submit_deployment(spec)
        if endpoint is not None:
            return Stage("endpoint", deployment_name(spec.revision)).ref()
        with azure_v2(f"Creating endpoint {spec.name!r}"):
            poller = self.ml.online_endpoints.begin_create_or_update(self._new_endpoint(spec))
        return Stage("endpoint", deployment_name(spec.revision), url=_polling_url(poller)).ref()

    def _submit_deployment(self, spec: ServiceSpec) -> str:
        from azure.ai.ml.entities import CodeConfiguration, Environment, Model, OnlineRequestSettings

        name = deployment_name(spec.revision)
        existing = self._deployments(spec).get(name)
        if existing is not None and existing.provisioning_state == "Deleting":
            raise BackendError(
                f"Azure is still removing the earlier {name} of {spec.name}; trying again.", transient=True
            )
        if existing is not None and existing.provisioning_state in RUNNING_OPERATION:
            # Submitted already (a worker died before the step kept the reference): follow it, since a second
            # PUT would be Azure's 409.
            return Stage("deployment", name).ref()
        entry = Path(spec.entry_script).resolve()
        env_vars = {
            "LYNX_MAX_BATCH_SIZE": str(spec.max_batch_size),
            "LYNX_MAX_BATCH_WAIT_MS": str(spec.max_batch_wait_ms),
            **aks_server_environment(spec.max_batch_size),
            **({"LYNX_REQUIRE_GPU": "1"} if spec.gpu_enabled else {}),
        }
        concurrent = aks_concurrency(spec.max_batch_size, spec.max_batch_wait_ms)[
            "replica_max_concurrent_requests"
        ]
        with (
            tempfile.TemporaryDirectory() as tmp,
            azure_v2(f"Deploying revision {spec.revision} to {spec.name!r}"),
        ):
            conda_file = Path(tmp) / "environment.yml"
            conda_file.write_text(spec.environment_yaml)
            deployment = self._new_deployment(
                spec,
                name=name,
                endpoint_name=spec.name,
                model=Model(
                    path=str(spec.model_path), description=f"{spec.model_name} v{spec.model_version}"
                ),
                environment=Environment(
                    image=GPU_BASE_IMAGE if spec.gpu_enabled else CPU_BASE_IMAGE, conda_file=str(conda_file)
                ),
                code_configuration=CodeConfiguration(code=str(entry.parent), scoring_script=entry.name),
                environment_variables=env_vars,
                request_settings=OnlineRequestSettings(max_concurrent_requests_per_instance=concurrent),
                tags={
                    "lynx_revision": str(spec.revision),
                    "lynx_model": f"{spec.model_name}:{spec.model_version}",
                },
            )
            poller = self.ml.online_deployments.begin_create_or_update(deployment)
        return Stage("deployment", name, url=_polling_url(poller)).ref()

    def update_service(self, spec: ServiceSpec) -> str | None:
        """Deploy the new revision beside the live one (at 0 % traffic until its traffic stage)."""
        self._check(spec)
        endpoint = self._endpoint(spec)
        if endpoint is None:
            return self.deploy_service(spec)
        return self._submit_deployment(spec)

    def restart_service(self, spec: ServiceSpec) -> str | None:
        """Azure has no restart. A revision that is fine but gets no traffic gets it back; otherwise the
        revision is deployed again in place (and gets its traffic on the next restart, if still none)."""
        name = deployment_name(spec.revision)
        existing = self._deployments(spec).get(name)
        endpoint = self._endpoint(spec)
        if (
            existing is not None
            and existing.provisioning_state == "Succeeded"
            and endpoint is not None
            and not (endpoint.traffic or {}).get(name)
        ):
            return self._set_traffic(spec, self._split(spec, name, 100), Stage("traffic", name, percent=100))
        return self._submit_deployment(spec)

    def _set_traffic(self, spec: ServiceSpec, traffic: dict[str, int], stage: Stage) -> str:
        endpoint = self._endpoint(spec)
        if endpoint is None:
            raise BackendError(f"The endpoint {spec.name} no longer exists on Azure.")
        if {n: int(v) for n, v in (endpoint.traffic or {}).items()} == traffic or (
            endpoint.provisioning_state in RUNNING_OPERATION
        ):
            # Set already, or being set (a step taken over after its worker died: a second PUT would be a
            # 409); the traffic stage waits until the endpoint shows this split.
            return stage.ref()
        endpoint.traffic = traffic
        with azure_v2(f"Setting the traffic of {spec.name!r}"):
            poller = self.ml.online_endpoints.begin_create_or_update(endpoint)
        stage.url = _polling_url(poller)
        return stage.ref()

    def _split(self, spec: ServiceSpec, name: str, percent: int) -> dict[str, int]:
        """`name` gets `percent`; the deployment that served most before gets the rest; any other gets 0."""
        endpoint = self._endpoint(spec)
        current = dict(endpoint.traffic or {}) if endpoint is not None else {}
        others = sorted(
            (n for n in self._deployments(spec) if n != name and revision_of(n) is not None),
            key=lambda n: (-current.get(n, 0), n),
        )
        if not others:
            return {name: 100}
        return {name: percent, others[0]: 100 - percent, **{n: 0 for n in others[1:]}}

    def shift_traffic(self, spec: ServiceSpec, percent: int) -> str:
        name = deployment_name(spec.revision)
        if name not in self._deployments(spec):
            raise BackendError(f"Revision {spec.revision} of {spec.name} has no deployment on Azure.")
        return self._set_traffic(
            spec, self._split(spec, name, percent), Stage("traffic", name, percent=percent)
        )

    def advance_service(self, spec: ServiceSpec, operation_ref: str) -> str:
        stage = Stage.parse(operation_ref)
        if stage is None:
            raise BackendError(f"Lynx lost track of the operation on {spec.name} ({operation_ref!r}).")
        if stage.stage == "endpoint":
            return self._submit_deployment(spec)
        if stage.stage == "deployment":
            percent = spec.canary_percent if self._deployments(spec).keys() - {stage.name} else 100
            return self._set_traffic(
                spec, self._split(spec, stage.name, percent), Stage("traffic", stage.name, percent=percent)
            )
        if stage.stage == "traffic":
            endpoint = self._endpoint(spec)
            traffic = dict(endpoint.traffic or {}) if endpoint is not None else {}
            idle = sorted(
                n for n in self._deployments(spec) if not traffic.get(n) and revision_of(n) is not None
            )
            removing = Stage("remove", stage.name, remove=idle)
            for name in idle:
                with azure_v2(f"Removing deployment {name} of {spec.name!r}, which no longer gets traffic"):
                    self.ml.online_deployments.begin_delete(name=name, endpoint_name=spec.name)
            return removing.ref()
        raise BackendError(f"Nothing follows the {stage.stage} stage of {spec.name}.")

    def discard_revision(self, spec: ServiceSpec) -> None:
        """Delete the revision's deployment (one that failed), unless it serves: a failed deployment still
        holds its instances, and bills for them."""
        name = deployment_name(spec.revision)
        endpoint = self._endpoint(spec)
        if endpoint is None or (endpoint.traffic or {}).get(name) or name not in self._deployments(spec):
            return
        with azure_v2(f"Removing the failed deployment {name} of {spec.name!r}"):
            self.ml.online_deployments.begin_delete(name=name, endpoint_name=spec.name)

    def delete_service(self, spec: ServiceSpec) -> None:
        if self._endpoint(spec) is None:
            return
        with azure_v2(f"Deleting endpoint {spec.name!r}"):
            self.ml.online_endpoints.begin_delete(name=spec.name)

    # --- observing ---------------------------------------------------------------------------------------

    def _operation_error(self, stage: Stage, what: str) -> str:
        """Azure's words for a failed stage, from its operation when the poller gave one."""
        if stage.url:
            try:
                status = arm_get(self.workspace, stage.url)
            except BackendError:
                status = {}
            error = status.get("error") or {}
            if error.get("message"):
                code = error.get("code", "")
                return f"({code}) {error['message']}" if code else str(error["message"])
        return f"{what} ended {stage.stage} Failed"

    def _logs_tail(self, spec: ServiceSpec, name: str) -> str:
        try:
            with azure_v2(f"Reading the logs of {name}"):
                text = self.ml.online_deployments.get_logs(name=name, endpoint_name=spec.name, lines=200)
        except BackendError:
            return ""
        lines = [line for line in str(text).splitlines() if line.strip()]
        # The script's own exception comes first (the server's wrapper traceback follows it).
        start = next((i for i, line in enumerate(lines) if "Traceback (most recent call last)" in line), None)
        if start is None:
            return "\n".join(lines[-8:])
        tail = lines[start : start + LOG_TAIL_LINES]
        end = next((i for i, line in enumerate(tail) if line.startswith("The above exception")), len(tail))
        return "\n".join(tail[:end])

    def _stage_state(
        self, spec: ServiceSpec, stage: Stage, endpoint: Any, deployments: dict[str, Any]
    ) -> tuple[str, str]:
        """(operation_state, error) of the stage the step follows."""
        if stage.stage in ("endpoint", "traffic"):
            state = endpoint.provisioning_state
            if state in ENDED_BADLY:
                what = "creating the endpoint" if stage.stage == "endpoint" else "setting the traffic"
                return "Failed", self._operation_error(stage, what)
            if state != "Succeeded":
                return "Running", ""
            if stage.stage == "endpoint":
                return STAGE_DONE, ""
            traffic = dict(endpoint.traffic or {})
            if traffic.get(stage.name, 0) != stage.percent:
                return "Running", ""
            idle = [n for n in deployments if not traffic.get(n)]
            return (STAGE_DONE if idle else "Succeeded"), ""
        if stage.stage == "deployment":
            deployment = deployments.get(stage.name)
            if deployment is None:
                return "Failed", f"The deployment {stage.name} is gone from the endpoint {spec.name}."
            state = deployment.provisioning_state
            if state in ENDED_BADLY:
                error = self._operation_error(stage, f"deploying {stage.name}")
                if "ResourceNotReady" in error and (tail := self._logs_tail(spec, stage.name)):
                    error += f"\nThe container's log ends:\n{tail}"
                return "Failed", error
            return (STAGE_DONE if state == "Succeeded" else "Running"), ""
        if stage.stage == "remove":
            left = [n for n in stage.remove if n in deployments]
            stuck = [n for n in left if deployments[n].provisioning_state in ENDED_BADLY]
            if stuck:
                return "Failed", (
                    f"Azure could not remove {', '.join(stuck)} of {spec.name}, which no longer gets "
                    "traffic: it may still bill; delete it from the endpoint on Azure."
                )
            return ("Running" if left else "Succeeded"), ""
        return "", ""

    def observe_service(self, spec: ServiceSpec, operation_ref: str | None = None) -> ServiceObservation:
        endpoint = self._endpoint(spec)
        if endpoint is None:
            return ServiceObservation(state="Missing")
        deployments = self._deployments(spec)
        traffic = {name: int(share) for name, share in (endpoint.traffic or {}).items()}
        serving = [deployments[n] for n, share in traffic.items() if share and n in deployments]
        replicas = tuple(
            ReplicaObservation(
                name=f"{d.name} ({d.instance_count} × {d.instance_type}, {traffic.get(d.name, 0)} %)",
                state={"Succeeded": "ready", "Failed": "dead", "Canceled": "dead"}.get(
                    d.provisioning_state, "starting"
                ),
            )
            for d in sorted(deployments.values(), key=lambda d: d.name)
        )
        if endpoint.provisioning_state in ENDED_BADLY:
            state = "Failed"
        elif endpoint.provisioning_state != "Succeeded" or any(d.provisioning_state in BUSY for d in serving):
            state = "Transitioning"
        elif serving and all(d.provisioning_state == "Succeeded" for d in serving):
            state = "Healthy"
        elif serving:
            state = "Unhealthy"
        elif any(d.provisioning_state in BUSY for d in deployments.values()):
            state = "Transitioning"
        else:
            state = "Unhealthy"
        by_revision = {str(revision_of(n) or n): share for n, share in traffic.items()}
        progress = tuple(
            f"{d.name}: {d.provisioning_state}" for d in sorted(deployments.values(), key=lambda d: d.name)
        ) + ((f"traffic: {', '.join(f'{n} {p} %' for n, p in sorted(traffic.items()))}",) if traffic else ())
        operation_state, error = "", ""
        if state == "Unhealthy" and not serving:
            error = f"No deployment of {spec.name} gets traffic: scoring requests reach nothing."
        stage = Stage.parse(operation_ref)
        if stage is not None:
            operation_state, error = self._stage_state(spec, stage, endpoint, deployments)
        return ServiceObservation(
            state=state,
            scoring_uri=endpoint.scoring_uri or "",
            swagger_uri=getattr(endpoint, "openapi_uri", "") or "",
            replicas=replicas,
            error=error,
            progress=progress,
            operation_state=operation_state,
            traffic=by_revision,
            stats={"traffic": by_revision},
        )

    # --- logs, keys, tokens --------------------------------------------------------------------------------

    def service_logs(self, spec: ServiceSpec, lines: int = 200) -> dict[str, str]:
        logs: dict[str, str] = {}
        for name in sorted(self._deployments(spec)):
            for container in ("inference-server", "storage-initializer"):
                with azure_v2(f"Reading the {container} log of {name}"):
                    logs[f"{name}/{container}"] = str(
                        self.ml.online_deployments.get_logs(
                            name=name, endpoint_name=spec.name, lines=lines, container_type=container
                        )
                    )
        return logs

    def service_keys(self, spec: ServiceSpec) -> tuple[str, str]:
        if spec.token_auth_enabled:
            return "", ""  # an aml_token endpoint has no keys: clients ask for a token
        with azure_v2(f"Reading the keys of {spec.name!r}"):
            keys = self.ml.online_endpoints.get_keys(spec.name)
        return keys.primary_key, keys.secondary_key

    def regenerate_key(self, spec: ServiceSpec, key: KeyName) -> tuple[str, str]:
        with azure_v2(f"Regenerating the {key.lower()} key of {spec.name!r}"):
            # Azure rolls the key out in a few seconds; as v1's regen_key, this one call waits for it.
            self.ml.online_endpoints.begin_regenerate_keys(spec.name, key_type=key.lower()).result(
                timeout=300
            )
        return self.service_keys(spec)

    def service_access_token(self, spec: ServiceSpec) -> tuple[str, dt.datetime | None]:
        with azure_v2(f"Getting an access token for {spec.name!r}"):
            token = self.ml.online_endpoints.get_keys(spec.name)
        access = getattr(token, "access_token", "")
        if not access:
            raise BackendError(f"{spec.name} uses key auth: there is no token to get.")
        refresh = getattr(token, "refresh_after_time_utc", None) or getattr(token, "expiry_time_utc", None)
        when = dt.datetime.fromtimestamp(refresh, dt.UTC) if isinstance(refresh, (int, float)) else None
        return access, when
