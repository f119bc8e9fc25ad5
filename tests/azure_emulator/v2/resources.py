"""The v2 resources the emulator keeps: online endpoints, deployments, ARM operations, assets."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..state import iso_now, new_key

# provisioningState values of an online endpoint or deployment (ARM's words).
BUSY_STATES = ("Creating", "Updating", "Deleting")


@dataclass
class ArmOperation:
    """An ARM long-running operation, polled at `mfeOperationsStatus/{id}` (Azure-AsyncOperation)."""

    id: str
    kind: str  # "endpoint" | "deployment" | "keys"
    endpoint: str
    deployment: str = ""
    action: str = ""  # "create" | "update" | "delete" | "regenerate"
    status: str = "InProgress"  # InProgress | Succeeded | Failed | Canceled
    error: dict[str, Any] | None = None
    started: str = field(default_factory=iso_now)
    ended: str = ""

    def end(self, status: str, error: dict[str, Any] | None = None) -> None:
        if self.status == "InProgress":
            self.status, self.error, self.ended = status, error, iso_now()


@dataclass
class OnlineEndpoint:
    name: str
    location: str
    body: dict[str, Any]  # the last PUT/PATCH, as sent (tags, description, identity, properties …)
    created: str = field(default_factory=iso_now)
    modified: str = ""
    provisioning_state: str = "Creating"
    traffic: dict[str, int] = field(default_factory=dict)
    mirror_traffic: dict[str, int] = field(default_factory=dict)
    primary_key: str = field(default_factory=new_key)
    secondary_key: str = field(default_factory=new_key)
    tokens: dict[str, float] = field(default_factory=dict)  # aml_token → expiry (epoch seconds)
    operation_id: str = ""
    deadline: float = 0.0
    pending: dict[str, Any] = field(default_factory=dict)  # what the running update applies when it ends

    @property
    def auth_mode(self) -> str:
        return str((self.body.get("properties") or {}).get("authMode") or "Key")

    @property
    def compute(self) -> str | None:
        """The Kubernetes compute (ARM id or name) of a Kubernetes online endpoint; None for a managed one."""
        return (self.body.get("properties") or {}).get("compute") or None

    @property
    def is_kubernetes(self) -> bool:
        return bool(self.compute)

    @property
    def busy(self) -> bool:
        return self.provisioning_state in BUSY_STATES

    def begin(self, state: str, operation_id: str, seconds: float) -> None:
        self.provisioning_state, self.operation_id = state, operation_id
        self.modified = iso_now()
        self.deadline = time.monotonic() + seconds


@dataclass
class OnlineDeployment:
    """A managed online deployment and the revision in progress.

    Phases, each ending at `deadline`: "queued" → "building" (the image, skipped when an image of the same
    environment exists) → "provisioning" (instances allocated, image pulled, model and code downloaded by the
    storage initializer) → "starting" (the scoring host runs init(); the liveness probe and the deployment
    timeout watch it) → "" (settled). `host` serves; `new_host` is the revision being started.
    """

    endpoint: str
    name: str
    location: str
    body: dict[str, Any]  # the PUT (sku, properties …), patched by PATCH
    created: str = field(default_factory=iso_now)
    modified: str = ""
    provisioning_state: str = "Creating"
    error: dict[str, Any] | None = None
    operation_id: str = ""
    phase: str = ""
    deadline: float = 0.0
    probe_deadline: float = 0.0  # the liveness probe gives up then
    needs_host: bool = True
    host: Any = None  # hosts.ScoringHost serving
    new_host: Any = None  # hosts.ScoringHost of the revision in progress
    build: Any = None  # build.BuildResult
    front_end: Any = None  # hosts.FrontEnd
    revisions: int = 0
    storage_log: list[str] = field(default_factory=list)  # the storage-initializer container
    server_log: list[str] = field(default_factory=list)  # inference-server lines kept from dead containers
    requests_served: int = 0

    @property
    def properties(self) -> dict[str, Any]:
        return dict(self.body.get("properties") or {})

    @property
    def instance_type(self) -> str:
        return str(self.properties.get("instanceType") or "")

    @property
    def is_kubernetes(self) -> bool:
        return self.properties.get("endpointComputeType") == "Kubernetes"

    @property
    def instance_count(self) -> int:
        sku = self.body.get("sku") or {}
        return int(sku.get("capacity") or 1)

    @property
    def busy(self) -> bool:
        return self.provisioning_state in BUSY_STATES

    def enter(self, phase: str, seconds: float) -> None:
        self.phase, self.deadline = phase, time.monotonic() + seconds


def system_data(created: str, modified: str, principal: str) -> dict[str, str]:
    """ARM's systemData: azure-ai-ml reads every field (it formats lastModifiedAt)."""
    return {
        "createdAt": created,
        "createdBy": principal,
        "createdByType": "Application",
        "lastModifiedAt": modified or created,
        "lastModifiedBy": principal,
        "lastModifiedByType": "Application",
    }
