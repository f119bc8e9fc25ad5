"""The health check: database, broker and workers, with no login and no secrets."""

from __future__ import annotations

import redis
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return "ok"


def _check_broker() -> str:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def _ping_workers() -> int:
    from workers.celery import app

    return len(app.control.ping(timeout=1.0) or [])


@login_not_required
@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Database, broker and Celery workers; 200 when all are well, 503 otherwise. No secrets."""
    body: dict = {}
    for name, check in (("database", _check_database), ("broker", _check_broker)):
        try:
            body[name] = check()
        except Exception as exc:  # noqa: BLE001 - a health check reports, it does not raise
            body[name] = f"error: {type(exc).__name__}"
    workers = 0
    if body["broker"] == "ok":
        try:
            workers = _ping_workers()
        except Exception:  # noqa: BLE001
            workers = 0
    body["workers"] = workers
    healthy = body["database"] == "ok" and body["broker"] == "ok" and workers > 0
    body["status"] = "ok" if healthy else "degraded"
    return JsonResponse(body, status=200 if healthy else 503)
