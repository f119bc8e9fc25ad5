"""Schemas every router shares: errors, pages, operations."""

from __future__ import annotations

from datetime import datetime

from django.http import HttpResponse
from django.urls import reverse
from ninja import Schema

from deployments.models import Operation


class Error(Schema):
    detail: str


class InvalidInputError(Schema):
    detail: str
    errors: dict[str, list[str]]


class OperationLineOut(Schema):
    id: int
    at: datetime
    text: str


class OperationOut(Schema):
    id: int
    url: str
    kind: str
    state: str
    phase: str
    progress: int  # 0-100
    finished: bool
    error: str
    resource_type: str  # cluster | deployment | workspace
    resource_name: str
    requested_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    lines: list[OperationLineOut] | None = None  # only on GET /operations/{id}


class OperationStarted(Schema):
    operation: OperationOut
    warnings: list[str] = []


# Every answer an endpoint may give besides its own: the OpenAPI document lists them.
REFUSALS: dict[int, type[Schema]] = {400: InvalidInputError, 401: Error, 403: Error, 404: Error, 409: Error}


def operation_out(operation: Operation, lines: list[dict] | None = None) -> dict:
    if operation.deployment_id:
        resource_type = "deployment"
    elif operation.cluster_id:
        resource_type = "cluster"
    else:
        resource_type = "workspace" if operation.workspace_id else ""
    return {
        "id": operation.pk,
        "url": reverse("api:operation_get", kwargs={"operation_id": operation.pk}),
        "kind": operation.kind,
        "state": operation.state,
        "phase": operation.phase,
        "progress": operation.progress,
        "finished": operation.is_finished,
        "error": operation.error,
        "resource_type": resource_type,
        "resource_name": operation.resource_name,
        "requested_by": operation.requested_by_name,
        "created_at": operation.created_at,
        "started_at": operation.started_at,
        "finished_at": operation.finished_at,
        "lines": lines,
    }


def started(
    response: HttpResponse, operation: Operation, warnings: list[str] | None = None
) -> tuple[int, dict]:
    """A long action's answer: 202, the operation, and where to follow it."""
    body = operation_out(operation)
    response["Location"] = body["url"]
    return 202, {"operation": body, "warnings": warnings or []}


def is_id(text: str) -> bool:
    """A path or query value that is a row id: ASCII digits only ("²".isdigit() is True; int() refuses it),
    short enough for a 64-bit column."""
    return text.isascii() and text.isdigit() and len(text) <= 18
