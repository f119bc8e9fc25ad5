"""Tokens: shown once, stored hashed, refused with a reason when bad, revoked at once, audited."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from api.models import ApiToken
from deployments.models import AuditEvent
from tests.api.conftest import bearer

pytestmark = pytest.mark.django_db


def test_a_token_acts_as_its_owner_with_their_role(client, deployer, token_for):
    response = client.get("/api/v1/me", **bearer(token_for(deployer, "ci")))
    assert response.status_code == 200
    body = response.json()
    assert body["username"] == "dana" and body["role"] == "deployer"
    assert body["token"] == {"name": "ci", "read_only": False, "expires_at": None}


def test_only_the_hash_is_stored(deployer, token_for):
    secret = token_for(deployer, "ci")
    row = ApiToken.objects.get(name="ci")
    assert row.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in (row.digest, row.prefix) and secret.startswith(row.prefix)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "Sign in: send Authorization: Bearer <token>"),
        ("Bearer lynx_not-a-token", "Unknown token."),
        ("Bearer abc", "This is not a Lynx API token"),
        ("Token lynx_x", "Send the token as Authorization: Bearer <token>."),
    ],
)
def test_a_missing_or_bad_token_gets_401_with_a_reason(client, header, reason):
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    response = client.get("/api/v1/operations", **extra)
    assert response.status_code == 401
    assert response.json()["detail"].startswith(reason)
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_an_expired_token_is_refused_saying_when_it_expired(client, deployer, token_for):
    secret = token_for(deployer, "old", expires_days=1)
    ApiToken.objects.filter(name="old").update(expires_at=timezone.now() - timedelta(minutes=1))
    response = client.get("/api/v1/me", **bearer(secret))
    assert response.status_code == 401 and 'The token "old" expired on' in response.json()["detail"]


def test_revoking_takes_effect_at_the_next_request(client, deployer, token_for):
    secret = token_for(deployer, "ci")
    other = token_for(deployer, "other")
    assert client.get("/api/v1/me", **bearer(secret)).status_code == 200
    response = client.delete("/api/v1/tokens/ci", **bearer(other))
    assert response.status_code == 200 and response.json()["status"] == "revoked"
    refused = client.get("/api/v1/me", **bearer(secret))
    assert refused.status_code == 401 and refused.json()["detail"] == 'The token "ci" was revoked.'
    events = AuditEvent.objects.filter(action="token.revoke", resource_name="ci")
    assert [(e.actor_name, e.via) for e in events] == [("dana", "token other")]


def test_a_disabled_account_signs_nothing_in(client, deployer, token_for):
    secret = token_for(deployer, "ci")
    deployer.is_active = False
    deployer.save()
    response = client.get("/api/v1/me", **bearer(secret))
    assert response.status_code == 401 and "disabled" in response.json()["detail"]


def test_a_read_only_token_reads_and_is_refused_every_write(client, deployer, token_for):
    secret = token_for(deployer, "ro", read_only=True)
    assert client.get("/api/v1/operations", **bearer(secret)).status_code == 200
    response = client.post(
        "/api/v1/tokens", {"name": "more"}, content_type="application/json", **bearer(secret)
    )
    assert response.status_code == 403 and response.json()["detail"] == 'The token "ro" is read-only.'
    assert not ApiToken.objects.filter(name="more").exists()


def test_a_role_change_applies_to_existing_tokens(client, deployer, token_for):
    secret = token_for(deployer, "ci")
    deployer.groups.clear()
    assert client.get("/api/v1/me", **bearer(secret)).json()["role"] == "viewer"


def test_a_token_made_through_the_api_is_shown_once_and_audited(client, viewer, token_for):
    response = client.post(
        "/api/v1/tokens",
        {"name": "notebook", "expires_days": 7, "read_only": True},
        content_type="application/json",
        **bearer(token_for(viewer, "first")),
    )
    assert response.status_code == 201
    body = response.json()
    assert body["token"].startswith("lynx_") and body["read_only"] and body["expires_at"]
    listed = client.get("/api/v1/tokens", **bearer(body["token"])).json()
    assert {t["name"] for t in listed} == {"first", "notebook"}
    assert all("token" not in t for t in listed)  # the secret is never listed
    event = AuditEvent.objects.get(action="token.create", resource_name="notebook")
    assert event.actor_name == "vera" and event.via == "token first" and event.after["read_only"] is True


@pytest.mark.parametrize(
    ("payload", "field"),
    [({"name": "has space"}, "name"), ({"name": "ok", "expires_days": 0}, "expires_days")],
)
def test_bad_token_input_is_refused_and_makes_nothing(client, viewer, token_for, payload, field):
    response = client.post(
        "/api/v1/tokens", payload, content_type="application/json", **bearer(token_for(viewer))
    )
    assert response.status_code in (400, 409)
    assert ApiToken.objects.count() == 1


def test_a_second_live_token_of_the_same_name_is_refused(client, viewer, token_for):
    secret = token_for(viewer, "ci")
    response = client.post(
        "/api/v1/tokens", {"name": "ci"}, content_type="application/json", **bearer(secret)
    )
    assert response.status_code == 409 and "already has a token named ci" in response.json()["detail"]


def test_the_session_reads_but_writes_only_with_csrf(viewer):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(viewer)
    assert browser.get("/api/v1/me").json()["username"] == "vera"
    refused = browser.post("/api/v1/tokens", {"name": "x"}, content_type="application/json")
    assert refused.status_code == 403
    assert not ApiToken.objects.exists()
    browser.get("/account/tokens/")  # sets the CSRF cookie, as the docs page's visitor would have
    csrf = browser.cookies["csrftoken"].value
    made = browser.post(
        "/api/v1/tokens", {"name": "x"}, content_type="application/json", HTTP_X_CSRFTOKEN=csrf
    )
    assert made.status_code == 201
    assert AuditEvent.objects.get(action="token.create").via == ""  # through the pages' session


def test_the_tokens_page_shows_a_new_token_once_and_revokes(client, deployer):
    client.force_login(deployer)
    response = client.post("/account/tokens/", {"name": "laptop", "expires_days": "30"})
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    secret = response.context["secret"]
    assert secret.startswith("lynx_") and secret in response.content.decode()
    again = client.get("/account/tokens/").content.decode()
    assert secret not in again and "laptop" in again and secret[:9] in again
    token = ApiToken.objects.get(name="laptop")
    assert client.post(f"/account/tokens/{token.pk}/revoke/").status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert Client().get("/api/v1/me", **bearer(secret)).status_code == 401


def test_someone_elses_token_cannot_be_revoked_from_the_page(client, deployer, viewer, token_for):
    token_for(deployer, "mine")
    client.force_login(viewer)
    token = ApiToken.objects.get(name="mine")
    assert client.post(f"/account/tokens/{token.pk}/revoke/").status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_the_command_prints_only_the_token(admin_user):
    out, err = StringIO(), StringIO()
    call_command("lynx_token", "create", "ada", "--name", "ci", "--expires-days", "3", stdout=out, stderr=err)
    secret = out.getvalue().strip()
    assert secret.startswith("lynx_") and "\n" not in secret
    assert Client().get("/api/v1/me", **bearer(secret)).json()["username"] == "ada"
    event = AuditEvent.objects.get(action="token.create")
    assert event.actor_name == "system" and event.after["owner"] == "ada"
    listing = StringIO()
    call_command("lynx_token", "list", stdout=listing)
    assert "ada\tci\t" in listing.getvalue() and secret not in listing.getvalue()
    call_command("lynx_token", "revoke", "ada", "ci", stdout=StringIO(), stderr=StringIO())
    assert Client().get("/api/v1/me", **bearer(secret)).status_code == 401


def test_the_command_refuses_an_unknown_person_and_a_bad_name(admin_user):
    with pytest.raises(CommandError, match="No user nobody"):
        call_command("lynx_token", "create", "nobody", "--name", "ci", stdout=StringIO())
    with pytest.raises(CommandError, match="A token name is"):
        call_command("lynx_token", "create", "ada", "--name", "a b", stdout=StringIO())
    assert not ApiToken.objects.exists()


def test_a_path_the_api_lacks_is_a_json_404_not_the_login_page(client):
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404 and "/api/v1/docs" in response.json()["detail"]
