"""The only code that changes a status. Each transition is a compare-and-set update checked
against the state machine in `deployments.states`, plus an audit event in the same transaction.
Zero rows updated means somebody else moved the row first: the caller is told, nothing changes.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from deployments.models import Cluster, Deployment, Operation
from deployments.states import (
    CLUSTER_TRANSITIONS,
    OPERATION_TRANSITIONS,
    SERVICE_TRANSITIONS,
    OperationState,
    ProvisioningState,
    ServiceState,
)

from .audit import audit_record


class TransitionError(Exception):
    """The requested move is not in the state machine, or the row was no longer in the expected state."""


def _check(machine: dict[str, frozenset[str]], old: str, new: str, what: str) -> None:
    if new not in machine.get(old, frozenset()):
        raise TransitionError(f"{what} cannot go from {old} to {new}")


def cluster_transition(
    *, cluster: Cluster, to: str, actor: AbstractBaseUser | None = None, message: str = "", **fields
) -> Cluster:
    old = cluster.provisioning_state
    _check(CLUSTER_TRANSITIONS, old, to, f"cluster {cluster.name}")
    now = timezone.now()
    extra = {"deleted_at": now} if to == ProvisioningState.DELETED else {}
    with transaction.atomic():
        updated = Cluster.objects.filter(pk=cluster.pk, provisioning_state=old).update(
            provisioning_state=to, state_changed_at=now, **extra, **fields
        )
        if not updated:
            raise TransitionError(f"cluster {cluster.name} is no longer {old}")
        audit_record(
            actor=actor,
            action="cluster.state",
            resource=cluster,
            before={"provisioning_state": old},
            after={
                "provisioning_state": to,
                **{k: v for k, v in fields.items() if k != "provisioning_errors"},
            },
            message=message,
        )
    cluster.refresh_from_db()
    return cluster


def deployment_transition(
    *, deployment: Deployment, to: str, actor: AbstractBaseUser | None = None, message: str = "", **fields
) -> Deployment:
    old = deployment.state
    _check(SERVICE_TRANSITIONS, old, to, f"service {deployment.name}")
    now = timezone.now()
    extra = {"deleted_at": now} if to == ServiceState.DELETED else {}
    with transaction.atomic():
        updated = Deployment.objects.filter(pk=deployment.pk, state=old).update(
            state=to, state_changed_at=now, **extra, **fields
        )
        if not updated:
            raise TransitionError(f"service {deployment.name} is no longer {old}")
        audit_record(
            actor=actor,
            action="deployment.state",
            resource=deployment,
            before={"state": old},
            after={"state": to, **{k: v for k, v in fields.items() if k in ("scoring_uri", "replicas")}},
            message=message,
        )
    deployment.refresh_from_db()
    return deployment


def operation_transition(*, operation: Operation, to: str, error: str = "") -> Operation:
    old = operation.state
    _check(OPERATION_TRANSITIONS, old, to, f"operation {operation.pk}")
    now = timezone.now()
    fields: dict = {"state": to}
    if to == OperationState.RUNNING:
        fields["started_at"] = now
    if to in (OperationState.SUCCEEDED, OperationState.FAILED):
        fields["finished_at"] = now
        fields["progress"] = 100
    if error:
        fields["error"] = error
    with transaction.atomic():
        if not Operation.objects.filter(pk=operation.pk, state=old).update(**fields):
            raise TransitionError(f"operation {operation.pk} is no longer {old}")
        if to != OperationState.RUNNING:
            audit_record(
                actor=None,
                action=f"operation.{to}",
                resource=operation,
                before={"state": old},
                after={"state": to},
                message=error,
            )
    operation.refresh_from_db()
    return operation
