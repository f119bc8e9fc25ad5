"""/api/v1/models: registered versions as JSON, and registering an uploaded SavedModel with the model page's
checks: streamed to a temporary file, cut off at the size limit, a bad archive refused with the page's
message, nothing left behind by a refusal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.test import Client

from api.routes import models as model_routes
from deployments.model_archives import LABELS_MAX_BYTES
from deployments.models import AuditEvent, RegisteredModel
from tests.api.conftest import bearer
from tests.deployments import conftest as page_fixtures
from tests.deployments.conftest import pack, png
from tests.deployments.factories import ready_cluster, start_deployment

pytestmark = pytest.mark.django_db

# The model page's fixtures: tiny TF1 SavedModels, and the upload folders a refusal must leave as they were.
tf1_models = page_fixtures.tf1_models
upload_dirs = page_fixtures.upload_dirs

DIGITS = "\n".join(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]).encode()


@pytest.fixture
def digits_zip(tf1_models, tmp_path) -> Path:
    """A tiny TF1 SavedModel of the 8x8 digits (ten classes), zipped."""
    return pack(tf1_models / "digits-tf1", tmp_path / "digits.zip")


def _upload(client, headers: dict, archive: Path | bytes, name: str = "mnist", **extra):
    content = archive.read_bytes() if isinstance(archive, Path) else archive
    filename = archive.name if isinstance(archive, Path) else extra.pop("filename", "m.zip")
    data = {"name": name, "archive": SimpleUploadedFile(filename, content), **extra}
    return client.post("/api/v1/models", data, **headers)


def _registered(name: str, version: int = 1, **fields) -> RegisteredModel:
    return RegisteredModel.objects.create(
        name=name, version=version, path=f"{name}/{version}/{name}", **fields
    )


# --- registering --------------------------------------------------------------------------------------


def test_a_deployer_registers_an_uploaded_savedmodel(
    client, deployer, token_for, digits_zip, upload_dirs, settings
):
    headers = bearer(token_for(deployer, "ci"))
    response = _upload(
        client,
        headers,
        digits_zip,
        labels=SimpleUploadedFile("labels.txt", DIGITS),
        description="8x8 digits",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    model = RegisteredModel.objects.get(name="mnist")
    assert body["warnings"] == []
    registered = body["model"]
    assert (registered["id"], registered["name"], registered["version"]) == (model.pk, "mnist", 1)
    assert registered["labels"][3] == "three" and registered["description"] == "8x8 digits"
    assert registered["registered_by"] == "dana" and registered["size_bytes"] == model.size_bytes > 0
    assert registered["url"] == f"/models/{model.pk}/" and registered["deployments"] == []
    assert "serving_default" in registered["signature"]["signatures"]
    assert (settings.LYNX_MODELS_DIR / "mnist" / "1" / "mnist" / "saved_model.pb").is_file()
    event = AuditEvent.objects.get(action="model.register")
    assert (event.actor_name, event.resource_name, event.via) == ("dana", "mnist", "token ci")
    assert not list(settings.LYNX_UPLOADS_DIR.iterdir())  # the unpacking folder is gone


def test_the_same_name_again_is_the_next_version(client, deployer, token_for, digits_zip, upload_dirs):
    headers = bearer(token_for(deployer))
    assert _upload(client, headers, digits_zip).status_code == 201
    again = _upload(client, headers, digits_zip)
    assert again.status_code == 201 and again.json()["model"]["version"] == 2
    # labels.txt inside the archive is the version's labels when no labels file is sent.
    assert again.json()["model"]["labels"][9] == "nine"


def test_a_labels_count_that_does_not_match_the_outputs_is_a_warning(
    client, deployer, token_for, digits_zip, upload_dirs
):
    response = _upload(
        client, bearer(token_for(deployer)), digits_zip, labels=SimpleUploadedFile("l.txt", b"cat\ndog\n")
    )
    assert response.status_code == 201
    assert response.json()["warnings"] == [
        "The labels file names 2 classes but the model scores 10: check that it matches the model's outputs."
    ]
    assert RegisteredModel.objects.get().labels == "cat\ndog"


def test_the_archive_is_streamed_to_a_temporary_file_as_on_the_page(
    client, deployer, token_for, digits_zip, upload_dirs, settings, monkeypatch
):
    seen: list[Path] = []
    real = model_routes.model_upload

    def spy(**kwargs):
        seen.append(kwargs["archive"])
        assert kwargs["archive"].is_file()
        return real(**kwargs)

    monkeypatch.setattr(model_routes, "model_upload", spy)
    # Small enough for Django's default handlers to keep in memory: the page's handler writes it to disk.
    assert digits_zip.stat().st_size < settings.FILE_UPLOAD_MAX_MEMORY_SIZE
    assert _upload(client, bearer(token_for(deployer)), digits_zip).status_code == 201
    assert seen and seen[0].parent == Path(settings.FILE_UPLOAD_TEMP_DIR)
    assert not seen[0].exists()  # and removed once the request is over


@pytest.mark.parametrize(
    ("content", "filename", "message"),
    [
        (png(), "photo.png", "is not a .zip or .tar.gz archive"),
        (b"hello, I am not a model\n" * 50, "model.zip", "is not a .zip or .tar.gz archive"),
    ],
)
def test_a_bad_archive_is_refused_with_the_page_message_and_changes_nothing(
    client, deployer, token_for, upload_dirs, content, filename, message
):
    headers = bearer(token_for(deployer))
    before, events = upload_dirs(), AuditEvent.objects.count()
    response = _upload(client, headers, content, filename=filename)
    assert response.status_code == 400
    assert message in response.json()["errors"]["archive"][0] and message in response.json()["detail"]
    assert not RegisteredModel.objects.exists() and AuditEvent.objects.count() == events
    assert upload_dirs() == before


def test_an_archive_over_the_size_limit_is_cut_off_and_refused(
    client, deployer, token_for, upload_dirs, settings
):
    settings.LYNX_MODEL_UPLOAD_MAX_BYTES = 64 * 1024
    headers = bearer(token_for(deployer))
    before = upload_dirs()
    response = _upload(client, headers, os.urandom(200 * 1024), filename="big.zip")
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "archive": ["The archive is over the 64 KiB upload limit; nothing was kept."]
    }
    assert not RegisteredModel.objects.exists() and upload_dirs() == before


def test_a_labels_file_over_its_limit_is_refused(client, deployer, token_for, digits_zip, upload_dirs):
    headers = bearer(token_for(deployer))
    before = upload_dirs()
    labels = SimpleUploadedFile("labels.txt", b"x\n" * (LABELS_MAX_BYTES // 2 + 1))
    response = _upload(client, headers, digits_zip, labels=labels)
    assert (
        response.status_code == 400
        and "labels file is over 1024 KiB" in response.json()["errors"]["labels"][0]
    )
    assert not RegisteredModel.objects.exists() and upload_dirs() == before


@pytest.mark.parametrize("name", ["bad name", "-lead", "x" * 65])
def test_a_model_name_azure_would_refuse_is_a_400(client, deployer, token_for, digits_zip, upload_dirs, name):
    response = _upload(client, bearer(token_for(deployer)), digits_zip, name=name)
    assert response.status_code == 400 and "name" in response.json()["errors"]
    assert not RegisteredModel.objects.exists()


def test_an_upload_without_an_archive_is_a_400(client, deployer, token_for, upload_dirs):
    response = client.post("/api/v1/models", {"name": "mnist"}, **bearer(token_for(deployer)))
    assert response.status_code == 400
    # Said by field (ninja's validation names where the field was expected: "file.archive").
    assert [field for field in response.json()["errors"] if field.endswith("archive")]
    assert not RegisteredModel.objects.exists()


def test_a_viewer_may_not_register_and_nothing_is_kept(client, viewer, token_for, digits_zip, upload_dirs):
    headers = bearer(token_for(viewer))
    before = upload_dirs()
    response = _upload(client, headers, digits_zip)
    assert response.status_code == 403
    assert response.json() == {"detail": "Your role is viewer: ask an admin for the deployer role."}
    assert not RegisteredModel.objects.exists() and upload_dirs() == before
    assert not AuditEvent.objects.filter(action="model.register").exists()


def test_a_viewers_upload_is_never_written_to_disk(
    client, viewer, deployer, token_for, digits_zip, upload_dirs, monkeypatch
):
    written: list[int] = []
    real = TemporaryFileUploadHandler.receive_data_chunk

    def spy(self, raw_data: bytes, start: int):
        written.append(len(raw_data))
        return real(self, raw_data, start)

    monkeypatch.setattr(TemporaryFileUploadHandler, "receive_data_chunk", spy)
    assert _upload(client, bearer(token_for(viewer)), digits_zip).status_code == 403
    assert written == []
    assert _upload(client, bearer(token_for(deployer)), digits_zip).status_code == 201
    assert sum(written) == digits_zip.stat().st_size


def test_a_read_only_token_may_not_register(client, deployer, token_for, digits_zip, upload_dirs):
    response = _upload(client, bearer(token_for(deployer, "ro", read_only=True)), digits_zip)
    assert response.status_code == 403 and response.json()["detail"] == 'The token "ro" is read-only.'
    assert not RegisteredModel.objects.exists()


def test_the_browser_session_registers_with_the_csrf_token_only(deployer, digits_zip, upload_dirs):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(deployer)
    browser.get("/models/new/")  # the page sets the CSRF cookie
    refused = _upload(browser, {}, digits_zip)
    assert refused.status_code == 403 and not RegisteredModel.objects.exists()
    token = browser.cookies["csrftoken"].value
    assert _upload(browser, {"HTTP_X_CSRFTOKEN": token}, digits_zip).status_code == 201


# --- reading ------------------------------------------------------------------------------------------


def test_the_list_holds_every_version_oldest_first(client, viewer, token_for):
    _registered("digits", 1)
    _registered("digits", 2)
    _registered("cats", 1, labels="cat\ndog")
    headers = bearer(token_for(viewer))
    first = client.get("/api/v1/models?limit=2", **headers).json()
    assert [(m["name"], m["version"]) for m in first["items"]] == [("digits", 1), ("digits", 2)]
    rest = client.get(f"/api/v1/models?limit=2&cursor={first['next_cursor']}", **headers).json()
    assert [(m["name"], m["labels"]) for m in rest["items"]] == [("cats", ["cat", "dog"])]
    assert rest["next_cursor"] is None and "signature" not in rest["items"][0]


def test_a_model_lists_its_versions_newest_first_with_their_live_deployments(
    client, deployer, viewer, token_for
):
    first = _registered("digits", 1)
    _registered("digits", 2)
    _registered("other", 1)
    start_deployment(deployer, ready_cluster(deployer), first, name="digits-live")
    body = client.get("/api/v1/models/digits", **bearer(token_for(viewer))).json()
    assert body["name"] == "digits" and body["latest_version"] == 2
    assert [(v["version"], v["deployments"]) for v in body["versions"]] == [(2, []), (1, ["digits-live"])]


def test_one_version_has_its_signature(client, viewer, token_for):
    _registered("digits", 1, signature={"signatures": {"serving_default": {"inputs": {}}}})
    body = client.get("/api/v1/models/digits/versions/1", **bearer(token_for(viewer))).json()
    assert body["version"] == 1 and body["signature"] == {"signatures": {"serving_default": {"inputs": {}}}}


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/api/v1/models/nothing", "No model named nothing."),
        ("/api/v1/models/digits/versions/7", "No version 7 of a model named digits."),
        ("/api/v1/models/nothing/versions/1", "No version 1 of a model named nothing."),
    ],
)
def test_an_unknown_model_or_version_is_a_404(client, viewer, token_for, path, detail):
    _registered("digits", 1)
    response = client.get(path, **bearer(token_for(viewer)))
    assert response.status_code == 404 and response.json() == {"detail": detail}


# --- who may -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("persona", "read_only", "expected"),
    [
        ("viewer", False, (200, 200, 200, 403)),
        ("outsider", False, (200, 200, 200, 403)),
        ("deployer", False, (200, 200, 200, 201)),
        ("admin_user", False, (200, 200, 200, 201)),
        ("deployer", True, (200, 200, 200, 403)),
    ],
)
def test_who_may_do_what(client, request, token_for, digits_zip, upload_dirs, persona, read_only, expected):
    _registered("digits", 1)
    headers = bearer(token_for(request.getfixturevalue(persona), "probe", read_only=read_only))
    got = (
        client.get("/api/v1/models", **headers).status_code,
        client.get("/api/v1/models/digits", **headers).status_code,
        client.get("/api/v1/models/digits/versions/1", **headers).status_code,
        _upload(client, headers, digits_zip, name="digits").status_code,
    )
    assert got == expected
    assert RegisteredModel.objects.filter(name="digits").count() == (2 if expected[-1] == 201 else 1)
