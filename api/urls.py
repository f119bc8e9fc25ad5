from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, JsonResponse
from django.urls import path, re_path

from api import views
from api.api import api


def _open_to_tokens(patterns: list) -> list:
    """The API answers 401 itself: the pages' LoginRequiredMiddleware must not send it to the login page."""
    for pattern in patterns:
        if hasattr(pattern, "url_patterns"):
            _open_to_tokens(pattern.url_patterns)
        else:
            pattern.callback.login_required = False
    return patterns


@login_not_required
def api_not_found(request: HttpRequest, rest: str) -> JsonResponse:
    """A path the API does not have: said in JSON, as every other API answer."""
    return JsonResponse({"detail": f"The API has no {request.path}: see /api/v1/docs."}, status=404)


# Not unpacked into app_name: include() would take this module for an app namespace of that name.
_API = api.urls
urlpatterns = [
    path("api/v1/", (_open_to_tokens(list(_API[0])), _API[1], _API[2])),
    re_path(r"^api/(?P<rest>.*)$", api_not_found, name="api_not_found"),
    path("account/tokens/", views.token_list, name="token_list"),
    path("account/tokens/<int:pk>/revoke/", views.token_revoke_view, name="token_revoke"),
]
