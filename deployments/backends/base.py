"""The one small interface every deployment target implements.

Backends receive plain, frozen specs (never ORM objects) so that cloud and process I/O stays
out of the domain code, and the domain code stays out of the backends. A backend call may
block on the network or on a process, so callers (Celery tasks via services) never hold a
database transaction open around one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

KeyName = Literal["Primary", "Secondary"]


class BackendError(Exception):
    """A failure the user should read as-is (Azure's message, or why a process did not start).

    `transient` errors are worth retrying with backoff (HTTP 429/5xx, timeouts); permanent ones
    (quota, bad request, not found, 409 operation in progress) end the operation.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


@dataclass(frozen=True)
class WorkspaceSpec:
    """Where an Azure ML workspace lives and how to sign in to it (secret already decrypted)."""

    subscription_id: str
    resource_group: str
    workspace_name: str
    tenant_id: str
    client_id: str
    client_secret: str


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    vm_size: str = ""
    node_count: int = 1
    cluster_purpose: str = "DevTest"  # Azure ML: "DevTest" | "FastProd"
    location: str = ""
    attach_resource_id: str = ""  # set when attaching an existing AKS cluster instead of creating
    workspace: WorkspaceSpec | None = None
    # TLS on the scoring front end: tls_mode "leaf" (Microsoft's certificate for tls_leaf_domain_label),
    # "custom" (tls_certificate + tls_key PEM for tls_cname; the key decrypted) or "" (plain http).
    tls_mode: str = ""
    tls_leaf_domain_label: str = ""
    tls_cname: str = ""
    tls_certificate: str = ""
    tls_key: str = field(default="", repr=False)
    internal_load_balancer: bool = False


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # Azure's service name rules: 3-32 lowercase letters, digits, dashes
    cluster: ClusterSpec
    model_name: str
    model_version: int
    model_path: Path  # the registered model's files on this machine (a directory)
    entry_script: Path  # score.py on this machine
    environment_yaml: str  # conda specification
    gpu_enabled: bool = False
    gpu_cores: int = 0
    replicas: int = 1
    cpu_cores: float = 0.1
    memory_gb: float = 0.5
    autoscale_enabled: bool = False
    autoscale_min_replicas: int = 1
    autoscale_max_replicas: int = 1
    autoscale_target_utilization: int = 70
    primary_key: str = ""  # local target: Lynx makes the keys; Azure makes its own
    secondary_key: str = ""
    max_batch_size: int = 32
    max_batch_wait_ms: int = 5
    # The deployment's row id: a target tags what it makes with it, so it knows its own from another's.
    lynx_id: int = 0
    # Lynx's revision of the deployment (a traffic_split target names its deployments by it).
    revision: int = 1
    # traffic_split targets: the share of traffic an update gives the new revision at once (100: all of it).
    canary_percent: int = 100
    port: int = 0  # local target: the front port reserved for the deployment (0: none reserved, legacy)
    token_auth_enabled: bool = False  # Azure: clients send a short-lived token instead of a key


@dataclass(frozen=True)
class ClusterObservation:
    provisioning_state: str  # Azure's words: Creating, Succeeded, Failed, Deleting, Deleted (gone), Unknown
    gpu_count: int = 0
    gpu_kind: str = ""
    errors: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True)
class ReplicaObservation:
    name: str
    state: str  # starting | ready | dead
    pid: int | None = None
    restarts: int = 0
    # Kubernetes' lastState.terminated.reason: "OOMKilled", "InitExited", "Error"; "" if it never ended.
    last_termination: str = ""
    gave_up: bool = False  # failed to start too often: the target does not restart it again


@dataclass(frozen=True)
class ServiceObservation:
    # Azure's WebServiceState: Transitioning, Healthy, Unhealthy, Failed, Unschedulable;
    # plus "Missing" when the target has no such service at all.
    state: str
    scoring_uri: str = ""
    swagger_uri: str = ""
    replicas: tuple[ReplicaObservation, ...] = ()
    error: str = ""
    progress: tuple[str, ...] = field(
        default_factory=tuple
    )  # lines like wait_for_deployment(show_output=True)
    stats: dict[str, Any] = field(default_factory=dict)  # {"avg_batch_size": 3.2, "replicas": [...], …}
    # What the target did on its own (a replica OOMKilled and restarted), oldest first: {"id", "message", …};
    # "id" is unique per service, for the reconciler to record each event once.
    events: tuple[dict, ...] = ()
    # The state of the target's own long-running operation, when observe_service was given one (Azure ML's
    # MMS operation: NotStarted, Running, Succeeded, Failed, TimedOut, Cancelled); "" otherwise. A deploy or
    # update ends with that operation's result, not with the service state alone (a failed update can leave
    # the previous revision Healthy).
    operation_state: str = ""
    # traffic_split targets: the share of traffic each revision gets, keyed by Lynx's revision number (a str,
    # as JSON keeps it); a deployment on the target that is no revision of Lynx's keeps its own name.
    traffic: dict[str, int] = field(default_factory=dict)


# operation_state of a staged target operation whose current stage is done: the step calls
# `StagedBackend.advance_service`, which submits the next stage and returns its reference.
STAGE_DONE = "StageSucceeded"


