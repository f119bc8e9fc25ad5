"""Operations: what a long action is doing, and its progress lines."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Query, Router, Schema

from api.errors import InvalidInput, NotFound
from api.pagination import PageQuery, page
from api.schemas import REFUSALS, OperationOut, operation_out
from deployments.models import Operation
from deployments.states import OperationState

router = Router()
MAX_LINES = 500


class OperationQuery(PageQuery):
    state: str = ""  # queued | running | succeeded | failed
    kind: str = ""
    resource: str = ""  # the cluster's or deployment's name


class OperationPage(Schema):
    items: list[OperationOut]
    next_cursor: str | None


@router.get("", response={200: OperationPage, **REFUSALS}, summary="Operations, newest first")
def operation_list(request: HttpRequest, query: Query[OperationQuery]) -> dict:
    operations = Operation.objects.all()
    if query.state:
        if query.state not in OperationState.values:
            states = ", ".join(OperationState.values)
            raise InvalidInput({"state": [f"No operation state {query.state}: one of {states}."]})
        operations = operations.filter(state=query.state)
    if query.kind:
        operations = operations.filter(kind=query.kind)
    if query.resource:
        operations = operations.filter(resource_name=query.resource)
    return page(operations, query, operation_out, newest_first=True)


@router.get(
    "/{int:operation_id}",
    response={200: OperationOut, **REFUSALS},
    url_name="operation_get",
    summary="One operation, with its progress lines after `after_line` (a line id)",
)
def operation_get(request: HttpRequest, operation_id: int, after_line: int = 0) -> dict:
    operation = Operation.objects.filter(pk=operation_id).first()
    if operation is None:
        raise NotFound(f"No operation {operation_id}.")
    lines = list(
        operation.lines.filter(id__gt=after_line)
        .order_by("id")
        .values("id", "created_at", "text")[:MAX_LINES]
    )
    return operation_out(
        operation, [{"id": line["id"], "at": line["created_at"], "text": line["text"]} for line in lines]
    )
