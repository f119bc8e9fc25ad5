"""The audit trail: one append-only row per user action and per state change."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from deployments.models import AuditEvent

SYSTEM = "system"


def actor_name(user: AbstractBaseUser | None) -> str:
    return user.get_username() if user is not None and user.is_authenticated else SYSTEM


def audit_record(
    *,
    actor: AbstractBaseUser | None,
    action: str,
    resource: Any,
    before: dict | None = None,
    after: dict | None = None,
    message: str = "",
) -> AuditEvent:
    """Append one audit event. Call it inside the transaction that makes the change it records."""
    return AuditEvent.objects.create(
        actor=actor if actor is not None and actor.is_authenticated else None,
        actor_name=actor_name(actor),
        action=action,
        resource_type=type(resource).__name__.lower(),
        resource_id=getattr(resource, "pk", None),
        resource_name=str(getattr(resource, "name", resource))[:64],
        before=before or {},
        after=after or {},
        message=message,
    )
