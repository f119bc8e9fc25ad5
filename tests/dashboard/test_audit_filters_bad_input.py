"""The audit log's filters refuse what they cannot use (dates out of range, garbage) with a message on the
page, never a server error; the CSV export refuses the same input with a plain 400."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.urls import reverse

from deployments.services.audit import audit_record

pytestmark = pytest.mark.django_db

BAD_FILTERS = [
    {"until": "9999-12-31"},
    {"since": "9999-12-31"},
    {"since": "0001-01-01"},
    {"until": "0001-01-01"},
    {"since": "0001-01-01", "until": "9999-12-31"},
    {"since": "10000-01-01"},
    {"since": "0000-01-01"},
    {"until": "2026-02-30"},
    {"since": "garbage"},
    {"until": "99999999999999999999"},
    {"since": "2026-11-01T00:00"},
    {"person": "a\x00b"},
    {"action": "x" * 65},
]


def query_id(query: dict) -> str:
    return "&".join(f"{key}={value[:20]!r}" for key, value in query.items())


class Thing:
    name, pk = "c1", 1


@pytest.fixture
def event(viewer):
    return audit_record(actor=viewer, action="cluster.create", resource=Thing())


@pytest.mark.parametrize("query", BAD_FILTERS, ids=query_id)
def test_the_page_shows_a_form_error_for_filters_it_cannot_use(client, viewer, event, query):
    client.force_login(viewer)
    response = client.get(reverse("audit_list"), query)
    assert response.status_code == 400
    html = response.content.decode()
    assert 'class="error"' in html and "Audit log" in html
    assert response.context["form"].errors
    assert response.context["rows"] == []  # nothing listed under a filter that was not applied


@pytest.mark.parametrize("query", BAD_FILTERS, ids=query_id)
def test_the_export_refuses_filters_it_cannot_use(client, viewer, event, query):
    client.force_login(viewer)
    response = client.get(reverse("audit_export"), query)
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode().startswith("Bad filter:")


def test_an_out_of_range_date_says_which_dates_are_allowed(client, viewer):
    client.force_login(viewer)
    response = client.get(reverse("audit_list"), {"until": "9999-12-31"})
    error = " ".join(response.context["form"].errors["until"])
    assert "1970-01-01" in error and "2999-12-31" in error
    # The browser's date picker offers only those dates.
    html = response.content.decode()
    assert 'min="1970-01-01"' in html and 'max="2999-12-31"' in html


def test_the_widest_allowed_range_lists_everything(client, viewer, event):
    client.force_login(viewer)
    wide = {"since": "1970-01-01", "until": "2999-12-31"}
    response = client.get(reverse("audit_list"), wide)
    assert response.status_code == 200
    assert [e.id for e, _ in response.context["rows"]] == [event.id]
    export = client.get(reverse("audit_export"), wide)
    assert export.status_code == 200
    assert len(b"".join(export.streaming_content).decode().strip().splitlines()) == 2


def test_today_is_still_a_fine_filter(client, viewer, event):
    client.force_login(viewer)
    today = date.today()
    response = client.get(
        reverse("audit_list"), {"since": (today - timedelta(days=1)).isoformat(), "until": today.isoformat()}
    )
    assert response.status_code == 200 and len(response.context["rows"]) == 1
