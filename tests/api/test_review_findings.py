"""What the outside review of the API reproduced, each a test before its fix."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.uploadhandler import FileUploadHandler
from django.test import Client
from django.utils import timezone

from api.models import ApiToken
from tests.api.conftest import bearer

pytestmark = pytest.mark.django_db

HANDLED: list[str] = []


class RecordingUploadHandler(FileUploadHandler):
    """Stands in for Django's handlers: notes that a body was parsed into files (for real: to disk)."""

    def new_file(self, *args, **kwargs) -> None:
        HANDLED.append(args[1] if len(args) > 1 else "file")
        super().new_file(*args, **kwargs)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        return None

    def file_complete(self, file_size: int) -> None:
        return None


def multipart(size: int) -> tuple[bytes, str]:
    boundary = "lynxboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="x"; filename="big.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + b"\0" * size
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("path", ["/api/v1/clusters", "/api/v1/models", "/api/v1/deployments"])
def test_a_write_without_a_token_is_401_before_its_body_is_read(settings, path):
    """M1: ninja's session check ran Django's CSRF check first, which parses a multipart body (to disk) for
    anyone sending a made-up csrftoken cookie, and then answered 403."""
    settings.FILE_UPLOAD_HANDLERS = [f"{__name__}.RecordingUploadHandler"]
    HANDLED.clear()
    client = Client(enforce_csrf_checks=True)
    client.cookies["csrftoken"] = "abcdefghijklmnopqrstuvwxyzABCDEF"
    body, content_type = multipart(1024 * 1024)
    response = client.generic("POST", path, body, content_type=content_type)
    assert response.status_code == 401
    assert HANDLED == []


def test_a_viewers_session_write_is_403_before_its_body_is_read(settings, viewer):
    settings.FILE_UPLOAD_HANDLERS = [f"{__name__}.RecordingUploadHandler"]
    HANDLED.clear()
    client = Client(enforce_csrf_checks=True)
    client.force_login(viewer)
    client.cookies["csrftoken"] = "abcdefghijklmnopqrstuvwxyzABCDEF"
    body, content_type = multipart(1024 * 1024)
    response = client.generic("POST", "/api/v1/models", body, content_type=content_type)
    assert response.status_code == 403 and "viewer" in response.json()["detail"]
    assert HANDLED == []


def test_a_token_cannot_mint_a_token_that_outlives_it(client, deployer, token_for):
    """M2: a leaked one-day CI token could make a read-write token that never expires."""
    parent = token_for(deployer, "ci-1day", expires_days=1)
    response = client.post(
        "/api/v1/tokens", {"name": "forever"}, content_type="application/json", **bearer(parent)
    )
    assert response.status_code == 201 and response["Cache-Control"] == "no-store"
    child = ApiToken.objects.get(name="forever")
    assert child.expires_at is not None
    assert child.expires_at <= ApiToken.objects.get(name="ci-1day").expires_at
    longer = client.post(
        "/api/v1/tokens",
        {"name": "longer", "expires_days": 30},
        content_type="application/json",
        **bearer(parent),
    )
    assert longer.status_code == 201
    assert ApiToken.objects.get(name="longer").expires_at <= timezone.now() + timedelta(days=1)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/deployments/%C2%B2", 404),
        ("/api/v1/clusters/%C2%B2", 404),
        ("/api/v1/audit?cursor=%C2%B2", 400),
        ("/api/v1/deployments?cluster=%C2%B2", 200),  # a name no cluster has: nothing listed
        ("/api/v1/deployments/99999999999999999999999", 404),  # past a 64-bit id: a name, not found
    ],
)
def test_unicode_digits_are_not_ids_and_never_a_500(client, viewer, token_for, path, status):
    """L1: "²".isdigit() is True and int("²") raises: a 500 in HTML."""
    response = client.get(path, **bearer(token_for(viewer)))
    assert response.status_code == status
    assert response.json()


@pytest.mark.parametrize(
    ("payload", "field"),
    [({"name": "../x"}, "name"), ({"name": "ok", "expires_days": 0}, "expires_days")],
)
def test_bad_token_input_is_a_400_naming_the_field(client, viewer, token_for, payload, field):
    """L4: it was a 409 with no per-field errors."""
    response = client.post(
        "/api/v1/tokens", payload, content_type="application/json", **bearer(token_for(viewer))
    )
    assert response.status_code == 400 and field in response.json()["errors"]


def test_live_tokens_per_person_are_capped(client, viewer, token_for, settings):
    """L2: the rate is per token, so tokens are capped per person."""
    from api.tokens import MAX_LIVE_TOKENS

    secret = token_for(viewer, "first")
    for number in range(MAX_LIVE_TOKENS - 1):
        token_for(viewer, f"t{number}")
    response = client.post(
        "/api/v1/tokens", {"name": "one-more"}, content_type="application/json", **bearer(secret)
    )
    assert response.status_code == 409 and "revoke one" in response.json()["detail"]


def test_a_json_body_over_djangos_limit_is_a_json_413(client, deployer, token_for):
    """L6: RequestDataTooBig came out as Django's HTML 400."""
    body = '{"name": "' + "x" * (3 * 1024 * 1024) + '"}'
    response = client.post(
        "/api/v1/clusters", body, content_type="application/json", **bearer(token_for(deployer))
    )
    assert response.status_code == 413 and "detail" in response.json()


def test_an_unknown_operation_state_is_bad_input(client, viewer, token_for):
    response = client.get("/api/v1/operations?state=bogus", **bearer(token_for(viewer)))
    assert response.status_code == 400 and "state" in response.json()["errors"]
