"""The audit log: the page's filters, as JSON pages or the page's CSV."""

from __future__ import annotations

from datetime import date, datetime

from django.http import HttpRequest, StreamingHttpResponse
from ninja import Query, Router, Schema

from api.errors import InvalidInput
from api.pagination import PageQuery, page
from api.schemas import REFUSALS
from dashboard.forms import AuditFilterForm
from dashboard.views.audit import audit_csv_response
from deployments import selectors
from deployments.models import AuditEvent

router = Router()


class AuditQuery(PageQuery):
    action: str = ""  # "deployment.create", or a family: "deployment"
    actor: str = ""
    resource_type: str = ""
    resource: str = ""  # the resource's name
    since: date | None = None  # whole UTC days, both included
    until: date | None = None


class AuditEventOut(Schema):
    id: int
    at: datetime
    actor: str
    via: str  # "token ci" when it came through a token; "" from the pages or the system
    action: str
    resource_type: str
    resource_id: int | None
    resource_name: str
    before: dict
    after: dict
    message: str


class AuditPage(Schema):
    items: list[AuditEventOut]
    next_cursor: str | None


def _filters(query: AuditQuery) -> dict:
    form = AuditFilterForm(
        {
            "person": query.actor,
            "action": query.action,
            "resource_type": query.resource_type,
            "resource_name": query.resource,
            "since": query.since.isoformat() if query.since else "",
            "until": query.until.isoformat() if query.until else "",
        }
    )
    if not form.is_valid():
        raise InvalidInput.from_form(form)
    return form.filters()


def _event(event: AuditEvent) -> dict:
    return {
        "id": event.pk,
        "at": event.created_at,
        "actor": event.actor_name,
        "via": event.via,
        "action": event.action,
        "resource_type": event.resource_type,
        "resource_id": event.resource_id,
        "resource_name": event.resource_name,
        "before": event.before or {},
        "after": event.after or {},
        "message": event.message,
    }


@router.get("/audit", response={200: AuditPage, **REFUSALS}, summary="The audit log, newest first")
def audit_list(request: HttpRequest, query: Query[AuditQuery]) -> dict:
    return page(selectors.audit_events(**_filters(query)), query, _event, newest_first=True)


@router.get(
    "/audit.csv",
    response={200: str, **REFUSALS},
    summary="The audit log as CSV (the page's columns), streamed",
    openapi_extra={"responses": {200: {"content": {"text/csv": {"schema": {"type": "string"}}}}}},
)
def audit_csv(request: HttpRequest, query: Query[AuditQuery]) -> StreamingHttpResponse:
    return audit_csv_response(_filters(query))
