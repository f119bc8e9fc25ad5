"""The reconciler: compare what should be running with what is, and mend the difference.

It asks a slow, metered target (poll_factor > 1: Azure, where each observation is an HTTPS call against
the workspace's quota) about a Healthy service only once per poll_factor × HEALTHY_OBSERVE_EVERY, and
about one that is not Healthy on every pass. A service that stays down is restarted with growing pauses
(RESTART_BACKOFF, doubling, at most RESTART_BACKOFF_MAX), at most MAX_RESTARTS times in a row; then it is
Failed with the reason and left alone. On Azure a restart is a full service.update() (image build and
rollout), and an init() bug would otherwise be redeployed for ever. An update or a redeploy starts anew.

What the reconciler keeps between passes lives in Deployment.stats["reconcile"]: when it last observed
the service, the restarts of the current streak (tied to the state_changed_at of the Unhealthy spell they
belong to, so that an update or a redeploy starts a new count), when the last one was made, the reference
to the target's operation for it, and when the reconciler saw the service recover. A spell that follows
a recovery by less than STREAK_RESET_AFTER carries the count on.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from deployments.backends import target_traits, targets_on_this_host
from deployments.backends.base import Backend, BackendError, ServiceObservation, ServiceSpec
from deployments.models import Deployment, Operation
from deployments.states import ACTIVE_OPERATION_STATES, TARGET_OPERATION_RUNNING, ServiceState

from .audit import audit_record
from .operations import operations_reclaim_lost
from .specs import backend_for, service_files_write, service_spec
from .transitions import TransitionError, deployment_transition

log = logging.getLogger(__name__)

HEALTHY_OBSERVE_EVERY = timedelta(seconds=60)  # × the target's poll_factor, for a Healthy service
RESTART_BACKOFF = timedelta(seconds=30)  # before the second restart of a streak; doubling after each
RESTART_BACKOFF_MAX = timedelta(minutes=30)
MAX_RESTARTS = 5  # in a row without the service becoming Healthy; then Failed
# How long a recovered service must stay Healthy before its restart count starts again from 0. A service
# that comes back for a moment and crashes again (init() passes, the first requests kill it) would
# otherwise start every spell at 0 and be redeployed for ever; on Azure each restart is a full update().
STREAK_RESET_AFTER = timedelta(minutes=30)
RECONCILE_KEY = "reconcile"  # the reconciler's own entry in Deployment.stats


def services_reconcile(
    where: Literal["all", "here", "elsewhere"] = "all", *, now: datetime | None = None
) -> dict[str, int]:
    """One pass: reclaim lost operation steps, then check every live service no operation is working on
    (of the targets on this host, such as the local one; of the others, such as Azure; or of all).

    A service whose replicas died (or whose supervisor is gone, e.g. after a restart of the machine) turns
    Unhealthy and is restarted, with backoff; once every replica is ready again it is Healthy. `now` is the
    pass's clock (tests move it; a pass takes the time it starts).
    """
    now = now or timezone.now()
    counts = {
        "reclaimed": len(operations_reclaim_lost()),
        "checked": 0,
        "deferred": 0,
        "restarted": 0,
        "recovered": 0,
        "failed": 0,
    }
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
        if not _observation_due(deployment, now):
            counts["deferred"] += 1
            continue
        counts["checked"] += 1
        try:
            outcome = _reconcile_one(deployment, now)
        except (BackendError, TransitionError) as exc:
            log.warning("reconcile %s: %s", deployment.name, exc)
            continue
        if outcome:
            counts[outcome] += 1
    return counts


def _bookkeeping(deployment: Deployment) -> dict[str, Any]:
    return dict(deployment.stats.get(RECONCILE_KEY) or {})


def _observation_due(deployment: Deployment, now: datetime) -> bool:
    """A Healthy service on a metered target is observed once per poll_factor × HEALTHY_OBSERVE_EVERY; any
    other every pass (an Unhealthy or restarting one is what needs watching)."""
    factor = target_traits(deployment.cluster.backend).poll_factor
    if deployment.state != ServiceState.HEALTHY or factor <= 1:
        return True
    observed_at = _bookkeeping(deployment).get("observed_at")
    every = factor * HEALTHY_OBSERVE_EVERY.total_seconds()
    return observed_at is None or now.timestamp() - float(observed_at) >= every


def _new_events(events: tuple[dict, ...], last: str) -> tuple[list[dict], str]:
    """The target's events after `last` (an event id, "<instance>#<seq>"), and the newest id."""
    if not events:
        return [], last
    instance, _, seq = last.rpartition("#")
    same = [e for e in events if e["id"].rpartition("#")[0] == instance]
    fresh = [e for e in same if e["seq"] > int(seq or 0)] if same else list(events)
    return fresh, events[-1]["id"]


