"""Error pages a person can read, in Lynx's layout: 403 with the reason, 404, 405 (an action's address opened
again) and 500 (without the database); the favicon; the skip link."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.test import RequestFactory
from django.urls import get_resolver, reverse

from tests.deployments.factories import ready_cluster

LAYOUT = 'class="brand"'  # the layout's header, on every page that extends base.html


@pytest.mark.django_db
def test_a_viewer_opening_the_deploy_page_is_told_which_role_it_needs(client, viewer):
    client.force_login(viewer)
    response = client.get(reverse("deployment_new"))
    assert response.status_code == 403
    page = response.content.decode()
    assert "Your role is viewer: ask an admin for the deployer role." in page
    assert LAYOUT in page and reverse("audit_list") in page  # the layout, its navigation included


@pytest.mark.django_db
def test_a_missing_deployment_gets_the_404_page_without_the_internal_message(client, viewer):
    client.force_login(viewer)
    response = client.get("/deployments/987654/")
    assert response.status_code == 404
    page = response.content.decode()
    assert "Page not found" in page and "/deployments/987654/" in page and LAYOUT in page
    assert "matches the given query" not in page  # get_object_or_404's words name a table


@pytest.mark.django_db
def test_an_unknown_address_gets_the_404_page_before_logging_in(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert "Page not found" in response.content.decode()


def test_the_500_page_is_in_the_layout_and_needs_neither_a_user_nor_the_database():
    # No django_db mark: any query here fails the test. The request has no user, as when the failure is
    # in the middleware that would have set it.
    handler = get_resolver().resolve_error_handler(500)
    response = handler(RequestFactory().get("/clusters/1/"))
    assert response.status_code == 500
    page = response.content.decode()
    assert "Something went wrong" in page and LAYOUT in page and "skip-link" in page


@pytest.mark.django_db
def test_reloading_an_action_shows_the_405_page_leading_back_to_its_page(client, deployer):
    cluster = ready_cluster(deployer, "reload-1")
    client.force_login(deployer)
    response = client.get(reverse("cluster_delete", args=[cluster.pk]))
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    page = response.content.decode()
    assert "Nothing to show here" in page and LAYOUT in page
    assert f'href="{reverse("cluster_detail", args=[cluster.pk])}"' in page


@pytest.mark.django_db
def test_the_api_keeps_its_own_405(client):
    response = client.put("/api/v1/operations")
    assert response.status_code == 405
    assert LAYOUT not in response.content.decode()


@pytest.mark.django_db
def test_the_favicon_is_linked_from_every_page_and_answers_at_favicon_ico(client, viewer):
    client.force_login(viewer)
    page = client.get(reverse("overview")).content.decode()
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in page
    icon = client.get("/static/favicon.svg")
    assert icon.status_code == 200 and icon["Content-Type"] == "image/svg+xml"
    assert b"<svg" in b"".join(icon.streaming_content)
    client.logout()
    redirect = client.get("/favicon.ico")  # browsers ask before anyone logs in
    assert redirect.status_code == 301 and redirect["Location"] == "/static/favicon.svg"


class _Focusable(HTMLParser):
    """The body's focusable elements in document order, as (tag, attributes)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []
        self.main_id: str | None = None
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self._in_body = self._in_body or tag == "body"
        if tag == "main":
            self.main_id = a.get("id")
        focusable = tag in ("button", "input", "select", "textarea") or (tag == "a" and "href" in a)
        if self._in_body and focusable:
            self.found.append((tag, a))


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["overview", "login"])
def test_the_first_focusable_element_skips_to_main(client, viewer, name):
    if name != "login":
        client.force_login(viewer)
    parser = _Focusable()
    parser.feed(client.get(reverse(name)).content.decode())
    tag, attrs = parser.found[0]
    assert (tag, attrs["href"]) == ("a", "#main")
    assert parser.main_id == "main"
