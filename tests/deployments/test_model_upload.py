"""Registering a SavedModel from an uploaded .zip or .tar.gz: checked first, versioned like Azure, and every
bad upload refused with a message that leaves the database and the disk as they were."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from deployments.models import AuditEvent, RegisteredModel
from tests.deployments.conftest import login, pack, png
from tests.deployments.factories import ready_cluster, start_deployment

pytestmark = pytest.mark.django_db


def _post(
    client,
    archive: Path | bytes,
    name: str = "mnist",
    filename: str | None = None,
    labels: bytes | None = None,
):
    content = archive.read_bytes() if isinstance(archive, Path) else archive
    data = {
        "name": name,
        "archive": SimpleUploadedFile(
            filename or (archive.name if isinstance(archive, Path) else "m.zip"), content
        ),
    }
    if labels is not None:
        data["labels"] = SimpleUploadedFile("labels.txt", labels)
    return client.post("/models/new/", data)


def test_a_zipped_savedmodel_is_registered_with_its_signature_labels_and_size(
    deployer, demo_model_files, upload_dirs, tmp_path, settings
):
    archive = pack(demo_model_files / "model", tmp_path / "digits.zip")
    response = _post(
        login(deployer),
        archive,
        name="mnist",
        labels=b"zero\none\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\n",
    )
    model = RegisteredModel.objects.get(name="mnist")
    assert response.status_code == 302 and response["Location"] == f"/models/{model.pk}/"
    assert model.version == 1 and model.registered_by == deployer
    serving = model.signature["signatures"]["serving_default"]
    assert serving["inputs"] == {
        "image_bytes": {"dtype": "string", "shape": [None], "tensor": "serving_default_image_bytes:0"}
    }
    assert serving["outputs"]["probabilities"]["shape"] == [None, 10]
    assert model.labels.splitlines()[3] == "three"
    files = settings.LYNX_MODELS_DIR / "mnist" / "1" / "mnist"
    assert (files / "saved_model.pb").is_file() and (files / "variables").is_dir()
    assert (files / "labels.txt").read_text().splitlines()[3] == "three"
    assert model.size_bytes == sum(p.stat().st_size for p in files.rglob("*") if p.is_file())
    assert AuditEvent.objects.filter(
        action="model.register", resource_name="mnist", actor_name="dana"
    ).exists()
    assert not list(settings.LYNX_UPLOADS_DIR.iterdir())  # the unpacking folder is gone

    page = login(deployer).get(f"/models/{model.pk}/").content.decode()
    assert "image_bytes" in page and "probabilities" in page and "[None, 10]" in page and "dana" in page


def test_registering_the_same_name_again_makes_a_new_version(deployer, tf1_models, upload_dirs, tmp_path):
    client = login(deployer)
    first = pack(tf1_models / "digits-tf1", tmp_path / "a.tar.gz")
    assert _post(client, first, name="digits-tf1").status_code == 302
    assert _post(client, first, name="digits-tf1").status_code == 302
    assert list(RegisteredModel.objects.filter(name="digits-tf1").values_list("version", flat=True)) == [2, 1]
    # labels.txt inside the archive is the version's labels when no labels file is uploaded.
    assert RegisteredModel.objects.get(name="digits-tf1", version=2).labels.splitlines()[9] == "nine"


def test_the_models_page_lists_versions_sizes_signatures_and_where_they_are_deployed(
    deployer, viewer, demo_model
):
    start_deployment(deployer, ready_cluster(deployer), demo_model, name="digits-where")
    from deployments import model_archives

    demo_model.signature = model_archives.inspect_saved_model(demo_model.files_dir)
    demo_model.save()
    page = login(viewer).get("/models/").content.decode()
    assert "digits" in page and "image_bytes" in page and "digits-where" in page
    assert "Register a model" not in page  # a viewer reads, does not register


def _zip(entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            archive.writestr(info, target)
    return out.getvalue()


def _tar(entries: dict[str, bytes], links: dict[str, tuple[bytes, str]] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            archive.addfile(info)
    return out.getvalue()


BAD_ARCHIVES = {
    "not an archive": (png(), "photo.png", "is not a .zip or .tar.gz archive"),
    "text file": (b"hello, I am not a model\n" * 50, "model.zip", "is not a .zip or .tar.gz archive"),
    "no saved_model.pb": (
        _zip({"model/README.md": b"hi", "model/variables/x": b"1"}),
        "m.zip",
        "holds no saved_model.pb",
    ),
    "zip path traversal": (
        _zip({"model/saved_model.pb": b"x", "../../evil.txt": b"owned"}),
        "m.zip",
        "climbs out of it",
    ),
    "tar path traversal": (
        _tar({"model/saved_model.pb": b"x", "model/../../evil.txt": b"owned"}),
        "m.tar.gz",
        "climbs out of it",
    ),
    "tar absolute path": (
        _tar({"/tmp/evil.txt": b"owned", "model/saved_model.pb": b"x"}),
        "m.tar.gz",
        "absolute path",
    ),
    "zip symlink": (
        _zip({"model/saved_model.pb": b"x"}, {"model/variables": "/etc"}),
        "m.zip",
        "symbolic link",
    ),
    "tar symlink": (
        _tar({"model/saved_model.pb": b"x"}, {"model/variables": (tarfile.SYMTYPE, "/etc")}),
        "m.tar.gz",
        "link",
    ),
    "tar hard link": (
        _tar({"model/saved_model.pb": b"x"}, {"model/passwd": (tarfile.LNKTYPE, "/etc/passwd")}),
        "m.tar.gz",
        "link",
    ),
    "two savedmodels": (
        _zip({"a/saved_model.pb": b"x", "b/saved_model.pb": b"y"}),
        "m.zip",
        "holds 2 SavedModels",
    ),
    "corrupt saved_model.pb": (
        _zip({"model/saved_model.pb": b"\xff\xfe definitely not a protobuf" * 9}),
        "m.zip",
        "is not a SavedModel TensorFlow can read",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ARCHIVES))
def test_a_bad_archive_is_refused_with_a_message_and_changes_nothing(case, deployer, upload_dirs, tmp_path):
    content, filename, message = BAD_ARCHIVES[case]
    before = upload_dirs()
    response = _post(login(deployer), content, filename=filename)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert (
        not RegisteredModel.objects.exists()
        and not AuditEvent.objects.filter(action="model.register").exists()
    )
    assert upload_dirs() == before
    assert not (tmp_path.parent / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


@pytest.mark.parametrize(
    "model, message",
    [
        ("two-inputs", "serving_default takes 2 inputs (x, y)"),
        ("no-serving-default", "has no serving_default signature (it has: predict)"),
    ],
)
def test_a_savedmodel_without_one_serving_default_input_is_refused(
    model, message, deployer, tf1_models, upload_dirs, tmp_path
):
    archive = pack(tf1_models / model, tmp_path / "m.zip")
    before = upload_dirs()
    response = _post(login(deployer), archive)
    assert response.status_code == 400 and message in response.content.decode()
    assert not RegisteredModel.objects.exists()
    assert upload_dirs() == before


def test_an_upload_over_the_size_limit_is_cut_off_and_refused(deployer, upload_dirs, settings):
    settings.LYNX_MODEL_UPLOAD_MAX_BYTES = 64 * 1024
    before = upload_dirs()
    response = _post(login(deployer), os.urandom(200 * 1024), filename="big.zip")
    assert response.status_code == 400
    assert "The archive is over the 64 KiB upload limit" in response.content.decode()
    assert not RegisteredModel.objects.exists() and upload_dirs() == before


def test_an_archive_that_unpacks_to_more_than_the_limit_is_refused(deployer, upload_dirs, settings):
    settings.LYNX_MODEL_UPLOAD_MAX_BYTES = 256 * 1024  # unpacked limit: 1 MiB
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model/saved_model.pb", b"x")
        archive.writestr("model/variables/zeros.bin", b"\0" * (3 * 1024 * 1024))  # compresses to ~3 KB
    before = upload_dirs()
    response = _post(login(deployer), bomb.getvalue(), filename="bomb.zip")
    assert response.status_code == 400 and "unpacks to more than 1 MiB" in response.content.decode()
    assert not RegisteredModel.objects.exists() and upload_dirs() == before


def test_a_labels_file_that_is_not_text_is_refused(deployer, tf1_models, upload_dirs, tmp_path):
    archive = pack(tf1_models / "digits-tf1", tmp_path / "m.zip")
    before = upload_dirs()
    response = _post(login(deployer), archive, labels=b"\x89PNG\r\n\x1a\n\x00\x00binary")
    assert response.status_code == 400 and "labels file is not text" in response.content.decode()
    assert not RegisteredModel.objects.exists() and upload_dirs() == before


def test_a_labels_count_that_does_not_match_the_outputs_is_a_warning(
    deployer, tf1_models, upload_dirs, tmp_path
):
    archive = pack(tf1_models / "digits-tf1", tmp_path / "m.zip")
    client = login(deployer)
    response = _post(client, archive, labels=b"cat\ndog\n")
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert "names 2 classes but the model scores 10" in page
    assert RegisteredModel.objects.get().labels == "cat\ndog"


@pytest.mark.parametrize("name", ["bad name", "../x", "-lead", "x" * 65])
def test_a_model_name_azure_would_refuse_is_refused(name, deployer, upload_dirs):
    response = _post(login(deployer), _zip({"m/saved_model.pb": b"x"}), name=name)
    assert response.status_code == 400 and not RegisteredModel.objects.exists()


def test_a_viewer_cannot_register_a_model(viewer, tf1_models, tmp_path, upload_dirs):
    client = login(viewer)
    assert client.get("/models/new/").status_code == 403
    response = _post(client, pack(tf1_models / "digits-tf1", tmp_path / "m.zip"))
    assert response.status_code == 403 and not RegisteredModel.objects.exists()