def _reconcile_one(deployment: Deployment, now: datetime) -> str | None:
    backend = backend_for(deployment.cluster)
    spec = service_spec(deployment)
    book = _bookkeeping(deployment)
    # The reference to the reconciler's last restart goes back to the target: the service's state alone does
    # not say whether that restart (on Azure a whole update) is still under way.
    observed = backend.observe_service(spec, operation_ref=book.get("restart_ref"))
    if target_traits(deployment.cluster.backend).poll_factor > 1:
        book["observed_at"] = now.timestamp()
    restarting = bool(book.get("restart_ref")) and observed.operation_state in TARGET_OPERATION_RUNNING
    if book.get("restart_ref") and not restarting:
        book.pop("restart_ref")  # that restart has ended, one way or the other
    _record_observation(deployment, observed, book)

    if observed.state == ServiceState.HEALTHY and not restarting:
        if deployment.state == ServiceState.UNHEALTHY:
            deployment_transition(
                deployment=deployment,
                to=ServiceState.HEALTHY,
                message="every replica is ready again",
                error="",
            )
            _remember_recovery(deployment, now)
            return "recovered"
        return None

    reason = observed.error or f"observed {observed.state}"
    if observed.state != ServiceState.HEALTHY:
        _mark_unhealthy(deployment, observed, reason, now)
    if observed.state == ServiceState.TRANSITIONING or restarting:
        return None  # replicas are starting, or the last restart is still under way: never restart on top
    dead = [r for r in observed.replicas if r.state == "dead"]
    if dead and all(r.gave_up for r in dead):
        # They failed to start MAX_START_ATTEMPTS times in a row: a restart would fail again, every pass, for
        # ever. Unhealthy with the script's own lines says why; an update (or a fixed script) starts anew.
        return None
    if observed.state == "Missing" and target_traits(deployment.cluster.backend).missing_is_final:
        return (
            None  # deleted behind Lynx's back in Azure: the sync records it; restarting cannot bring it back
        )
    return _restart_with_backoff(deployment, backend, spec, observed.state, reason, now)


def _record_observation(deployment: Deployment, observed: ServiceObservation, book: dict[str, Any]) -> None:
    """What the target said that the pages show: stats, the last request's time, the scoring URI, and the
    target's own events (a replica OOMKilled and restarted) as audit events, each once."""
    updates: dict = {}
    events, last_event = _new_events(observed.events, deployment.stats.get("last_event", ""))
    # A target with nothing to say (a service gone missing) leaves the last figures on the page.
    stats = (
        {**observed.stats, "last_event": last_event}
        if observed.stats or last_event
        else dict(deployment.stats)
    )
    stats.pop(RECONCILE_KEY, None)
    if book:
        stats[RECONCILE_KEY] = book
    if stats != deployment.stats:
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
            if "stats" in updates:
                deployment.stats = stats
        for event in events:
            after = {key: event.get(key) for key in ("replica", "reason", "restarts", "at")}
            audit_record(
                actor=None,
                action="deployment.restart",
                resource=deployment,
                after=after,
                message=event.get("message", "")[:2000],
            )


