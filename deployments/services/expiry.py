"""Nothing forgotten running: a cluster may carry an expiry date and an idle rule ("no scoring request
for N hours"). A periodic check warns the owner ahead of time and, where the owner chose automatic
teardown, deletes the deployments and then the cluster through the ordinary services, as the system,
saying why.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from deployments import selectors
from deployments.models import Cluster
from deployments.states import LIVE_SERVICE_STATES, ProvisioningState, ServiceState

from .audit import audit_record
from .clusters import cluster_delete
from .deployments import deployment_delete
from .operations import Refused

log = logging.getLogger(__name__)

MAX_EXTEND_HOURS = 24 * 90
CONFIG_FIELDS = ("expires_at", "idle_teardown_hours", "idle_extended_until", "auto_teardown")


def _setting(name: str, default: float) -> float:
    # Settings win; the environment is the fallback until lynx/settings.py names these.
    return float(getattr(settings, name, None) or os.environ.get(name) or default)


def warn_before() -> timedelta:
    """How long ahead of a teardown the owner is warned (LYNX_EXPIRY_WARN_MINUTES, default 60)."""
    return timedelta(minutes=_setting("LYNX_EXPIRY_WARN_MINUTES", 60))


def _at(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class ExpiryStatus:
    """When a cluster's rules say it should go, and why. `deadline` is None when it has no rule."""

    deadline: datetime | None = None
    reason: str = ""
    warn: bool = False  # within the warning window, or past the deadline
    due: bool = False  # the deadline has passed


def expiry_status(
    cluster: Cluster, *, last_activity: datetime, now: datetime, window: timedelta | None = None
) -> ExpiryStatus:
    """The earliest of the expiry date and the idle deadline, with the reason a person reads."""
    window = warn_before() if window is None else window
    candidates: list[tuple[datetime, str]] = []
    if cluster.expires_at is not None:
        candidates.append((cluster.expires_at, f"expired at {_at(cluster.expires_at)}"))
    if cluster.idle_teardown_hours:
        idle_deadline = last_activity + timedelta(hours=cluster.idle_teardown_hours)
        if cluster.idle_extended_until and cluster.idle_extended_until > idle_deadline:
            idle_deadline = cluster.idle_extended_until
        hours = cluster.idle_teardown_hours
        candidates.append(
            (
                idle_deadline,
                f"idle for {hours} hour{'s' if hours != 1 else ''} "
                f"(no scoring request since {_at(last_activity)})",
            )
        )
    if not candidates:
        return ExpiryStatus()
    deadline, reason = min(candidates, key=lambda c: c[0])
    return ExpiryStatus(deadline=deadline, reason=reason, warn=now >= deadline - window, due=now >= deadline)


def last_activity_of(cluster: Cluster) -> datetime:
    """Activity from the annotations of `selectors.clusters_with_activity`, else one query."""
    if hasattr(cluster, "last_scored") and hasattr(cluster, "last_deployed"):  # annotated together
        stamps = (cluster.created_at, cluster.last_scored, cluster.last_deployed)
        return max(t for t in stamps if t is not None)
    return selectors.cluster_last_activity(cluster)


def status_of(cluster: Cluster, now: datetime | None = None) -> ExpiryStatus:
    return expiry_status(cluster, last_activity=last_activity_of(cluster), now=now or timezone.now())


# --- the periodic check --------------------------------------------------------------------------


def clusters_expiry_check(*, now: datetime | None = None) -> dict[str, int]:
    """One pass: warn owners of clusters close to their deadline; tear down those past it whose owner
    chose automatic teardown. Safe to run concurrently and repeatedly: every step is conditional."""
    now = now or timezone.now()
    counts = {"checked": 0, "warned": 0, "deployments_deleted": 0, "clusters_deleted": 0}
    for cluster in selectors.clusters_with_expiry_rule():
        counts["checked"] += 1
        status = expiry_status(cluster, last_activity=last_activity_of(cluster), now=now)
        if status.warn and _warn(cluster, status, now):
            counts["warned"] += 1
        if status.due and cluster.auto_teardown:
            deleted_deployments, deleted_cluster = _teardown(cluster, status)
            counts["deployments_deleted"] += deleted_deployments
            counts["clusters_deleted"] += deleted_cluster
    return counts


def _warn(cluster: Cluster, status: ExpiryStatus, now: datetime) -> bool:
    """Record one warning per deadline (a later deadline, after an extension or a scoring request, warns
    again), then email the owner outside the transaction."""
    assert status.deadline is not None
    previous = cluster.expiry_warned_at
    if previous is not None and previous >= status.deadline - warn_before():
        return False
    if cluster.auto_teardown:
        text = f"{cluster.name} will be torn down at {_at(status.deadline)}: {status.reason.split(' (')[0]}."
    else:
        text = (
            f"{cluster.name} reaches its limit at {_at(status.deadline)} ({status.reason.split(' (')[0]}); "
            "automatic teardown is off, so it keeps running (and costing) until someone deletes it."
        )
    with transaction.atomic():
        # Compare-and-set: two checks running at once send one warning.
        if not Cluster.objects.filter(pk=cluster.pk, expiry_warned_at=previous).update(expiry_warned_at=now):
            return False
        audit_record(
            actor=None,
            action="cluster.expiry_warning",
            resource=cluster,
            after={"deadline": status.deadline.isoformat()},
            message=text,
        )
    owner = cluster.owner
    if owner is not None and owner.email:
        try:
            send_mail(
                subject=f"[Lynx] {text.split(':')[0]}",
                message=(
                    f"{text}\n\nReason: {status.reason}.\nExtend or cancel the expiry on the Lynx overview.\n"
                ),
                from_email=None,
                recipient_list=[owner.email],
            )
        except Exception:  # noqa: BLE001 - a mail server being down must not stop the teardown
            log.exception("could not email %s about %s", owner.email, cluster.name)
    return True


