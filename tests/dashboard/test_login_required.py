"""Login is required everywhere but /healthz and the login page, for every URL the project defines."""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

pytestmark = pytest.mark.django_db

OPEN = {"healthz", "login"}


def _named_routes(resolver=None, prefix=""):
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            if "admin" in str(entry.pattern):
                continue  # Django's admin has its own login
            yield from _named_routes(entry, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
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