@dataclass(frozen=True)
class TargetTraits:
    """What differs between targets, declared by each (`TRAITS` in targets/<name>/backend.py), so the domain
    asks the target instead of branching on its name."""

    label: str  # what the pages call it
    poll_factor: int  # observe every poll_factor × LYNX_POLL_SECONDS: a cloud call is slow and costs quota
    makes_keys: bool  # the target makes a service's scoring keys (read once Healthy); else Lynx, at creation
    reserves_port: bool  # Lynx reserves the scoring port at creation, so the scoring URI never changes
    on_this_host: bool  # its work goes to the local queue: only the host that runs it can do it
    priced_by_size: bool  # a cluster costs its VM size's price; else the price table's `local` row
    logs_on_page: (
        bool  # the deployment page reads the logs itself (files here); else an operation fetches them
    )
    autoscale: bool  # it can scale replicas by load
    gpus_per_node: bool  # a cluster has nodes, and a GPU count is per node
    removes_failed_clusters: bool  # what failed to provision may still bill: the step removes it
    missing_is_final: bool  # a service missing from the target was deleted behind Lynx's back: no restart
    # How long Lynx follows a provisioning or a deployment before it gives up: at least as long as the target
    # itself allows (Azure: AKS creation takes ~10 min, MMS allows a deployment 20 min), times
    # settings.LYNX_TIMEOUT_SCALE. None: settings.LYNX_DEPLOY_TIMEOUT_SECONDS.
    provision_timeout_s: float | None = None
    deploy_timeout_s: float | None = None
    # A new service Lynx gives up on (still not Healthy at deploy_timeout_s) may still run and bill on the
    # target: the step deletes it, as removes_failed_clusters does for clusters.
    removes_abandoned_services: bool = False
    # False: a cluster is only Lynx's record of where deployments go (Azure ML managed online endpoints: an
    # instance type in a workspace); provisioning checks it with the target, deleting removes nothing there.
    cluster_resource: bool = True
    # True: the target bills each deployment, not the cluster: the cluster's VM size × the deployment's
    # replicas (whole VMs, "instances") for the hours the deployment exists; the cluster row costs nothing.
    billed_per_service: bool = False
    # True: a replica is a whole VM of the cluster's size, so CPU and memory are not asked for.
    whole_vm_replicas: bool = False
    # True: an update deploys the new revision beside the live one and then shifts traffic to it, all at once
    # or as a canary share the owner completes or rolls back (Azure ML v2's blue/green deployments).
    traffic_split: bool = False


class Backend(Protocol):
    """Provision/delete clusters; deploy/update/delete services; observe; logs; keys.

    Every mutating call starts the work and returns; `observe_*` tells how it is going. Every
    call is idempotent: a re-delivered task calling it twice must not create a second resource.
    """

    name: str

    def provision_cluster(self, cluster: ClusterSpec) -> None: ...
    def observe_cluster(self, cluster: ClusterSpec) -> ClusterObservation: ...
    def delete_cluster(self, cluster: ClusterSpec) -> None: ...
    def cluster_facts(self, cluster: ClusterSpec, observed: ClusterObservation) -> dict[str, Any]:
        """What a Succeeded cluster's row records (gpu_count, gpu_kind; for an attached one what it found)."""
        ...

    # deploy/update/restart return a reference to the target's own long-running operation (Azure: the MMS
    # operation's URL), or None when the target has none; the step keeps it and passes it back to
    # observe_service, whose observation then carries that operation's state and error.
    def deploy_service(self, spec: ServiceSpec) -> str | None: ...
    def update_service(self, spec: ServiceSpec) -> str | None: ...
    def observe_service(self, spec: ServiceSpec, operation_ref: str | None = None) -> ServiceObservation: ...
    def delete_service(self, spec: ServiceSpec) -> None: ...
    def restart_service(self, spec: ServiceSpec) -> str | None: ...

    def service_logs(self, spec: ServiceSpec, lines: int = 200) -> dict[str, str]: ...
    def service_keys(self, spec: ServiceSpec) -> tuple[str, str]: ...
    def regenerate_key(self, spec: ServiceSpec, key: KeyName) -> tuple[str, str]: ...
    def service_access_token(self, spec: ServiceSpec) -> tuple[str, datetime | None]:
        """A short-lived token for a token-auth service, and when to ask for a new one (Azure's
        `token_auth_enabled`); a target without token auth raises BackendError."""
        ...


class StagedBackend(Backend, Protocol):
    """A target whose deploys and updates take several submissions, each after the last one ended (Azure ML
    v2: the endpoint, then the deployment, then its traffic, then removing the revision traffic left). Its
    `observe_service` answers STAGE_DONE when the stage named by `operation_ref` ended well; the step then
    calls `advance_service`, which submits the next stage and returns its reference. No call waits."""

    def advance_service(self, spec: ServiceSpec, operation_ref: str) -> str: ...

    def shift_traffic(self, spec: ServiceSpec, percent: int) -> str:
        """Give the revision `spec.revision` `percent` of the traffic and the revision serving beside it the
        rest; at 100 or 0 the one left without traffic is removed in a later stage. Returns the reference."""
        ...

    def discard_revision(self, spec: ServiceSpec) -> None:
        """Start deleting the revision `spec.revision` when it failed and serves no traffic, so it does not
        bill; returns at once."""
        ...
