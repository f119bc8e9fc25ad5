"""Deployment (web service) actions a person takes."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from deployments.crypto import encrypt, new_key
from deployments.models import Cluster, Deployment, DeploymentRevision, Operation, OperationKind, RegisteredModel
from deployments.states import ProvisioningState, ServiceState

from .audit import actor_name, audit_record
from .operations import Refused, operation_by_idempotency_key, operation_start
from .transitions import deployment_transition

CONFIG_FIELDS = (
    "gpu_enabled",
    "gpu_cores",
    "replicas",
    "cpu_cores",
    "memory_gb",
    "autoscale_enabled",
    "autoscale_min_replicas",
    "autoscale_max_replicas",
    "autoscale_target_utilization",
    "max_batch_size",
    "max_batch_wait_ms",
)


def deployment_config(deployment: Deployment) -> dict:
    """What an audit row records about a deployment's configuration (never its keys)."""
    return {
        "name": deployment.name,
        "cluster": deployment.cluster.name,
        "model": str(deployment.model),
        **{field: getattr(deployment, field) for field in CONFIG_FIELDS},
    }


def revision_record(*, deployment: Deployment, user: AbstractBaseUser | None) -> DeploymentRevision:
    """Keep the configuration being deployed, so it can be rolled back to without retyping it."""
    return DeploymentRevision.objects.create(
        deployment=deployment,
        number=deployment.revision,
        model=deployment.model,
        entry_script=deployment.entry_script,
        environment_yaml=deployment.environment_yaml,
        config={field: getattr(deployment, field) for field in CONFIG_FIELDS},
        created_by=user if user is not None and user.is_authenticated else None,
        created_by_name=actor_name(user),
    )


def deployment_create(
    *,
    user: AbstractBaseUser,
    name: str,
    cluster: Cluster,
    model: RegisteredModel,
    entry_script: str,
    environment_yaml: str,
    idempotency_key: str | None = None,
    **config,
) -> Operation:
    """Record a new web service and start deploying it."""
    if existing := operation_by_idempotency_key(idempotency_key):
        return existing
    unknown = set(config) - set(CONFIG_FIELDS)
    if unknown:
        raise TypeError(f"unknown deployment settings: {sorted(unknown)}")
    cluster.refresh_from_db()
    if cluster.provisioning_state != ProvisioningState.SUCCEEDED:
        raise Refused(f"{cluster.name} is {cluster.provisioning_state}; deploy to a cluster that is Succeeded.")
    if config.get("gpu_enabled") and not cluster.has_gpu:
        raise Refused(f"{cluster.name} has no GPU: switch the GPU off, or choose a cluster with GPU nodes.")
    try:
        with transaction.atomic():
            deployment = Deployment.objects.create(
                name=name,
                cluster=cluster,
                model=model,
                entry_script=entry_script,
                environment_yaml=environment_yaml,
                owner=user,
                # The local target's keys are Lynx's to make; Azure makes its own and we fetch them.
                primary_key_encrypted=encrypt(new_key()) if cluster.is_local else "",
                secondary_key_encrypted=encrypt(new_key()) if cluster.is_local else "",
                **config,
            )
            revision_record(deployment=deployment, user=user)
            audit_record(actor=user, action="deployment.create", resource=deployment, after=deployment_config(deployment))
            return operation_start(
                kind=OperationKind.SERVICE_DEPLOY, user=user, deployment=deployment, cluster=cluster,
                idempotency_key=idempotency_key,
            )
    except IntegrityError as exc:
        if existing := operation_by_idempotency_key(idempotency_key):
            return existing
        raise Refused(f"A deployment named {name} already exists.") from exc


def deployment_delete(
    *, user: AbstractBaseUser | None, deployment: Deployment, idempotency_key: str | None = None, reason: str = ""
) -> Operation:
    """Start deleting a web service: its replicas stop, its record and audit trail stay."""
    if existing := operation_by_idempotency_key(idempotency_key):
        return existing
    deployment.refresh_from_db()
    if deployment.state in (ServiceState.DELETING, ServiceState.DELETED):
        raise Refused(f"{deployment.name} is already {deployment.state.lower()}.")
    with transaction.atomic():
        audit_record(
            actor=user, action="deployment.delete", resource=deployment, before=deployment_config(deployment),
            message=reason,
        )
        operation = operation_start(
            kind=OperationKind.SERVICE_DELETE, user=user, deployment=deployment, cluster=deployment.cluster,
            idempotency_key=idempotency_key,
        )
        deployment_transition(deployment=deployment, to=ServiceState.DELETING, actor=user, message=reason)
    return operation
