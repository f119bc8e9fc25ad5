"""Uploads streamed to a temporary file on disk, never held in memory, and cut off at a size limit."""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import wraps

from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt, csrf_protect

_HANDLER = "upload_handler"  # the request's LimitedUploadHandler, kept on the request


class CutOffUpload(UploadedFile):
    """A file that grew past its limit: no content kept, only its name and the size it reached.

    It still reaches the form, so the form refuses it by its size ("over 512 KiB") instead of acting as if
    nothing had been uploaded (and, say, deploying the text box's script in place of the uploaded one).
    """

    def __init__(self, name: str | None, size: int, content_type: str | None) -> None:
        super().__init__(io.BytesIO(), name, content_type, size)


class LimitedUploadHandler(TemporaryFileUploadHandler):
    """Streams each file to a temporary file; a file that grows past its limit (`max_bytes`, or its field's
    own in `field_limits`) is deleted at once, the rest of it is read and dropped, its field name is noted in
    `too_large` and the form gets a CutOffUpload in its place."""

    def __init__(self, request: HttpRequest, max_bytes: int, field_limits: dict[str, int] | None = None):
        super().__init__(request)
        self.max_bytes = max_bytes
        self.field_limits = field_limits or {}
        self.too_large: list[str] = []
        self.cut_off = False

    def new_file(self, *args, **kwargs) -> None:
        super().new_file(*args, **kwargs)
        self.cut_off = False

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        if self.cut_off:
            return None
        if start + len(raw_data) > self.field_limits.get(self.field_name, self.max_bytes):
            self.cut_off = True
            self.too_large.append(self.field_name)
            self.file.close()  # a NamedTemporaryFile: closing deletes what was written so far
            return None
        return super().receive_data_chunk(raw_data, start)

    def file_complete(self, file_size: int) -> UploadedFile | None:
        if self.cut_off:
            return CutOffUpload(self.file_name, file_size, self.content_type)
        return super().file_complete(file_size)


def streamed_uploads(max_bytes: Callable[[], int] | int, field_limits: dict[str, int] | None = None):
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
            handler = LimitedUploadHandler(request, limit, field_limits)
            setattr(request, _HANDLER, handler)  # for too_large, once the view has read the body
            request.upload_handlers = [handler]
            return protected(request, *args, **kwargs)

        return wrapped

    return decorate


def too_large(request: HttpRequest, field: str) -> bool:
    handler = getattr(request, _HANDLER, None)
    return handler is not None and field in handler.too_large
