"""Uploads streamed to a temporary file on disk, never held in memory, and cut off at a size limit."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.core.files.uploadhandler import SkipFile, TemporaryFileUploadHandler
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt, csrf_protect


class LimitedUploadHandler(TemporaryFileUploadHandler):
    """Streams each file to a temporary file; a file that grows past `max_bytes` is dropped (and deleted)
    and its field name noted in `too_large`, so the form can say why instead of "this field is required"."""

    def __init__(self, request: HttpRequest, max_bytes: int) -> None:
        super().__init__(request)
        self.max_bytes = max_bytes
        self.too_large: list[str] = []

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        if start + len(raw_data) > self.max_bytes:
            self.too_large.append(self.field_name)
            raise SkipFile()
        return super().receive_data_chunk(raw_data, start)


def streamed_uploads(max_bytes: Callable[[], int] | int):
    """Install a LimitedUploadHandler before the body is parsed.

    CSRF checking reads request.POST, which parses the body with the handlers installed at that moment, so
    the view is exempted from the middleware and checked here, after the handler is in place (the pattern
    Django's docs give for per-view upload handlers).
    """

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        protected = csrf_protect(view)

        @csrf_exempt
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            limit = max_bytes() if callable(max_bytes) else max_bytes
            request.upload_handler = LimitedUploadHandler(request, limit)
            request.upload_handlers = [request.upload_handler]
            return protected(request, *args, **kwargs)

        return wrapped

    return decorate


def too_large(request: HttpRequest, field: str) -> bool:
    handler = getattr(request, "upload_handler", None)
    return handler is not None and field in handler.too_large
