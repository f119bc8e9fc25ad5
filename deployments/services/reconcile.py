"""The reconciler: compare what should be running with what is, and mend the difference."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Literal

from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from deployments.backends import target_traits, targets_on_this_host
from deployments.backends.base import BackendError
from deployments.models import AuditEvent, Deployment, Operation
from deployments.states import ACTIVE_OPERATION_STATES, ServiceState

from .audit import audit_record
from .operations import operations_reclaim_lost
from .specs import backend_for, service_files_write, service_spec
from .transitions import TransitionError, deployment_transition

log = logging.getLogger(__name__)

RESTART_BACKOFF = timedelta(seconds=30)  # between two restarts of one service by the reconciler


def services_reconcile(where: Literal["all", "here", "elsewhere"] = "all") -> dict[str, int]:
    """One pass: reclaim lost operation steps, then check every live service no operation is working on
    (of the targets on this host, such as the local one; of the others, such as Azure; or of all).

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
    if where != "all":
        here = Q(cluster__backend__in=targets_on_this_host())
        live = live.filter(here) if where == "here" else live.exclude(here)
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


def _new_events(events: tuple[dict, ...], last: str) -> tuple[list[dict], str]:
    """The target's events after `last` (an event id, "<instance>#<seq>"), and the newest id."""
    if not events:
        return [], last
    instance, _, seq = last.rpartition("#")
    same = [e for e in events if e["id"].rpartition("#")[0] == instance]
    fresh = [e for e in same if e["seq"] > int(seq or 0)] if same else list(events)
    return fresh, events[-1]["id"]


def _reconcile_one(deployment: Deployment) -> str | None:
    backend = backend_for(deployment.cluster)
    spec = service_spec(deployment)
    observed = backend.observe_service(spec)
    updates: dict = {}
    events, last_event = _new_events(observed.events, deployment.stats.get("last_event", ""))
    stats = {**observed.stats, "last_event": last_event} if observed.stats or last_event else {}
    if stats and stats != deployment.stats:
        updates["stats"] = stats
    last_request = observed.stats.get("last_request_at")  # epoch seconds, from the target's front end
    if last_request and (
        not deployment.last_scored_at or last_request > deployment.last_scored_at.timestamp()
    ):
        updates["last_scored_at"] = datetime.fromtimestamp(last_request, UTC)  # feeds the idle-teardown rule
    if observed.scoring_uri and observed.scoring_uri != deployment.scoring_uri:
        updates["scoring_uri"], updates["swagger_uri"] = observed.scoring_uri, observed.swagger_uri
    with transaction.atomic():
        if updates:
            Deployment.objects.filter(pk=deployment.pk).update(**updates)
        for event in events:  # what the target did on its own: a replica OOMKilled and restarted, …
            after = {key: event.get(key) for key in ("replica", "reason", "restarts", "at")}
            audit_record(
                actor=None,
                action="deployment.restart",
                resource=deployment,
                after=after,
                message=event.get("message", "")[:2000],
            )

    if observed.state == ServiceState.HEALTHY:
        if deployment.state == ServiceState.UNHEALTHY:
            deployment_transition(
                deployment=deployment,
                to=ServiceState.HEALTHY,
                message="every replica is ready again",
                error="",
            )
            return "recovered"
        return None

    reason = observed.error or f"observed {observed.state}"
    if deployment.state == ServiceState.HEALTHY:
        deployment_transition(
            deployment=deployment, to=ServiceState.UNHEALTHY, message=reason[:2000], error=observed.error
        )
    elif observed.error and observed.error != deployment.error:
        # Still Unhealthy, for a new reason (a restart failed too): the page says the latest.
        Deployment.objects.filter(pk=deployment.pk, state=ServiceState.UNHEALTHY).update(error=observed.error)
    if observed.state == ServiceState.TRANSITIONING:
        return None  # replicas are starting: give them time before restarting anything
    dead = [r for r in observed.replicas if r.state == "dead"]
    if dead and all(r.gave_up for r in dead):
        # They failed to start MAX_START_ATTEMPTS times in a row: a restart would fail again, every pass, for
        # ever. Unhealthy with the script's own lines says why; an update (or a fixed script) starts anew.
        return None
    if observed.state == "Missing" and target_traits(deployment.cluster.backend).missing_is_final:
        return (
            None  # deleted behind Lynx's back in Azure: the sync records it; restarting cannot bring it back
        )
    # Passes come every 2 s: a service that fails again at once (a supervisor that cannot start, a replica
    # that crashes on every request) is restarted at most once per RESTART_BACKOFF, not 1800 times an hour.
    restarted_lately = AuditEvent.objects.filter(
        action="deployment.restart",
        resource_type="deployment",
        resource_id=deployment.pk,
        after={},  # the reconciler's own restarts (the target's events say what replica and why)
        created_at__gt=timezone.now() - RESTART_BACKOFF,
    )
    if restarted_lately.exists():
        return None
    with transaction.atomic():
        audit_record(actor=None, action="deployment.restart", resource=deployment, message=reason[:2000])
    service_files_write(deployment)  # a wiped var/ must not stop a restart
    backend.restart_service(spec)
    return "restarted"