def _mark_unhealthy(deployment: Deployment, observed: ServiceObservation, reason: str, now: datetime) -> None:
    if deployment.state == ServiceState.HEALTHY:
        healthy_of = deployment.state_changed_at.isoformat()
        deployment_transition(
            deployment=deployment, to=ServiceState.UNHEALTHY, message=reason[:2000], error=observed.error
        )
        _carry_streak(deployment, healthy_of, now)
    elif observed.error and observed.error != deployment.error:
        # Still Unhealthy, for a new reason (a restart failed too): the page says the latest.
        Deployment.objects.filter(pk=deployment.pk, state=ServiceState.UNHEALTHY).update(error=observed.error)
        deployment.error = observed.error


def _remember_recovery(deployment: Deployment, now: datetime) -> None:
    """Note the Healthy spell the reconciler saw the service recover into, and when."""
    book = _bookkeeping(deployment)
    book["recovered"] = {"healthy_of": deployment.state_changed_at.isoformat(), "at": now.timestamp()}
    _save_bookkeeping(deployment, book)


def _carry_streak(deployment: Deployment, healthy_of: str, now: datetime) -> None:
    """A service down again: its restart count goes on if it had recovered (the reconciler saw it) less than
    STREAK_RESET_AFTER ago, in the Healthy spell that just ended; otherwise the new spell starts at 0."""
    book = _bookkeeping(deployment)
    recovered = book.pop("recovered", None) or {}
    brief = now.timestamp() - float(recovered.get("at", 0)) < STREAK_RESET_AFTER.total_seconds()
    if recovered.get("healthy_of") == healthy_of and brief and book.get("restarts"):
        book["streak_of"] = deployment.state_changed_at.isoformat()
    _save_bookkeeping(deployment, book)


def restart_delay(restarts: int) -> timedelta:
    """The pause after the `restarts`-th restart of a streak: 30 s, 60 s, 120 s … at most 30 min."""
    return min(RESTART_BACKOFF * 2 ** max(restarts - 1, 0), RESTART_BACKOFF_MAX)


def _restart_streak(deployment: Deployment) -> tuple[int, float | None]:
    """Restarts made since the service last went down (a transition of the row ends a streak), and when the
    last one was made (epoch seconds)."""
    book = _bookkeeping(deployment)
    if book.get("streak_of") != deployment.state_changed_at.isoformat():
        return 0, None
    return int(book.get("restarts", 0)), book.get("restarted_at")


def _restart_with_backoff(
    deployment: Deployment,
    backend: Backend,
    spec: ServiceSpec,
    observed_state: str,
    reason: str,
    now: datetime,
) -> str | None:
    """Restart the service if its pause is over; after MAX_RESTARTS in a row that did not bring it back, make
    the deployment Failed with the reason instead, and leave it alone from then on."""
    restarts, last_at = _restart_streak(deployment)
    if (
        restarts
        and last_at is not None
        and now.timestamp() - last_at < restart_delay(restarts).total_seconds()
    ):
        return None
    if restarts >= MAX_RESTARTS:
        error = f"restarted {restarts} times, still {observed_state}: {reason}"
        deployment_transition(
            deployment=deployment, to=ServiceState.FAILED, message=error[:2000], error=error
        )
        return "failed"
    attempt = restarts + 1
    book = {
        **_bookkeeping(deployment),
        "streak_of": deployment.state_changed_at.isoformat(),
        "restarts": attempt,
        "restarted_at": now.timestamp(),
    }
    book.pop("restart_ref", None)
    # The intent first (a worker that dies during the call has still spent the attempt), then the call.
    with transaction.atomic():
        audit_record(
            actor=None,
            action="deployment.restart",
            resource=deployment,
            message=f"restart {attempt} of at most {MAX_RESTARTS}: {reason}"[:2000],
        )
        _save_bookkeeping(deployment, book)
    service_files_write(deployment)  # a wiped var/ must not stop a restart
    ref = backend.restart_service(spec)
    if ref:
        _save_bookkeeping(deployment, {**book, "restart_ref": ref})
    return "restarted"


def _save_bookkeeping(deployment: Deployment, book: dict[str, Any]) -> None:
    deployment.stats = {**deployment.stats, RECONCILE_KEY: book}
    Deployment.objects.filter(pk=deployment.pk).update(stats=deployment.stats)
