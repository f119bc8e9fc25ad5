"""Around every request: what its audit events came through starts empty and is put back at its end, so a
server thread's next request never inherits the token of its last."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from deployments.services.audit import audit_via_scope


def audit_via_middleware(get_response: Callable[[HttpRequest], HttpResponse]):
    def middleware(request: HttpRequest) -> HttpResponse:
        with audit_via_scope():
            return get_response(request)

    return middleware