def _teardown(cluster: Cluster, status: ExpiryStatus) -> tuple[int, int]:
    """Delete the cluster's deployments; once none is left, delete the cluster (a later pass, usually)."""
    reason = f"automatic teardown: {status.reason}"
    deleted = 0
    if cluster.provisioning_state == ProvisioningState.CREATING:
        return 0, 0  # nothing can be deleted mid-provisioning; the next pass tries again
    for deployment in cluster.deployments.filter(state__in=(*LIVE_SERVICE_STATES, ServiceState.FAILED)):
        try:
            deployment_delete(user=None, deployment=deployment, reason=reason)
            deleted += 1
        except Refused as exc:
            log.info("expiry: %s not deleted yet: %s", deployment.name, exc)
    if cluster.deployments.exclude(state=ServiceState.DELETED).exists():
        return deleted, 0
    try:
        cluster_delete(user=None, cluster=cluster, reason=reason)
    except Refused as exc:
        log.info("expiry: %s not deleted yet: %s", cluster.name, exc)
        return deleted, 0
    return deleted, 1


# --- what a person does about it --------------------------------------------------------------------


def expiry_config(cluster: Cluster) -> dict:
    return {
        "expires_at": cluster.expires_at.isoformat() if cluster.expires_at else None,
        "idle_teardown_hours": cluster.idle_teardown_hours,
        "idle_extended_until": cluster.idle_extended_until.isoformat()
        if cluster.idle_extended_until
        else None,
        "auto_teardown": cluster.auto_teardown,
    }


def _editable(cluster: Cluster) -> None:
    cluster.refresh_from_db()
    if cluster.provisioning_state in (ProvisioningState.DELETING, ProvisioningState.DELETED):
        raise Refused(f"{cluster.name} is already {cluster.provisioning_state.lower()}.")


def _update(cluster: Cluster, *, user: User, action: str, message: str, **changes) -> Cluster:
    before = expiry_config(cluster)
    with transaction.atomic():
        # Compare-and-set on the fields being changed: a concurrent extension or cancel is not lost.
        same = {field: getattr(cluster, field) for field in changes if field in CONFIG_FIELDS}
        if not Cluster.objects.filter(pk=cluster.pk, **same).update(**changes):
            raise Refused(f"{cluster.name}'s expiry was changed by someone else just now; look again.")
        cluster.refresh_from_db()
        audit_record(
            actor=user,
            action=action,
            resource=cluster,
            before=before,
            after=expiry_config(cluster),
            message=message,
        )
    return cluster


def cluster_expiry_extend(*, user: User, cluster: Cluster, hours: int) -> Cluster:
    """Push the teardown back by `hours`: the expiry date, and the idle deadline, each from now or from
    where it was, whichever is later."""
    if not 1 <= hours <= MAX_EXTEND_HOURS:
        raise Refused(f"Extend by 1 to {MAX_EXTEND_HOURS} hours (got {hours}).")
    _editable(cluster)
    if cluster.expires_at is None and not cluster.idle_teardown_hours:
        raise Refused(f"{cluster.name} has no expiry to extend.")
    now = timezone.now()
    changes: dict = {"expiry_warned_at": None}
    if cluster.expires_at is not None:
        changes["expires_at"] = max(now, cluster.expires_at) + timedelta(hours=hours)
    if cluster.idle_teardown_hours:
        idle_only = Cluster(
            created_at=cluster.created_at,
            idle_teardown_hours=cluster.idle_teardown_hours,
            idle_extended_until=cluster.idle_extended_until,
        )
        idle_deadline = expiry_status(
            idle_only, last_activity=selectors.cluster_last_activity(cluster), now=now
        ).deadline
        assert idle_deadline is not None
        changes["idle_extended_until"] = max(now, idle_deadline) + timedelta(hours=hours)
    return _update(
        cluster, user=user, action="cluster.expiry_extend", message=f"extended by {hours} h", **changes
    )


def cluster_expiry_cancel(*, user: User, cluster: Cluster) -> Cluster:
    """Remove the expiry date and the idle rule: the cluster runs until somebody deletes it."""
    _editable(cluster)
    if cluster.expires_at is None and not cluster.idle_teardown_hours and not cluster.auto_teardown:
        raise Refused(f"{cluster.name} has no expiry to cancel.")
    return _update(
        cluster,
        user=user,
        action="cluster.expiry_cancel",
        message="expiry cancelled",
        expires_at=None,
        idle_teardown_hours=None,
        idle_extended_until=None,
        auto_teardown=False,
        expiry_warned_at=None,
    )
