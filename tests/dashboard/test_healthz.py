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
