"""Lynx's domain: compute targets, registered models, web services, operations and the audit log.

Models hold fields, constraints and cheap properties. Every write goes through
`deployments.services`; every status change through `deployments.services.transitions`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from deployments.backends import target_choices, target_traits
from deployments.states import (
    ACTIVE_OPERATION_STATES,
    OperationState,
    ProvisioningState,
    ServiceState,
)

# The target every install has, and a new cluster's default. The others come from settings.LYNX_TARGETS.
LOCAL_TARGET = "local"


class Workspace(models.Model):
    """An Azure ML workspace and the service principal Lynx signs in with (secret encrypted)."""

    name = models.CharField(max_length=64, unique=True)
    subscription_id = models.CharField(max_length=64)
    resource_group = models.CharField(max_length=90)
    workspace_name = models.CharField(max_length=64)
    tenant_id = models.CharField(max_length=64)
    client_id = models.CharField(max_length=64)
    client_secret_encrypted = models.TextField()
    location = models.CharField(max_length=32, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_check_result = models.TextField(blank=True)
    last_check_ok = models.BooleanField(null=True, blank=True)
    # The periodic sync (targets.azureml.services.sync): when it last listed the workspace,
    # and why it could not.
    last_synced_at = models.DateTimeField(null=True, blank=True)
    last_sync_error = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.name


class Cluster(models.Model):
    """A compute target: the local machine, or an AKS cluster in an Azure ML workspace."""

    name = models.CharField(max_length=24)  # Azure's compute names: 3 to 24 characters
    # Which target (settings.LYNX_TARGETS): the choices come from the registry, so adding a target is its
    # package and one line there.
    backend = models.CharField(max_length=16, choices=target_choices, default=LOCAL_TARGET)
    workspace = models.ForeignKey(Workspace, null=True, blank=True, on_delete=models.PROTECT)
    vm_size = models.CharField(max_length=64, blank=True)
    node_count = models.PositiveIntegerField(default=1)
    cluster_purpose = models.CharField(max_length=16, default="DevTest")
    location = models.CharField(max_length=32, blank=True)
    attach_resource_id = models.CharField(max_length=400, blank=True)
    gpu_count = models.FloatField(default=0, help_text="GPUs per node, as the target reports them")
    gpu_kind = models.CharField(max_length=64, blank=True)
    provisioning_state = models.CharField(
        max_length=16, choices=ProvisioningState.choices, default=ProvisioningState.CREATING
    )
    provisioning_errors = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="clusters"
    )
    created_at = models.DateTimeField(default=timezone.now)
    state_changed_at = models.DateTimeField(default=timezone.now)
    deleted_at = models.DateTimeField(null=True, blank=True)
    # "Nothing forgotten running": tear down after a date, or after N idle hours.
    expires_at = models.DateTimeField(null=True, blank=True)
    idle_teardown_hours = models.PositiveIntegerField(null=True, blank=True)
    auto_teardown = models.BooleanField(default=False)
    expiry_warned_at = models.DateTimeField(null=True, blank=True)
    # The owner said "still in use": the idle rule does not fire before this time.
    idle_extended_until = models.DateTimeField(null=True, blank=True)
    # Azure: the AKS cluster's Kubernetes version, read from ARM when it becomes Succeeded (AKS supports about
    # N-2 minors; services should be redeployed after an upgrade).
    kubernetes_version = models.CharField(max_length=32, blank=True)
    # Azure: TLS on the cluster's scoring front end (azureml-fe). "leaf": Microsoft's certificate for
    # <leaf label>…cloudapp.azure.com (renewed by hand since v1's deprecation); "custom": the owner's own
    # certificate for a CNAME, its key encrypted with deployments.crypto and never shown; "": plain http.
    tls_mode = models.CharField(max_length=8, blank=True)
    tls_leaf_domain_label = models.CharField(max_length=63, blank=True)
    tls_cname = models.CharField(max_length=253, blank=True)
    tls_certificate = models.TextField(blank=True)  # PEM, public
    tls_key_encrypted = models.TextField(blank=True)
    tls_updated_at = models.DateTimeField(null=True, blank=True)  # when TLS was last enabled or renewed
    # Azure: the scoring front end on an internal load balancer (a private IP); it needs an own certificate.
    internal_load_balancer = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["name"],
                condition=~Q(provisioning_state=ProvisioningState.DELETED),
                name="cluster_name_unique_while_alive",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_local(self) -> bool:
        """Runs on this host (templates say "local" instead of naming a workspace)."""
        return target_traits(self.backend).on_this_host

    @property
    def has_gpu(self) -> bool:
        return self.gpu_count > 0


class RegisteredModel(models.Model):
    """One version of a registered model; registering the same name again adds a version, as Azure does."""

    name = models.CharField(max_length=64)
    version = models.PositiveIntegerField()
    path = models.CharField(
        max_length=400, help_text="directory under LYNX_MODELS_DIR holding the model files"
    )
    framework = models.CharField(max_length=32, default="TensorFlow")
    description = models.TextField(blank=True)
    labels = models.TextField(blank=True, help_text="one class name per line")
    signature = models.JSONField(default=dict, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    registered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "-version"]
        constraints = [models.UniqueConstraint(fields=["name", "version"], name="model_name_version_unique")]

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def files_dir(self):
        return settings.LYNX_MODELS_DIR / self.path


class Deployment(models.Model):
    """A web service: one model version served by an entry script on a cluster."""

    name = models.CharField(max_length=32)
    cluster = models.ForeignKey(Cluster, on_delete=models.PROTECT, related_name="deployments")
    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="deployments")
    entry_script = models.TextField()
    environment_yaml = models.TextField()
    gpu_enabled = models.BooleanField(default=False)
    gpu_cores = models.PositiveIntegerField(default=0)
    replicas = models.PositiveIntegerField(default=1)
    cpu_cores = models.FloatField(default=1.0)
    memory_gb = models.FloatField(default=1.0)
    autoscale_enabled = models.BooleanField(default=False)
    autoscale_min_replicas = models.PositiveIntegerField(default=1)
    autoscale_max_replicas = models.PositiveIntegerField(default=1)
    autoscale_target_utilization = models.PositiveIntegerField(default=70)
    max_batch_size = models.PositiveIntegerField(default=32)
    max_batch_wait_ms = models.PositiveIntegerField(default=50)
    state = models.CharField(max_length=16, choices=ServiceState.choices, default=ServiceState.TRANSITIONING)
    error = models.TextField(blank=True)
    scoring_uri = models.CharField(max_length=400, blank=True)
    swagger_uri = models.CharField(max_length=400, blank=True)
    primary_key_encrypted = models.TextField(blank=True)
    secondary_key_encrypted = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="deployments"
    )
    created_at = models.DateTimeField(default=timezone.now)
    state_changed_at = models.DateTimeField(default=timezone.now)
    deleted_at = models.DateTimeField(null=True, blank=True)
    last_scored_at = models.DateTimeField(null=True, blank=True)
    stats = models.JSONField(default=dict, blank=True)
    revision = models.PositiveIntegerField(default=1)
    # Local target: the front port, reserved when the deployment is created and reused by every restart, so
    # its scoring URI never changes while it exists. None for Azure, and for deployments from before 0010.
    local_port = models.PositiveIntegerField(null=True, blank=True)
    # Azure: clients send a token from get_access_token() (it expires) instead of a fixed key.
    token_auth_enabled = models.BooleanField(default=False)
    # The deployment this one was moved from (the same revision deployed to another target, such as an AKS
    # service moved to a managed online endpoint): both answer until the owner deletes the old one.
    moved_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="moved_to"
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["name"],
                condition=~Q(state=ServiceState.DELETED),
                name="deployment_name_unique_while_alive",
            ),
            # Two live deployments never share a port; a deleted one gives its port back.
            models.UniqueConstraint(
                fields=["local_port"],
                condition=~Q(state=ServiceState.DELETED) & Q(local_port__isnull=False),
                name="deployment_local_port_unique_while_alive",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class OperationKind(models.TextChoices):
    CLUSTER_PROVISION = "cluster_provision", "Provision cluster"
    CLUSTER_DELETE = "cluster_delete", "Delete cluster"
    SERVICE_DEPLOY = "service_deploy", "Deploy service"
    SERVICE_UPDATE = "service_update", "Update service"
    SERVICE_DELETE = "service_delete", "Delete service"
    SERVICE_KEY_REGENERATE = "service_key_regenerate", "Regenerate key"
    SERVICE_LOGS = "service_logs", "Fetch logs"
    WORKSPACE_TEST = "workspace_test", "Test workspace connection"
    CLUSTER_TLS = "cluster_tls", "Enable or renew TLS"
    SERVICE_TRAFFIC = "service_traffic", "Shift traffic"


class Operation(models.Model):
    """Every long-running action: recorded when asked, advanced by workers in short steps."""

    kind = models.CharField(max_length=32, choices=OperationKind.choices)
    cluster = models.ForeignKey(
        Cluster, null=True, blank=True, on_delete=models.PROTECT, related_name="operations"
    )
    deployment = models.ForeignKey(
        Deployment, null=True, blank=True, on_delete=models.PROTECT, related_name="operations"
    )
    # Azure work that belongs to a workspace rather than to one cluster or deployment (a connection test,
    # fetching a service's logs).
    workspace = models.ForeignKey(
        Workspace, null=True, blank=True, on_delete=models.PROTECT, related_name="operations"
    )
    resource_name = models.CharField(max_length=64)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_by_name = models.CharField(max_length=150)
    state = models.CharField(max_length=16, choices=OperationState.choices, default=OperationState.QUEUED)
    phase = models.CharField(max_length=32, default="submit")
    progress = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    params = models.JSONField(default=dict, blank=True)
    idempotency_key = models.CharField(max_length=64, null=True, blank=True, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    steps = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0, help_text="times a worker was handed this operation")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "lease_until"])]
        constraints = [
            # One operation at a time per resource: acting on a resource mid-operation is refused.
            models.UniqueConstraint(
                fields=["deployment"],
                condition=Q(state__in=ACTIVE_OPERATION_STATES, deployment__isnull=False),
                name="one_active_operation_per_deployment",
            ),
            models.UniqueConstraint(
                fields=["cluster"],
                condition=Q(
                    state__in=ACTIVE_OPERATION_STATES, deployment__isnull=True, cluster__isnull=False
                ),
                name="one_active_operation_per_cluster",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.resource_name}"

    @property
    def is_finished(self) -> bool:
        return self.state in (OperationState.SUCCEEDED, OperationState.FAILED)

    @property
    def duration(self):
        if not self.started_at:
            return None
        return (self.finished_at or timezone.now()) - self.started_at


class ExternalResource(models.Model):
    """What the periodic Azure sync found that Lynx's own rows do not account for.

    `unmanaged`: a compute target or web service exists in the workspace but Lynx did not create it (made in
    the portal, by a notebook, or left behind), so it bills without appearing on the overview. `missing`: Lynx
    believes a cluster or service exists but Azure does not list it (deleted behind Lynx's back). `billing`:
    Lynx gave up on it (Failed) but Azure still lists it, so it bills until deleted. A finding
    stays open while the sync keeps seeing it and is resolved (kept, with `resolved_at`) once it is gone.
    """

    class Finding(models.TextChoices):
        UNMANAGED = "unmanaged", "In Azure, not in Lynx"
        MISSING = "missing", "In Lynx, not in Azure"
        # Lynx gave up on it (Failed) but Azure still has it: it bills until someone deletes it.
        STILL_BILLING = "billing", "Failed in Lynx, still billing in Azure"

    class Kind(models.TextChoices):
        COMPUTE = "compute", "Compute target"
        SERVICE = "service", "Web service"

    workspace = models.ForeignKey(Workspace, on_delete=models.PROTECT, related_name="external_resources")
    finding = models.CharField(max_length=16, choices=Finding.choices)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=64)
    compute_type = models.CharField(max_length=32, blank=True, help_text="Azure's type: AKS, AmlCompute, ...")
    state = models.CharField(
        max_length=32, blank=True, help_text="provisioning_state or service state, as Azure says"
    )
    vm_size = models.CharField(max_length=64, blank=True)
    node_count = models.PositiveIntegerField(null=True, blank=True)
    location = models.CharField(max_length=32, blank=True)
    details = models.JSONField(default=dict, blank=True)
    cluster = models.ForeignKey(Cluster, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    deployment = models.ForeignKey(
        Deployment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["workspace", "kind", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "finding", "kind", "name"],
                condition=Q(resolved_at__isnull=True),
                name="one_open_finding_per_resource",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.name} ({self.get_finding_display()})"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


class OperationLine(models.Model):
    """One progress line, as wait_for_deployment(show_output=True) would print it."""

    operation = models.ForeignKey(Operation, on_delete=models.CASCADE, related_name="lines")
    created_at = models.DateTimeField(default=timezone.now)
    text = models.TextField()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"operation #{self.operation_id}: {self.text[:60]}"


class AuditEvent(models.Model):
    """Append-only: who did what, when, before and after.

    Names are copied so the row outlives the resource.
    """

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # No database FK: deleting a user must never touch the audit trail.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    actor_name = models.CharField(max_length=150, help_text="'system' for the reconciler and schedules")
    action = models.CharField(max_length=64, db_index=True)
    resource_type = models.CharField(max_length=32)
    resource_id = models.BigIntegerField(null=True, blank=True)
    resource_name = models.CharField(max_length=64)
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    message = models.TextField(blank=True)
    # db_default: rows written outside Django (a DBA's INSERT, the db-roles check) need not name it.
    via = models.CharField(
        max_length=80,
        blank=True,
        default="",
        db_default="",
        help_text='what the action came through, when not the pages: "token ci"',
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["resource_type", "resource_id"]),
            models.Index(fields=["actor_name", "created_at"]),
            models.Index(fields=["resource_type", "resource_name"]),
        ]

    def __str__(self) -> str:
        return f"{self.actor_name} {self.action} {self.resource_type} {self.resource_name}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise PermissionError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("audit events are append-only")


class VmPrice(models.Model):
    """The price table: what an hour of one node of a VM size costs. Admins edit it.

    Seeded from Azure's East US pay-as-you-go list; `local` is this machine, free unless an
    admin sets a price.
    """

    vm_size = models.CharField(max_length=64, unique=True)
    vcpus = models.PositiveIntegerField(default=0)
    memory_gb = models.FloatField(default=0)
    gpu_count = models.FloatField(default=0)
    gpu_kind = models.CharField(max_length=64, blank=True)
    price_per_hour = models.DecimalField(max_digits=10, decimal_places=4, null=True, blank=True)
    currency = models.CharField(max_length=3, default="USD")
    retired_on = models.DateField(null=True, blank=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["vm_size"]

    def __str__(self) -> str:
        return self.vm_size


# Where every size's price history starts: before any cluster Lynx knows of.
PRICE_HISTORY_START = datetime(2000, 1, 1, tzinfo=UTC)


class VmPriceChange(models.Model):
    """One step of a size's price over time: `price_per_hour` from `effective_from` until the next step.

    Append-only. A size's first step starts at PRICE_HISTORY_START, so the price a size was added with also
    covers the hours before it was added; an edit starts a step at the moment it is saved, so the hours
    before it keep the price they were run at.
    """

    price = models.ForeignKey(VmPrice, on_delete=models.CASCADE, related_name="changes")
    price_per_hour = models.DecimalField(max_digits=10, decimal_places=4, null=True, blank=True)
    effective_from = models.DateTimeField()
    set_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["price", "effective_from", "id"]
        indexes = [models.Index(fields=["price", "effective_from"])]

    def __str__(self) -> str:
        return f"{self.price_id} from {self.effective_from:%Y-%m-%d %H:%M}: {self.price_per_hour}"


class DeploymentRevision(models.Model):
    """A deployment's configuration as it was deployed; rollback redeploys one without retyping it."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="+")
    entry_script = models.TextField()
    environment_yaml = models.TextField()
    config = models.JSONField(default=dict)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by_name = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["deployment", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["deployment", "number"], name="revision_number_unique")
        ]

    def __str__(self) -> str:
        return f"deployment #{self.deployment_id} revision {self.number}"


class ScoringRun(models.Model):
    """One test-scoring request sent from the dashboard, kept for the deployment's page."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="scoring_runs")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    user_name = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    image_name = models.CharField(max_length=255, blank=True)
    image_format = models.CharField(max_length=16, blank=True)
    thumbnail = models.BinaryField(blank=True, default=b"", help_text="a small PNG of what was sent")
    status_code = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    top_classes = models.JSONField(default=list, blank=True)
    response_excerpt = models.TextField(blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"scoring run #{self.pk} of deployment #{self.deployment_id}"
