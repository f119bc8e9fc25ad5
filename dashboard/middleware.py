"""A 405 a person can read: Django's HttpResponseNotAllowed has an empty body, which a browser shows as
its own error page (reloading an action's answer, or opening an action's link in a new tab)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import Resolver404, get_script_prefix, resolve

# The API answers in JSON, its 405s included.
API_PREFIX = "/api/"


def page_above(path: str) -> str:
    """The nearest page above an action's path: /deployments/4/key/reveal/ leads back to /deployments/4/key/
    or /deployments/4/, whichever exists first; the overview if none does."""
    parts = [part for part in path.split("/") if part]
    while parts:
        parts.pop()
        candidate = "/" + "".join(f"{part}/" for part in parts)
        try:
            resolve(candidate)
        except Resolver404:
            continue
        return get_script_prefix() + candidate[1:]
    return get_script_prefix()


def method_not_allowed_page(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable:
    """Renders templates/405.html for an empty 405 answer to a page (not the API); keeps its Allow header."""

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        if (
            response.status_code != 405
            or request.path_info.startswith(API_PREFIX)
            or response.streaming
            or response.content
        ):
            return response
        page = render(
            request,
            "405.html",
            {"method": request.method, "back_to": page_above(request.path_info)},
            status=405,
        )
        if "Allow" in response:
            page["Allow"] = response["Allow"]
        return page

    return middleware
