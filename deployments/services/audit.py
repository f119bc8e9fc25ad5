"""The audit trail: one append-only row per user action and per state change."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.contrib.auth.models import User

from accounts.roles import AnyUser
from deployments.models import AuditEvent

SYSTEM = "system"

# Every action Lynx records, declared once: audit_record refuses any other, and the audit page's filter
# offers these (and their families, the part before the dot).
AUDIT_ACTIONS: dict[str, str] = {
    "cluster.create": "a cluster was asked for",
    "cluster.delete": "a cluster's deletion was asked for",
    "cluster.state": "a cluster changed state",
    "cluster.expiry_warning": "a cluster's owner was warned before it expires or goes idle",
    "cluster.expiry_extend": "a cluster's expiry was extended",
    "cluster.expiry_cancel": "a cluster's expiry was cancelled",
    "deployment.create": "a deployment was asked for",
    "deployment.update": "a deployment's configuration was changed",
    "deployment.rollback": "a deployment went back to an earlier revision",
    "deployment.move": "a deployment's revision was deployed to another target (Azure ML v1 to v2)",
    "deployment.traffic": "a canary was completed or rolled back (traffic shifted between revisions)",
    "deployment.delete": "a deployment's deletion was asked for",
    "deployment.state": "a deployment changed state",
    "deployment.restart": "a deployment's replicas were restarted (by Lynx or the target)",
    "deployment.test_score": "an image was scored from the test page",
    "deployment.key_reveal": "a scoring key was shown in full",
    "deployment.key_regenerate": "a scoring key was replaced",
    "model.register": "a model version was registered",
    "token.create": "an API token was created",
    "token.revoke": "an API token was revoked",
    "operation.succeeded": "an operation succeeded",
    "operation.failed": "an operation failed",
    "price.create": "a VM size was priced",
    "price.update": "a VM size's price changed",
    "price.seed": "the price table was filled from Azure's sizes",
    "user.create": "a person was added",
    "user.role": "a person's role changed",
    "user.team": "a person's team changed",
    "workspace.create": "an Azure workspace was connected",
    "workspace.secret": "a workspace's client secret was replaced",
    "workspace.test_requested": "a workspace's connection test was asked for",
    "workspace.test": "a workspace's connection was tested",
    "azure.unmanaged": "the sync found a resource in Azure that Lynx does not manage",
    "azure.unmanaged_resolved": "a resource in Azure that Lynx did not manage is gone or accounted for",
    "azure.missing": "the sync found a resource Lynx manages missing from Azure",
    "azure.missing_resolved": "a resource missing from Azure is back",
    "azure.billing": "the sync found a resource Lynx gave up on (Failed in Lynx) still in Azure",
    "azure.billing_resolved": "a resource Lynx gave up on is gone from Azure",
}


# What a request came through, when not the pages: set by the API for the length of a request (a context
# variable, so each thread or task of a server keeps its own) and copied onto the events its actor records.
_VIA: ContextVar[str] = ContextVar("lynx_audit_via", default="")


@contextmanager
def audit_via(via: str) -> Iterator[None]:
    """Record the audit events of `via`'s actor made inside this block as made through it ("token ci")."""
    reset = _VIA.set(via)
    try:
        yield
    finally:
        _VIA.reset(reset)


def audit_via_begin(via: str) -> None:
    """Mark the rest of the current request as made through `via`; `audit_via_scope` (a middleware around
    every request) puts the previous value back when the request ends."""
    _VIA.set(via)


@contextmanager
def audit_via_scope() -> Iterator[None]:
    reset = _VIA.set("")
    try:
        yield
    finally:
        _VIA.reset(reset)


def audit_families() -> list[str]:
    """The part before the dot of every action, in order of first appearance: the filter's broad choices."""
    return list(dict.fromkeys(action.split(".")[0] for action in AUDIT_ACTIONS))


def actor_name(user: AnyUser | None) -> str:
    return user.get_username() if user is not None and user.is_authenticated else SYSTEM


def audit_record(
    *,
    actor: AnyUser | None,
    action: str,
    resource: Any,
    before: dict | None = None,
    after: dict | None = None,
    message: str = "",
) -> AuditEvent:
    """Append one audit event. Call it inside the transaction that makes the change it records."""
    if action not in AUDIT_ACTIONS:
        raise ValueError(f"audit action {action!r} is not declared in AUDIT_ACTIONS")
    via = _VIA.get() if isinstance(actor, User) else ""  # the system's own events come through nothing
    return AuditEvent.objects.create(
        # A signed-in person is a User (the user model); None and AnonymousUser are the system.
        actor=actor if isinstance(actor, User) else None,
        actor_name=actor_name(actor),
        action=action,
        resource_type=type(resource).__name__.lower(),
        resource_id=getattr(resource, "pk", None),
        resource_name=str(getattr(resource, "name", resource))[:64],
        before=before or {},
        after=after or {},
        message=message,
        via=via,
    )
