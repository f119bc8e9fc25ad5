"""Audit actions are declared once (AUDIT_ACTIONS): recording any other is refused, the audit filter offers
exactly these, and every declared action is one the code records."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dashboard.forms import KNOWN_ACTIONS
from deployments.models import AuditEvent, ExternalResource, OperationKind
from deployments.services.audit import AUDIT_ACTIONS, audit_record
from deployments.states import OperationState

ROOT = Path(__file__).resolve().parents[2]
CODE = ("accounts", "api", "dashboard", "deployments", "targets", "workers", "lynx")


def _recorded_in_code() -> set[str]:
    """The literal actions passed to audit_record, plus the two families the code builds from states."""
    found: set[str] = set()
    for package in CODE:
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            found |= set(re.findall(r'action(?:: str)? ?= ?"([a-z_]+\.[a-z_]+)"', text))
            found |= set(re.findall(r'action="([a-z_]+\.[a-z_]+)"', text))
    finished = {OperationState.SUCCEEDED, OperationState.FAILED}
    found |= {f"operation.{state}" for state in finished}
    found |= {
        f"azure.{finding}{end}" for finding in ExternalResource.Finding.values for end in ("", "_resolved")
    }
    return found


def test_every_action_the_code_records_is_declared_and_every_declared_one_is_recorded():
    recorded = _recorded_in_code()
    assert recorded - set(AUDIT_ACTIONS) == set(), "recorded but not declared in AUDIT_ACTIONS"
    assert set(AUDIT_ACTIONS) - recorded == set(), "declared but never recorded"


def test_the_audit_filter_offers_every_declared_action_and_family():
    assert set(AUDIT_ACTIONS) <= set(KNOWN_ACTIONS)
    assert {"workspace", "azure", "deployment", "operation"} <= set(KNOWN_ACTIONS)


@pytest.mark.django_db
def test_an_undeclared_action_is_refused_and_nothing_is_written():
    with pytest.raises(ValueError, match="not declared"):
        audit_record(actor=None, action="deployment.teleport", resource=OperationKind.SERVICE_DEPLOY)
    assert not AuditEvent.objects.exists()
