"""Guessing passwords is throttled (django-axes): after a few failures for one username from one address, even
the right password is refused for a cool-off period, with a message on the login page; the failures are
recorded."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

pytestmark = pytest.mark.django_db

LIMIT = settings.AXES_FAILURE_LIMIT


def _log_in(client, username: str, password: str, ip: str = "203.0.113.7"):
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=ip)


def _guess(client, username: str, times: int, ip: str = "203.0.113.7") -> None:
    for attempt in range(times):
        response = _log_in(client, username, f"wrong-guess-{attempt}", ip)
        assert response.status_code in (200, 429)
        assert "_auth_user_id" not in client.session


def test_the_right_password_is_refused_after_too_many_wrong_ones(client, viewer):
    assert 3 <= LIMIT <= 10
    _guess(client, viewer.username, LIMIT)
    response = _log_in(client, viewer.username, "pw-" + viewer.username)
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    page = response.content.decode()
    assert "Too many failed logins" in page and "minutes" in page
    assert 'name="password"' in page  # still the login page, not a bare error


def test_failures_short_of_the_limit_do_not_lock(client, viewer):
    _guess(client, viewer.username, LIMIT - 1)
    response = _log_in(client, viewer.username, "pw-" + viewer.username)
    assert response.status_code == 302 and client.session["_auth_user_id"] == str(viewer.pk)


def test_the_lock_is_per_username_and_address(client, viewer, deployer):
    _guess(client, viewer.username, LIMIT)
    # Another person from the same address, and the same person from another address, still log in.
    assert _log_in(client, deployer.username, "pw-" + deployer.username).status_code == 302
    client.logout()
    response = _log_in(client, viewer.username, "pw-" + viewer.username, ip="198.51.100.20")
    assert response.status_code == 302


def test_the_lock_ends_after_the_cool_off(client, viewer):
    from axes.models import AccessAttempt

    _guess(client, viewer.username, LIMIT)
    assert _log_in(client, viewer.username, "pw-" + viewer.username).status_code == 429
    cooled_off = timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    AccessAttempt.objects.update(attempt_time=cooled_off)
    assert _log_in(client, viewer.username, "pw-" + viewer.username).status_code == 302


def test_failures_are_recorded_with_username_and_address(client, viewer):
    from axes.models import AccessAttempt

    _guess(client, viewer.username, 2)
    attempt = AccessAttempt.objects.get(username=viewer.username)
    assert attempt.failures_since_start == 2 and attempt.ip_address == "203.0.113.7"


def test_a_made_up_forwarded_for_header_does_not_dodge_the_lock(client, viewer):
    _guess(client, viewer.username, LIMIT)
    response = client.post(
        reverse("login"),
        {"username": viewer.username, "password": "pw-" + viewer.username},
        REMOTE_ADDR="203.0.113.7",
        HTTP_X_FORWARDED_FOR="198.51.100.99",
    )
    assert response.status_code == 429


def test_behind_the_trusted_proxy_the_address_is_the_one_it_appended(client, viewer, settings):
    from axes.models import AccessAttempt

    settings.LYNX_TRUST_PROXY_HEADERS = True
    for attempt in range(2):
        client.post(
            reverse("login"),
            {"username": viewer.username, "password": f"wrong-{attempt}"},
            REMOTE_ADDR="172.18.0.5",  # nginx's container
            HTTP_X_FORWARDED_FOR="10.9.9.9, 203.0.113.50",  # the left entry came from the client
        )
    assert AccessAttempt.objects.get(username=viewer.username).ip_address == "203.0.113.50"
