"""Login is required everywhere but /healthz and the login page, for every URL the project defines.

The API (/api/v1/) is the exception that proves it: it sends nobody to a login page but answers 401 in JSON
(tests/api/test_api_permissions.py asks every operation without a token); only its OpenAPI document and docs
page, which hold no data, are open."""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

pytestmark = pytest.mark.django_db

OPEN = {"healthz", "login", "favicon"}  # favicon.ico: a redirect to the icon, asked before anyone logs in


def _named_routes(resolver=None, prefix=""):
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            if "admin" in str(entry.pattern) or str(entry.pattern).startswith("api/"):
                continue  # Django's admin has its own login; the API answers 401 itself
            yield from _named_routes(entry, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern) and entry.name != "api_not_found":
            yield entry.name, "/" + prefix + str(entry.pattern).replace("<int:pk>", "1")


def test_every_page_but_healthz_and_login_redirects_anonymous_users_to_login(client):
    routes = list(_named_routes())
    assert len(routes) >= 10
    for name, path in routes:
        if name in OPEN:
            continue
        for method in (client.get, client.post):
            response = method(path)
            assert response.status_code == 302, (name, path, response.status_code)
            assert response["Location"].startswith("/login/"), (name, path)


def test_login_page_and_healthz_are_open(client):
    assert client.get("/login/").status_code == 200
    assert client.get("/healthz").status_code in (200, 503)


def test_the_api_answers_401_not_a_login_page_and_only_its_description_is_open(client):
    refused = client.get("/api/v1/deployments")
    assert refused.status_code == 401 and refused["Content-Type"].startswith("application/json")
    assert client.get("/api/v1/openapi.json").status_code == 200
    assert client.get("/api/v1/docs").status_code == 200
