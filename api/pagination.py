"""Keyset pagination: a stable order by id, and a cursor that is the last id read. Reading on costs the same
at the 200,000th row as at the first (an offset would count through every row before it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.db.models import Model, QuerySet
from ninja import Schema

from api.errors import InvalidInput
from api.schemas import is_id

M = TypeVar("M", bound=Model)
DEFAULT_LIMIT, MAX_LIMIT = 50, 500


class PageQuery(Schema):
    cursor: str | None = None
    limit: int = DEFAULT_LIMIT


def page(
    queryset: QuerySet[M],
    query: PageQuery,
    serialize: Callable[[M], Any],
    *,
    newest_first: bool = False,
) -> dict[str, Any]:
    """`{"items": [...], "next_cursor": str | None}` for one page of `queryset`."""
    if not 1 <= query.limit <= MAX_LIMIT:
        raise InvalidInput({"limit": [f"limit is 1 to {MAX_LIMIT}."]})
    if query.cursor:
        if not is_id(query.cursor):
            raise InvalidInput(
                {"cursor": ["This cursor is not one a list gave: pass next_cursor as it came."]}
            )
        last = int(query.cursor)
        queryset = queryset.filter(pk__lt=last) if newest_first else queryset.filter(pk__gt=last)
    rows = list(queryset.order_by("-pk" if newest_first else "pk")[: query.limit + 1])
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    return {"items": [serialize(row) for row in rows], "next_cursor": str(rows[-1].pk) if more else None}
