"""The audit log: newest first, filtered, paginated, and the same rows as CSV."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts.roles import AuthedRequest
from dashboard.forms import KNOWN_ACTIONS, RESOURCE_TYPES, AuditFilterForm
from deployments import selectors
from deployments.models import AuditEvent

PAGE_SIZE = 50
CSV_HEADER = (
    "id",
    "time_utc",
    "person",
    "action",
    "resource_type",
    "resource_id",
    "resource_name",
    "before",
    "after",
    "message",
    "via",
)


@dataclass(frozen=True)
class Change:
    key: str
    before: Any
    after: Any
    in_before: bool
    in_after: bool

    @property
    def changed(self) -> bool:
        return self.in_before and self.in_after and self.before != self.after


def changes(before: dict, after: dict) -> list[Change]:
    """One line per key either side mentions, in a stable order: what it was and what it became."""
    keys = list(before) + [key for key in after if key not in before]
    return [Change(key, before.get(key), after.get(key), key in before, key in after) for key in keys]


def _filters(request: HttpRequest) -> tuple[AuditFilterForm, dict | None]:
    form = AuditFilterForm(request.GET)
    return form, (form.filters() if form.is_valid() else None)


@require_GET
def audit_list(request: AuthedRequest) -> HttpResponse:
    form, filters = _filters(request)
    events = selectors.audit_events(**filters) if filters is not None else AuditEvent.objects.none()
    page = Paginator(events, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "dashboard/audit_list.html",
        {
            "form": form,
            "page": page,
            "rows": [(event, changes(event.before or {}, event.after or {})) for event in page.object_list],
            "query": query.urlencode(),
            "known_actions": KNOWN_ACTIONS,
            "resource_types": RESOURCE_TYPES,
        },
        status=200 if filters is not None else 400,
    )


class _Echo:
    """csv.writer writes into this, and we hand each line straight to the response."""

    def write(self, value: str) -> str:
        return value


def _cell(value: Any) -> Any:
    # A cell starting with = + - @ is a formula to a spreadsheet: quote it so it stays text.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def csv_row(row: tuple) -> list:
    pk, created_at, actor, action, rtype, rid, rname, before, after, message, via = row
    return [
        pk,
        created_at.astimezone(UTC).isoformat(),
        *map(_cell, (actor, action, rtype)),
        rid if rid is not None else "",
        _cell(rname),
        json.dumps(before or {}, sort_keys=True),
        json.dumps(after or {}, sort_keys=True),
        _cell(message),
        _cell(via),
    ]


@require_GET
def audit_export(request: AuthedRequest) -> HttpResponse | StreamingHttpResponse:
    """The filtered view as CSV, streamed: memory stays flat however long the log is."""
    form, filters = _filters(request)
    if filters is None:
        errors = "; ".join(f"{field}: {' '.join(map(str, msgs))}" for field, msgs in form.errors.items())
        return HttpResponse(f"Bad filter: {errors}\n", status=400, content_type="text/plain")
    return audit_csv_response(filters)


def audit_csv_response(filters: dict) -> StreamingHttpResponse:
    """The audit events `filters` select (selectors.audit_events' arguments) as CSV, streamed: the page's
    export and the API answer the same file."""
    events = selectors.audit_events(**filters).values_list(*selectors.AUDIT_COLUMNS)
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        yield writer.writerow(CSV_HEADER)
        for row in events.iterator(chunk_size=2000):
            yield writer.writerow(csv_row(row))

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="lynx-audit-{stamp}.csv"'
    return response
