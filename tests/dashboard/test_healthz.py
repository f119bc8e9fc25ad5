import json

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_healthz_needs_no_login_and_says_503_without_a_worker(client):
    response = client.get(reverse("healthz"))
    body = json.loads(response.content)
    assert response.status_code == 503
    assert body["database"] == "ok" and body["broker"] == "ok" and body["workers"] == 0


@pytest.mark.slow
def test_healthz_is_200_when_database_broker_and_a_worker_answer(client, celery_processes):
    celery_processes("worker")
    response = client.get(reverse("healthz"))
    body = json.loads(response.content)
    assert response.status_code == 200, body
    assert body == {"database": "ok", "broker": "ok", "workers": 1, "status": "ok"}


def test_healthz_shows_no_secrets(client, settings):
    text = client.get(reverse("healthz")).content.decode()
    assert settings.SECRET_KEY not in text
    assert "redis://" not in text and "unix://" not in text and "postgres" not in text


def test_healthz_reports_a_broker_that_is_down(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get(reverse("healthz"))
    body = json.loads(response.content)
    assert response.status_code == 503
    assert body["broker"].startswith("error:") and body["workers"] == 0


def test_healthz_is_503_with_the_reason_while_the_database_is_down(client, monkeypatch):
    from django.db import connections

    # The check runs on its own connection, which is opened with these settings: a database that is gone.
    default = connections.settings["default"]
    if default["ENGINE"].endswith("sqlite3"):
        monkeypatch.setitem(default, "NAME", "/nonexistent/lynx/db.sqlite3")
    else:
        monkeypatch.setitem(default, "HOST", "127.0.0.1")
        monkeypatch.setitem(default, "PORT", "1")
    response = client.get(reverse("healthz"))
    body = json.loads(response.content)
    assert response.status_code == 503
    assert body["database"] == "error: OperationalError" and body["broker"] == "ok", body
    assert body["status"] == "degraded" and body["reason"].startswith("database error: OperationalError")


def test_healthz_answers_503_in_bounded_time_when_the_broker_never_replies(client, settings, monkeypatch):
    import socket
    import time

    from dashboard.views import health

    silent = socket.socket()  # accepts connections (the kernel's backlog) and never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    settings.REDIS_URL = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    monkeypatch.setattr(health, "CHECK_SECONDS", 1.0)  # shorter than the broker client's own 2 s timeout
    try:
        started = time.monotonic()
        response = client.get(reverse("healthz"))
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    body = json.loads(response.content)
    assert response.status_code == 503 and elapsed < 1.8, (elapsed, body)
    assert body["broker"] == "error: no answer within 1 s" and body["workers"] == 0
    assert body["reason"] == "broker error: no answer within 1 s"
