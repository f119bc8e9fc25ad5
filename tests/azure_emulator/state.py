"""In-memory Azure state: computes, models, services, long-running operations, and armed faults.

Nothing runs on timers: every request first calls `AzureEmulator.tick()`, which moves resources
whose deadline has passed to their next state (Creating → Succeeded, Transitioning → Healthy, …).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .http import Response


def iso_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def arm_error(status: int, code: str, message: str) -> Response:
    """ARM / RP error envelope."""
    return Response(status, {"error": {"code": code, "message": message}})


def mms_error(status: int, code: str, message: str, details: list[dict[str, str]] | None = None) -> Response:
    """Model Management Service error envelope (flat, with statusCode and details)."""
    body: dict[str, Any] = {
        "code": code,
        "statusCode": status,
        "message": message,
        "details": details or [],
        "correlation": {"RequestId": str(uuid.uuid4())},
    }
    return Response(status, body)


def new_key() -> str:
    return secrets.token_urlsafe(24)


@dataclass
class SslConfiguration:
    """An AKS compute's TLS for its scoring front end (azureml-fe), as `sslConfiguration` reports it.

    "Auto": Microsoft's certificate for `<leafDomainLabel><3 random chars>.<region>.cloudapp.azure.com`
    (`fqdn`); "Enabled": the user's own certificate for `cname`; "Disabled": plain http on the front end's IP.
    """

    status: str = "Disabled"
    cert: str | None = None
    key: str | None = None
    cname: str | None = None
    leaf_domain_label: str | None = None
    overwrite_existing_domain: bool = False
    fqdn: str | None = None  # Auto only: the name Azure generated and certified
    renewals: int = 0

    @property
    def enabled(self) -> bool:
        return self.status in ("Auto", "Enabled")

    @property
    def host(self) -> str | None:
        """The host name a client must use for https (the certificate's name), or None without TLS."""
        if self.status == "Auto":
            return self.fqdn
        if self.status == "Enabled":
            return self.cname
        return None

    def json(self) -> dict[str, Any]:
        # Unverified: the generated Auto name is reported as the cname (the SDK has no other field for it).
        return {
            "status": self.status,
            "cert": self.cert,
            "key": None,  # a private key is never read back
            "cname": self.cname if self.status == "Enabled" else self.fqdn,
            "leafDomainLabel": self.leaf_domain_label,
            "overwriteExistingDomain": self.overwrite_existing_domain,
        }


@dataclass
class ExternalAks:
    """An AKS cluster in the subscription made outside Azure ML (in AKS itself), so it can be attached."""

    resource_id: str
    vm_size: str
    agent_count: int
    kubernetes_version: str
    load_balancer_sku: str = "standard"  # AKS dropped Basic on 2025-09-30
    location: str = "eastus"

    @property
    def name(self) -> str:
        return self.resource_id.rstrip("/").rsplit("/", 1)[-1]


@dataclass
class Compute:
    name: str
    location: str
    vm_size: str
    agent_count: int
    cluster_purpose: str
    is_attached: bool
    resource_id: str | None
    created_on: str
    provisioning_state: str = "Creating"
    errors: list[dict[str, Any]] = field(default_factory=list)
    modified_on: str = ""
    deadline: float = 0.0
    # set → the running transition ends Failed with this error; {"status": "Canceled", …} → it ends Canceled
    fail_with: dict[str, Any] | None = None
    compute_type: str = "AKS"  # "AKS" | "AmlCompute" | "ComputeInstance" | "Kubernetes"
    kubernetes_version: str | None = None
    ssl: SslConfiguration = field(default_factory=SslConfiguration)
    properties_null: bool = (
        False  # the RP answers `properties.properties: null` (as it does for some computes)
    )
    operation_id: str = ""  # the ARM operation of the transition in progress
    # KubernetesCompute (v2) only: the namespace its workloads run in, its default instance type, and the
    # instance types (the AzureML extension's InstanceType CRDs) as the RP reports them; None: the RP's
    # example (defaultinstancetype only).
    namespace: str = "default"
    default_instance_type: str = "defaultinstancetype"
    instance_types: dict[str, Any] | None = None

    def begin(self, state: str, seconds: float) -> None:
        self.provisioning_state = state
        self.deadline = time.monotonic() + seconds
        self.modified_on = iso_now()

    @property
    def busy(self) -> bool:
        return self.provisioning_state in ("Creating", "Updating", "Deleting")


@dataclass
class RegisteredModel:
    name: str
    version: int
    url: str
    tags: dict[str, str]
    properties: dict[str, str]
    description: str | None
    created_time: str

    @property
    def id(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass
class Service:
    """An AKS web service and the revision in progress.

    A create or update goes through phases, each ending at `deadline`: "queued" (the operation is NotStarted)
    → "building" (the image build, skipped when the environment's image exists) → "rolling_out" (pods
    pulled and scheduled) → "starting" (the scoring host runs init(); `deadline` is MMS's deployment timeout)
    → "" (settled). `host` serves; `new_host` is the revision being started, which replaces it when ready.
    """

    name: str
    payload: dict[str, Any]  # the create request, patched by updates
    created_time: str
    primary_key: str
    secondary_key: str
    state: str = "Transitioning"
    error: dict[str, Any] | None = None
    updated_time: str = ""
    deadline: float = 0.0
    outcome: str = "Healthy"  # the state the current transition ends in
    outcome_error: dict[str, Any] | None = None
    operation_id: str = ""
    deleting: bool = False
    log_lines: list[str] = field(default_factory=list)
    requests_served: int = 0
    phase: str = ""
    needs_host: bool = True  # the revision in progress runs new code, models or environment
    host: Any = None  # hosts.ScoringHost serving requests
    new_host: Any = None  # hosts.ScoringHost of the revision in progress
    build: Any = None  # build.BuildResult of the revision in progress (or the last one)
    front_end: Any = None  # hosts.FrontEnd
    tokens: dict[str, float] = field(default_factory=dict)  # access token → expiry (epoch seconds)
    revisions: int = 0

    def begin(
        self,
        operation_id: str,
        *,
        needs_host: bool = True,
        outcome: str = "Healthy",
        outcome_error: dict[str, Any] | None = None,
    ) -> None:
        self.state = "Transitioning"
        self.error = None
        self.phase, self.deadline = "queued", 0.0
        self.needs_host = needs_host
        self.outcome, self.outcome_error = outcome, outcome_error
        self.operation_id = operation_id
        self.updated_time = iso_now()

    def enter(self, phase: str, seconds: float) -> None:
        self.phase, self.deadline = phase, time.monotonic() + seconds

    @property
    def busy(self) -> bool:
        return self.state == "Transitioning" or self.deleting


@dataclass
class Operation:
    id: str
    kind: str  # "compute" | "service"
    target: str
    deadline: float
    operation_type: str = ""
    state: str = "Running"  # MMS words; ARM status maps Running → InProgress
    error: dict[str, Any] | None = None
    created_time: str = field(default_factory=iso_now)
    sub_operation: str = ""  # MMS's operationDetails.subOperationType: BuildEnvironment | DeployService
    log_uri: str = ""  # operationLog: the image build's log (a blob URI)


@dataclass
class Injection:
    method: str
    path_pattern: re.Pattern[str]
    status: int
    body: Any
    remaining: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Faults:
    """Failures armed by tests or the control API. Each `take_*` consumes one."""

    secret_expired: bool = False
    deny_access: bool = False
    quota: dict[str, str] = field(default_factory=dict)  # cluster name or "*" → quota family
    unschedulable: dict[str, str] = field(default_factory=dict)  # service name or "*" → scheduler message
    cluster_failures: dict[str, dict[str, Any]] = field(default_factory=dict)  # async provisioning failure
    injections: list[Injection] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _take(self, table: dict[str, Any], name: str) -> Any:
        with self.lock:
            for key in (name, "*"):
                if key in table:
                    return table.pop(key)
        return None

    def take_quota(self, name: str) -> str | None:
        return self._take(self.quota, name)

    def take_unschedulable(self, name: str) -> str | None:
        return self._take(self.unschedulable, name)

    def take_cluster_failure(self, name: str) -> dict[str, Any] | None:
        return self._take(self.cluster_failures, name)

    def take_injection(self, method: str, path: str) -> Injection | None:
        with self.lock:
            for injection in self.injections:
                if injection.method in (method, "*") and injection.path_pattern.search(path):
                    injection.remaining -= 1
                    if injection.remaining <= 0:
                        self.injections.remove(injection)
                    return injection
        return None

    def clear(self) -> None:
        with self.lock:
            self.secret_expired = self.deny_access = False
            self.quota.clear()
            self.unschedulable.clear()
            self.cluster_failures.clear()
            self.injections.clear()
