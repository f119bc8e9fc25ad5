"""What the browser gets when no page answers: the error pages in Lynx's layout, and the favicon it asks
for on its own. lynx/urls.py names the handlers (handler403/404/500)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.shortcuts import render
from django.template import loader
from django.templatetags.static import static
from django.views.decorators.http import require_safe

# PermissionDenied raised without a message still deserves a sentence.
FORBIDDEN_REASON = "Your role does not allow this."


def forbidden(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """403 with the reason the view gave (PermissionDenied's message), e.g. which role is needed."""
    reason = str(exception or "") or FORBIDDEN_REASON
    return render(request, "403.html", {"reason": reason}, status=403)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """404 in the layout. The exception's text is not shown: it names Lynx's tables, not the user's words."""
    return render(request, "404.html", {"request_path": request.path}, status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    """500 in the layout, rendered without the request: no context processors, so no database query and
    no user. The database may be what failed."""
    return HttpResponse(loader.get_template("500.html").render(), status=500)


@login_not_required
@require_safe
def favicon(request: HttpRequest) -> HttpResponse:
    """/favicon.ico, which browsers fetch for pages without an icon link (JSON, files): the SVG icon."""
    return HttpResponsePermanentRedirect(static("favicon.svg"))
