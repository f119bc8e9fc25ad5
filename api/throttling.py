"""A rate per token (or per signed-in person), counted in Redis so every web process shares the count."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.cache import caches
from django.http import HttpRequest
from ninja.throttling import SimpleRateThrottle

log = logging.getLogger(__name__)


class TokenRateThrottle(SimpleRateThrottle):
    scope = "token"

    def __init__(self, rate: str | None = None) -> None:
        self.cache = caches["api"]
        super().__init__(rate or settings.LYNX_API_RATE)

    def get_cache_key(self, request: HttpRequest) -> str | None:
        token = getattr(request, "api_token", None)
        if token is not None:
            # The digest, not the id: ids come back after a test database is rolled back, digests never do.
            ident = f"t{token.digest[:24]}"
        elif request.user.is_authenticated:
            ident = f"u{request.user.pk}"
        else:
            return None  # refused by authentication anyway
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def allow_request(self, request: HttpRequest) -> bool:
        self.rate = settings.LYNX_API_RATE  # read per request: it may change without a restart (tests do)
        self.num_requests, self.duration = self.parse_rate(self.rate)
        try:
            return super().allow_request(request)
        except Exception as exc:  # noqa: BLE001 - Redis down: serve the request rather than refuse it
            log.warning("API rate limit not checked, the cache is unreachable: %s", exc)
            return True
