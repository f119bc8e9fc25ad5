"""The health check: database, broker and workers, with no login and no secrets."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import redis
from celery import current_app
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

# The whole check answers within about this long, whatever hangs: a load balancer's probe must get its
# 503 while the database or the broker is down, not a timeout of its own.
CHECK_SECONDS = 3.0


def _check_database() -> str:
    # Runs in its own thread, so on its own connection: closed here, never left to the request's.
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()
    return "ok"


def _check_broker() -> str:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def _ping_workers() -> int:
    return len(current_app.control.ping(timeout=1.0) or [])


class _Bounded(threading.Thread):
    """Runs one check in a daemon thread, so a check stuck on a dead host is abandoned, not waited for."""

    def __init__(self, check: Callable[[], object]) -> None:
        super().__init__(name=f"healthz-{check.__name__}", daemon=True)
        self.check = check
        self.result: object = None

    def run(self) -> None:
        try:
            self.result = self.check()
        except Exception as exc:  # noqa: BLE001 - a health check reports, it does not raise
            self.result = f"error: {type(exc).__name__}"

    def outcome(self, deadline: float) -> object:
        self.join(max(0.0, deadline - time.monotonic()))
        return f"error: no answer within {CHECK_SECONDS:.0f} s" if self.is_alive() else self.result


def _run(*checks: Callable[[], object], deadline: float) -> list[object]:
    threads = [_Bounded(check) for check in checks]
    for thread in threads:
        thread.start()
    return [thread.outcome(deadline) for thread in threads]


@login_not_required
@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Database, broker and Celery workers; 200 when all are well, 503 with the reason otherwise. No secrets.
    Bounded: every check runs against one deadline of CHECK_SECONDS."""
    deadline = time.monotonic() + CHECK_SECONDS
    body: dict = {}
    body["database"], body["broker"] = _run(_check_database, _check_broker, deadline=deadline)
    workers = 0
    if body["broker"] == "ok":
        (answered,) = _run(_ping_workers, deadline=deadline)
        workers = answered if isinstance(answered, int) else 0
    body["workers"] = workers
    problems = [f"{name} {body[name]}" for name in ("database", "broker") if body[name] != "ok"]
    if body["broker"] == "ok" and not workers:
        problems.append("no worker answered")
    body["status"] = "degraded" if problems else "ok"
    if problems:
        body["reason"] = "; ".join(problems)
    return JsonResponse(body, status=503 if problems else 200)
