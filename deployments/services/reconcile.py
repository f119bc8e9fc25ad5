"""The reconciler: compare what should be running with what is, and mend the difference."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from django.db import transaction
from django.db.models import Exists, OuterRef

from deployments.backends.base import BackendError
from deployments.models import Deployment, Operation
from deployments.states import ACTIVE_OPERATION_STATES, ServiceState

from .audit import audit_record
from .operations import operations_reclaim_lost
from .specs import backend_for, service_spec
from .transitions import TransitionError, deployment_transition

log = logging.getLogger(__name__)


def services_reconcile() -> dict[str, int]:
    """One pass: reclaim lost operation steps, then check every live service no operation is working on.

    A service whose replicas died (or whose supervisor is gone, e.g. after a restart of the
    machine) turns Unhealthy and is restarted; once every replica is ready again it is Healthy.
    """
    counts = {"reclaimed": len(operations_reclaim_lost()), "checked": 0, "restarted": 0, "recovered": 0}
    busy = Operation.objects.filter(deployment=OuterRef("pk"), state__in=ACTIVE_OPERATION_STATES)
    live = (
        Deployment.objects.filter(state__in=(ServiceState.HEALTHY, ServiceState.UNHEALTHY))
        .exclude(Exists(busy))
        .select_related("cluster__workspace", "model")
    )
    for deployment in live:
        counts["checked"] += 1
        try:
            outcome = _reconcile_one(deployment)
        except (BackendError, TransitionError) as exc:
            log.warning("reconcile %s: %s", deployment.name, exc)
            continue
        if outcome:
            counts[outcome] += 1
    return counts


def _reconcile_one(deployment: Deployment) -> str | None:
    backend = backend_for(deployment.cluster)
    spec = service_spec(deployment)
    observed = backend.observe_service(spec)
    updates: dict = {}
    if observed.stats and observed.stats != deployment.stats:
        updates["stats"] = observed.stats
    last_request = observed.stats.get("last_request_at")  # epoch seconds, from the target's front end
    if last_request and (
        not deployment.last_scored_at or last_request > deployment.last_scored_at.timestamp()
    ):
        updates["last_scored_at"] = datetime.fromtimestamp(last_request, UTC)  # feeds the idle-teardown rule
    if observed.scoring_uri and observed.scoring_uri != deployment.scoring_uri:
        updates["scoring_uri"], updates["swagger_uri"] = observed.scoring_uri, observed.swagger_uri
    if updates:
        Deployment.objects.filter(pk=deployment.pk).update(**updates)

    if observed.state == ServiceState.HEALTHY:
        if deployment.state == ServiceState.UNHEALTHY:
            deployment_transition(
                deployment=deployment, to=ServiceState.HEALTHY, message="every replica is ready again"
            )
            return "recovered"
        return None

    reason = observed.error or f"observed {observed.state}"
    if deployment.state == ServiceState.HEALTHY:
        deployment_transition(deployment=deployment, to=ServiceState.UNHEALTHY, message=reason[:2000])
    if observed.state == ServiceState.TRANSITIONING:
        return None  # replicas are starting: give them time before restarting anything
    if observed.state == "Missing" and not deployment.cluster.is_local:
        return (
            None  # deleted behind Lynx's back in Azure: the sync records it; restarting cannot bring it back
        )
    with transaction.atomic():
        audit_record(actor=None, action="deployment.restart", resource=deployment, message=reason[:2000])
    backend.restart_service(spec)
    return "restarted"
