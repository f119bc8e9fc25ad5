"""Deployment (web service) actions a person takes."""

from __future__ import annotations

import random
import socket
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from deployments.backends import target_traits
from deployments.backends.base import KeyName
from deployments.crypto import decrypt, encrypt, new_key
from deployments.models import (
    Cluster,
    Deployment,
    DeploymentRevision,
    Operation,
    OperationKind,
    RegisteredModel,
)
from deployments.states import (
    ACTIVE_OPERATION_STATES,
    LIVE_SERVICE_STATES,
    ProvisioningState,
    ServiceState,
)

from .audit import actor_name, audit_record
from .clusters import cluster_delete, cluster_lock
from .operations import Refused, operation_by_idempotency_key, operation_start
from .specs import backend_for, service_spec
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
    "token_auth_enabled",
)


def deployment_config(deployment: Deployment) -> dict:
    """What an audit row records about a deployment's configuration (never its keys)."""
    return {
        "name": deployment.name,
        "cluster": deployment.cluster.name,
        "model": str(deployment.model),
        **{field: getattr(deployment, field) for field in CONFIG_FIELDS},
    }


def revision_record(*, deployment: Deployment, user: User | None) -> DeploymentRevision:
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


# Ports below the kernel's ephemeral range when it can be read (Linux: 32768-60999): an outgoing connection
# never takes one of these as its local port, so a reserved port stays free while its deployment is stopped.
LOCAL_PORT_RANGE = (20000, 32767)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int) -> bool:
    """Nobody listens on the port: a bind with SO_REUSEADDR, as the supervisor's, would succeed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def local_port_reserve() -> int:
    """A port for a new local deployment's front proxy: free now, outside the ephemeral range, and reserved
    by no other live deployment (the database's partial unique index settles a race between two creates)."""
    low, high = LOCAL_PORT_RANGE
    ephemeral = _ephemeral_range()
    taken = set(
        Deployment.objects.exclude(state=ServiceState.DELETED)
        .filter(local_port__isnull=False)
        .values_list("local_port", flat=True)
    )
    candidates = [p for p in range(low, high + 1) if p not in taken and not ephemeral[0] <= p <= ephemeral[1]]
    random.shuffle(candidates)
    for port in candidates[:200]:
        if _bindable(port):
            return port
    raise Refused("No free port is left for a local deployment's scoring URI; delete a deployment first.")


def deployment_create(
    *,
    user: User,
    name: str,
    cluster: Cluster,
    model: RegisteredModel,
    entry_script: str,
    environment_yaml: str,
    idempotency_key: str | None = None,
    moved_from: Deployment | None = None,
    **config,
) -> Operation:
    """Record a new web service and start deploying it."""
    if existing := operation_by_idempotency_key(idempotency_key):
        return existing
    unknown = set(config) - set(CONFIG_FIELDS)
    if unknown:
        raise TypeError(f"unknown deployment settings: {sorted(unknown)}")
    for attempt in range(5):  # another create may take the chosen port first: choose again
        try:
            return _deployment_create(
                user=user,
                name=name,
                cluster=cluster,
                model=model,
                entry_script=entry_script,
                environment_yaml=environment_yaml,
                idempotency_key=idempotency_key,
                config=config,
                moved_from=moved_from,
            )
        except IntegrityError as exc:
            if existing := operation_by_idempotency_key(idempotency_key):
                return existing
            live = Deployment.objects.exclude(state=ServiceState.DELETED)
            if attempt == 4 or live.filter(name=name).exists():
                raise Refused(f"A deployment named {name} already exists.") from exc
    raise AssertionError("unreachable")


def _deployment_create(
    *,
    user: User,
    name: str,
    cluster: Cluster,
    model: RegisteredModel,
    entry_script: str,
    environment_yaml: str,
    idempotency_key: str | None,
    config: dict,
    moved_from: Deployment | None = None,
) -> Operation:
    with transaction.atomic():
        # The cluster's row lock orders this against cluster_delete, which takes the same lock: either
        # the delete sees this deployment and refuses, or this sees Deleting and refuses.
        cluster = cluster_lock(cluster)
        if cluster.provisioning_state != ProvisioningState.SUCCEEDED:
            raise Refused(
                f"{cluster.name} is {cluster.provisioning_state}; deploy to a cluster that is Succeeded."
            )
        if config.get("gpu_enabled") and not cluster.has_gpu:
            raise Refused(
                f"{cluster.name} has no GPU: switch the GPU off, or choose a cluster with GPU nodes."
            )
        traits = target_traits(cluster.backend)
        deployment = Deployment.objects.create(
            name=name,
            cluster=cluster,
            model=model,
            entry_script=entry_script,
            environment_yaml=environment_yaml,
            owner=user,
            # A target that makes no keys of its own gets Lynx's, and one that serves here a fixed port.
            primary_key_encrypted="" if traits.makes_keys else encrypt(new_key()),
            secondary_key_encrypted="" if traits.makes_keys else encrypt(new_key()),
            local_port=local_port_reserve() if traits.reserves_port else None,
            moved_from=moved_from,
            **config,
        )
        revision_record(deployment=deployment, user=user)
        audit_record(
            actor=user,
            action="deployment.create",
            resource=deployment,
            after=deployment_config(deployment),
            message=f"moved from {moved_from.name} (revision {moved_from.revision})" if moved_from else "",
        )
        if moved_from is not None:
            audit_record(
                actor=user,
                action="deployment.move",
                resource=moved_from,
                after={"to": name, "cluster": cluster.name, "target": traits.label},
                message=f"revision {moved_from.revision} deployed to {cluster.name} as {name}; "
                "both answer until this one is deleted",
            )
        return operation_start(
            kind=OperationKind.SERVICE_DEPLOY,
            user=user,
            deployment=deployment,
            cluster=cluster,
            idempotency_key=idempotency_key,
        )


def deployment_delete(
    *,
    user: User | None,
    deployment: Deployment,
    idempotency_key: str | None = None,
    reason: str = "",
) -> Operation:
    """Start deleting a web service: its replicas stop, its record and audit trail stay."""
    if existing := operation_by_idempotency_key(idempotency_key):
        return existing
    deployment.refresh_from_db()
    if deployment.state in (ServiceState.DELETING, ServiceState.DELETED):
        raise Refused(f"{deployment.name} is already {deployment.state.lower()}.")
    with transaction.atomic():
        audit_record(
            actor=user,
            action="deployment.delete",
            resource=deployment,
            before=deployment_config(deployment),
            message=reason,
        )
        operation = operation_start(
            kind=OperationKind.SERVICE_DELETE,
            user=user,
            deployment=deployment,
            cluster=deployment.cluster,
            idempotency_key=idempotency_key,
        )
        deployment_transition(deployment=deployment, to=ServiceState.DELETING, actor=user, message=reason)
    return operation


# A live service can be rolled to a new configuration; a Failed one can be repaired the same way.
UPDATABLE_STATES = (ServiceState.HEALTHY, ServiceState.UNHEALTHY, ServiceState.FAILED)
KEY_NAMES: tuple[KeyName, ...] = ("Primary", "Secondary")


def _changes(
    deployment: Deployment, model: RegisteredModel, entry_script: str, environment_yaml: str, config: dict
):
    changed = [field for field in CONFIG_FIELDS if config[field] != getattr(deployment, field)]
    if model.pk != deployment.model_id:
        changed.append("model")
    if entry_script != deployment.entry_script:
        changed.append("entry_script")
    if environment_yaml != deployment.environment_yaml:
        changed.append("environment")
    return changed


def deployment_update(
    *,
    user: User,
    deployment: Deployment,
    model: RegisteredModel | None = None,
    entry_script: str | None = None,
    environment_yaml: str | None = None,
    idempotency_key: str | None = None,
    action: str = "deployment.update",
    message: str = "",
    canary_percent: int = 100,
    **config,
) -> Operation:
    """Roll a deployment to a new configuration as one SERVICE_UPDATE operation.

    The new configuration becomes the next revision; every earlier one stays, so it can be rolled back to.
    On the local target the supervisor starts the new replicas and waits until they are ready before it
    stops the old ones, so scoring does not fail during the update. Settings not given stay as they are.
    """
    if existing := operation_by_idempotency_key(idempotency_key):
        return existing
    unknown = set(config) - set(CONFIG_FIELDS)
    if unknown:
        raise TypeError(f"unknown deployment settings: {sorted(unknown)}")
    deployment.refresh_from_db()
    if deployment.state not in UPDATABLE_STATES:
        raise Refused(
            f"{deployment.name} is {deployment.state}: "
            "only a Healthy, Unhealthy or Failed deployment can be updated."
        )
    if canary_percent != 100:
        if not target_traits(deployment.cluster.backend).traffic_split:
            raise Refused(
                f"{deployment.cluster.get_backend_display()} replaces a deployment's replicas in place: "
                "a canary share needs a target that splits traffic (Azure ML managed endpoints)."
            )
        if not 1 <= canary_percent <= 99:
            raise Refused("A canary gets 1 to 99 % of the traffic (100: all of it at once).")
        if deployment.state != ServiceState.HEALTHY:
            raise Refused(
                f"{deployment.name} is {deployment.state}: a canary needs a Healthy revision beside it."
            )
    model = model or deployment.model
    entry_script = deployment.entry_script if entry_script is None else entry_script
    environment_yaml = deployment.environment_yaml if environment_yaml is None else environment_yaml
    wanted = {field: config.get(field, getattr(deployment, field)) for field in CONFIG_FIELDS}
    if wanted["gpu_enabled"] and not deployment.cluster.has_gpu:
        raise Refused(f"{deployment.cluster.name} has no GPU: switch the GPU off.")
    changed = _changes(deployment, model, entry_script, environment_yaml, wanted)
    # A Failed deployment submitted unchanged is deployed again as it is (its cause may have been outside
    # it: a restart, a full disk); a live one unchanged has nothing to do.
    retry = not changed and deployment.state == ServiceState.FAILED
    if not changed and not retry:
        raise Refused(
            f"Nothing to change: that is {deployment.name}'s current configuration "
            f"(revision {deployment.revision})."
        )
    before = {**deployment_config(deployment), "revision": deployment.revision}
    try:
        with transaction.atomic():
            if retry:
                number = deployment.revision
            else:
                number = (deployment.revisions.aggregate(n=Max("number"))["n"] or 0) + 1
            # First, so that a deployment busy with another operation is refused before anything changes.
            operation = operation_start(
                kind=OperationKind.SERVICE_UPDATE,
                user=user,
                deployment=deployment,
                cluster=deployment.cluster,
                idempotency_key=idempotency_key,
                params={
                    "revision": number,
                    "previous_revision": before["revision"],
                    "changed": changed,
                    **({"canary_percent": canary_percent} if canary_percent != 100 else {}),
                },
            )
            if not retry:
                Deployment.objects.filter(pk=deployment.pk).update(
                    model=model,
                    entry_script=entry_script,
                    environment_yaml=environment_yaml,
                    revision=number,
                    **wanted,
                )
                deployment.refresh_from_db()
                revision_record(deployment=deployment, user=user)
            audit_record(
                actor=user,
                action=action,
                resource=deployment,
                before=before,
                after={**deployment_config(deployment), "revision": number},
                message=(
                    message
                    or (
                        f"retry of revision {number} as it is"
                        if retry
                        else f"revision {number}: {', '.join(changed)} changed"
                    )
                )
                + (f"; canary: {canary_percent} % of the traffic at first" if canary_percent != 100 else ""),
            )
            deployment_transition(
                deployment=deployment,
                to=ServiceState.TRANSITIONING,
                actor=user,
                message=f"deploying revision {number} again" if retry else f"updating to revision {number}",
            )
    except IntegrityError as exc:
        if existing := operation_by_idempotency_key(idempotency_key):
            return existing
        raise Refused(f"{deployment.name} is being changed by someone else; try again.") from exc
    return operation


def deployment_rollback(
    *, user: User, deployment: Deployment, number: int, idempotency_key: str | None = None
) -> Operation:
    """Update a deployment to an earlier revision's configuration.

    The configuration is the model, entry script, environment and settings.

    A rollback is an update like any other: it becomes a new revision, and the one rolled away from stays.
    """
    revision = deployment.revisions.select_related("model").filter(number=number).first()
    if revision is None:
        raise Refused(f"{deployment.name} has no revision {number}.")
    config = {field: value for field, value in revision.config.items() if field in CONFIG_FIELDS}
    return deployment_update(
        user=user,
        deployment=deployment,
        model=revision.model,
        entry_script=revision.entry_script,
        environment_yaml=revision.environment_yaml,
        idempotency_key=idempotency_key,
        action="deployment.rollback",
        message=f"rollback to revision {number}",
        **config,
    )


def _check_key_name(key: str) -> KeyName:
    for name in KEY_NAMES:
        if key == name:
            return name
    raise Refused(f"There is no {key!r} key: choose Primary or Secondary.")


def deployment_key_reveal(*, user: User, deployment: Deployment, key: str) -> str:
    """Return one scoring key in full, and record who saw it."""
    key = _check_key_name(key)
    deployment.refresh_from_db()
    if deployment.state == ServiceState.DELETED:
        raise Refused(f"{deployment.name} is deleted; its keys are gone.")
    encrypted = deployment.primary_key_encrypted if key == "Primary" else deployment.secondary_key_encrypted
    secret = decrypt(encrypted)
    if not secret:
        raise Refused(
            f"{deployment.name} has no {key.lower()} key yet; it appears once the deployment is Healthy."
        )
    with transaction.atomic():
        audit_record(
            actor=user,
            action="deployment.key_reveal",
            resource=deployment,
            after={"key": key},
            message=f"{key} key revealed",
        )
    return secret


def deployment_key_regenerate(
    *, user: User, deployment: Deployment, key: str, idempotency_key: str | None = None
) -> Operation:
    """Replace one scoring key, in a worker; the old key stops working once the operation has succeeded.

    Both targets alike: Azure makes the new key itself (`regen_key`, which blocks while it rolls it out), the
    local target makes one and rewrites the key file its front proxy re-reads. A worker does it because only
    the host that runs the replicas (the local queue's worker) can write their key file, and a web process
    should not wait on Azure.
    """
    if existing := operation_by_idempotency_key(idempotency_key):
        return existing
    key = _check_key_name(key)
    deployment.refresh_from_db()
    if deployment.state not in UPDATABLE_STATES:
        raise Refused(f"{deployment.name} is {deployment.state}; regenerate its keys once it is Healthy.")
    if deployment.operations.filter(state__in=ACTIVE_OPERATION_STATES).exists():
        # A deploy's next step writes the key file from the row it read: it would undo this.
        raise Refused(
            f"{deployment.name} has an operation in progress; regenerate its key once it has finished."
        )
    with transaction.atomic():
        audit_record(
            actor=user,
            action="deployment.key_regenerate",
            resource=deployment,
            after={"key": key},
            message=f"{key} key regeneration requested; the old {key.lower()} key stops working",
        )
        return operation_start(
            kind=OperationKind.SERVICE_KEY_REGENERATE,
            user=user,
            deployment=deployment,
            cluster=deployment.cluster,
            params={"key": key},
            idempotency_key=idempotency_key,
        )


def deployment_logs(deployment: Deployment, lines: int = 100) -> dict[str, str] | None:
    """The last lines of each replica's log (local target: files on this machine). None for Azure, whose
    logs are a network call a page refresh must not make."""
    if not target_traits(deployment.cluster.backend).logs_on_page or deployment.state == ServiceState.DELETED:
        return None
    try:
        return backend_for(deployment.cluster).service_logs(service_spec(deployment), lines=lines)
    except OSError as exc:
        # In the compose stack the replicas' state belongs to the worker container's root user, which the
        # web container's user cannot read: say so on the page instead of failing it.
        return {"lynx": f"The replica logs cannot be read from this web process ({exc.strerror or exc})."}


# --- traffic (targets that split it between revisions: Azure ML managed endpoints) --------------------------


def canary_of(deployment: Deployment) -> tuple[int, int] | None:
    """(share of the deployment's revision, the revision serving the rest) while a canary runs; else None."""
    traffic = {str(k): int(v) for k, v in (deployment.stats.get("traffic") or {}).items()}
    mine = traffic.get(str(deployment.revision))
    if mine is None or not 0 < mine < 100:
        return None
    others = [(share, rev) for rev, share in traffic.items() if rev != str(deployment.revision) and share]
    if not others or not max(others)[1].isdigit():
        return None
    return mine, int(max(others)[1])


def deployment_traffic(
    *, user: User, deployment: Deployment, complete: bool, idempotency_key: str | None = None
) -> Operation:
    """End a canary: give the deployment's revision all the traffic (complete), or give it all back to the
    revision before (roll back, which makes that revision the deployment's configuration again). The
    revision left without traffic is then removed, so it stops billing."""
    if existing := operation_by_idempotency_key(idempotency_key):
        return existing
    deployment.refresh_from_db()
    if not target_traits(deployment.cluster.backend).traffic_split:
        raise Refused(f"{deployment.cluster.get_backend_display()} does not split traffic between revisions.")
    canary = canary_of(deployment)
    if canary is None or deployment.state != ServiceState.HEALTHY:
        raise Refused(f"{deployment.name} has no canary to complete or roll back.")
    share, previous = canary
    percent = 100 if complete else 0
    what = (
        f"canary completed: revision {deployment.revision} gets all the traffic (was {share} %)"
        if complete
        else f"canary rolled back: revision {previous} gets all the traffic again; "
        f"revision {deployment.revision} is removed"
    )
    try:
        with transaction.atomic():
            operation = operation_start(
                kind=OperationKind.SERVICE_TRAFFIC,
                user=user,
                deployment=deployment,
                cluster=deployment.cluster,
                idempotency_key=idempotency_key,
                params={"percent": percent, "revision": deployment.revision, "previous_revision": previous},
            )
            audit_record(
                actor=user,
                action="deployment.traffic",
                resource=deployment,
                before={"traffic": deployment.stats.get("traffic") or {}},
                after={"percent": percent, "revision": deployment.revision},
                message=what,
            )
    except IntegrityError as exc:
        if existing := operation_by_idempotency_key(idempotency_key):
            return existing
        raise Refused(f"{deployment.name} is being changed by someone else; try again.") from exc
    return operation


def deployment_move(
    *, user: User, deployment: Deployment, cluster: Cluster, name: str, idempotency_key: str | None = None
) -> Operation:
    """Deploy a deployment's current revision to another target (an AKS service to a managed online endpoint,
    Azure ML v1 to v2) as a new deployment that remembers where it came from. Both answer until the owner
    switches clients over and deletes the old one from its page."""
    if existing := operation_by_idempotency_key(idempotency_key):
        return existing
    deployment.refresh_from_db()
    if deployment.state != ServiceState.HEALTHY:
        raise Refused(f"{deployment.name} is {deployment.state}: move a Healthy deployment.")
    if cluster.backend == deployment.cluster.backend:
        raise Refused(
            f"{cluster.name} is on {cluster.get_backend_display()} too: choose a cluster of another target."
        )
    moving = deployment.moved_to.exclude(state=ServiceState.DELETED).first()
    if moving is not None:
        raise Refused(f"{deployment.name} is already moved to {moving.name}.")
    config = {field: getattr(deployment, field) for field in CONFIG_FIELDS}
    if not target_traits(cluster.backend).autoscale and config["autoscale_enabled"]:
        # The new target scales by a fixed count: as many replicas as the autoscaler allowed at most.
        config.update(autoscale_enabled=False, replicas=deployment.autoscale_max_replicas)
    return deployment_create(
        user=user,
        name=name,
        cluster=cluster,
        model=deployment.model,
        entry_script=deployment.entry_script,
        environment_yaml=deployment.environment_yaml,
        idempotency_key=idempotency_key,
        moved_from=deployment,
        **config,
    )


# --- several at once: a selection on the overview, a cluster with its deployments ---------------------------

# What "delete these" deletes: a deployment that runs or failed. One already going is waited for, not asked
# again.
DELETABLE_STATES = (*LIVE_SERVICE_STATES, ServiceState.FAILED)


@dataclass(frozen=True)
class DeleteMany:
    """What deleting several deployments started: one operation each, and those refused now, with why."""

    operations: list[Operation]
    refused: dict[str, str]  # deployment name: the reason, as the user reads it


def _part_key(idempotency_key: str | None, part: str) -> str | None:
    """One form's key for each operation it starts, so that the form sent again finds each of them."""
    return f"{idempotency_key[:48]}:{part}" if idempotency_key else None


def deployment_delete_many(
    *,
    user: User,
    deployments: Iterable[Deployment],
    idempotency_key: str | None = None,
    reason: str = "",
) -> DeleteMany:
    """Start deleting each deployment as its own audited operation; one refused does not stop the others."""
    operations: list[Operation] = []
    refused: dict[str, str] = {}
    for deployment in deployments:
        try:
            operations.append(
                deployment_delete(
                    user=user,
                    deployment=deployment,
                    idempotency_key=_part_key(idempotency_key, f"d{deployment.pk}"),
                    reason=reason,
                )
            )
        except Refused as exc:
            refused[deployment.name] = str(exc)
    return DeleteMany(operations=operations, refused=refused)


@dataclass(frozen=True)
class ClusterTeardown:
    """What deleting a cluster with its deployments started."""

    deletes: DeleteMany
    cluster_operation: Operation | None  # the cluster's delete, when nothing had to go before it
    waiting_for: list[str]  # the deployments the cluster's delete waits for (deleted now, or already going)


def cluster_delete_with_deployments(
    *,
    user: User,
    cluster: Cluster,
    expected: Collection[int] | None = None,
    idempotency_key: str | None = None,
) -> ClusterTeardown:
    """Delete a cluster and every deployment on it, each its own audited operation: the deployments first,
    the cluster once none is left.

    `expected`: the deployments the person was shown; one deployed since is not deleted unseen (refused).

    The cluster's delete must wait for its deployments' deletes (minutes, on Azure). Rather than a second
    way of waiting, the cluster is marked as expired with automatic teardown, and the expiry check
    (services/expiry.py, every minute) deletes it once its deployments are gone, as it does for any expired
    cluster; it also deletes, once its operation has finished, a deployment that was busy here.
    """
    now = timezone.now()
    with transaction.atomic():
        # Under the lock deployment_create and cluster_delete take: the list checked is the list deleted.
        cluster = cluster_lock(cluster)
        if cluster.provisioning_state in (ProvisioningState.DELETING, ProvisioningState.DELETED):
            raise Refused(f"{cluster.name} is already {cluster.provisioning_state.lower()}.")
        if cluster.provisioning_state == ProvisioningState.CREATING:
            raise Refused(
                f"{cluster.name} is still being provisioned; delete it once provisioning has finished."
            )
        going = list(cluster.deployments.filter(state__in=DELETABLE_STATES).order_by("name"))
        unseen = [d.name for d in going if expected is not None and d.pk not in expected]
        if unseen:
            raise Refused(
                f"{', '.join(unseen)} {'was' if len(unseen) == 1 else 'were'} deployed to {cluster.name} "
                "after the confirmation was shown; nothing was deleted. Look at the list again."
            )
        already_going = cluster.deployments.filter(state=ServiceState.DELETING).values_list("name", flat=True)
        waiting_for = sorted([d.name for d in going] + list(already_going))
        marked = (
            cluster.auto_teardown and cluster.expires_at is not None and cluster.expires_at <= now
        )  # a second submission, or the expiry check got there first
        if waiting_for and not marked:
            before = {
                "expires_at": cluster.expires_at.isoformat() if cluster.expires_at else None,
                "auto_teardown": cluster.auto_teardown,
            }
            expires_at = now if cluster.expires_at is None or cluster.expires_at > now else cluster.expires_at
            # Warned "now": the owner who asked is not emailed that the cluster is about to be torn down.
            Cluster.objects.filter(pk=cluster.pk).update(
                expires_at=expires_at, auto_teardown=True, expiry_warned_at=now
            )
            audit_record(
                actor=user,
                action="cluster.delete",
                resource=cluster,
                before=before,
                after={
                    "expires_at": expires_at.isoformat(),
                    "auto_teardown": True,
                    "deployments": waiting_for,
                },
                message=f"with its deployments ({', '.join(waiting_for)}): they are deleted first, "
                "then the cluster, by the expiry check",
            )
    if not waiting_for:
        operation = cluster_delete(user=user, cluster=cluster, idempotency_key=idempotency_key)
        return ClusterTeardown(DeleteMany(operations=[], refused={}), operation, [])
    deletes = deployment_delete_many(
        user=user,
        deployments=going,
        idempotency_key=idempotency_key,
        reason=f"deleted with cluster {cluster.name}",
    )
    return ClusterTeardown(deletes=deletes, cluster_operation=None, waiting_for=waiting_for)
