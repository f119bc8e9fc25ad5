"""Model uploads are bounded while they are read: a zip's entry count before zipfile indexes it, a tar's
every member (skipped ones too) before it is decompressed, the labels file as it streams in. Every refusal is
a message on the form, nothing registered, nothing left under the upload folders; what a killed process
leaves behind is swept."""

from __future__ import annotations

import io
import os
import struct
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.files.uploadhandler import TemporaryFileUploadHandler

from deployments import model_archives
from deployments.models import AuditEvent, RegisteredModel
from deployments.services.registered_models import model_upload, uploads_sweep
from tests.deployments.conftest import login, pack

pytestmark = pytest.mark.django_db


def _post(client, content: bytes, filename: str, labels: bytes | None = None):
    data = {"name": "mnist", "archive": SimpleUploadedFile(filename, content)}
    if labels is not None:
        data["labels"] = SimpleUploadedFile("labels.txt", labels)
    return client.post("/models/new/", data)


def _assert_refused(response, message: str, upload_dirs, before: set[str]) -> None:
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not RegisteredModel.objects.exists()
    assert not AuditEvent.objects.filter(action="model.register").exists()
    assert upload_dirs() == before


def _zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


def _end_record(data: bytes) -> tuple[int, tuple]:
    position = data.rindex(b"PK\x05\x06")
    return position, struct.unpack(zipfile.structEndArchive, data[position : position + 22])


def _zip64_claiming(entries: int, markers: bool = True, cd_size: int | None = None) -> bytes:
    """A one-file zip whose ZIP64 end-of-central-directory record claims `entries` entries (and, given,
    a central directory of `cd_size` bytes). Without `markers` the plain end record claims one entry,
    yet zipfile believes the ZIP64 record all the same."""
    data = _zip({"model/saved_model.pb": b"x"})
    position, end = _end_record(data)
    real_size, cd_offset = end[5], end[6]
    record = struct.pack(
        zipfile.structEndArchive64,
        *(b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, cd_size or real_size, cd_offset),
    )
    locator = struct.pack(zipfile.structEndArchive64Locator, b"PK\x06\x07", 0, position, 1)
    if markers:
        end = (b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return data[:position] + record + locator + struct.pack(zipfile.structEndArchive, *end)


def _zip_understating(real_entries: int) -> bytes:
    """A genuine zip of `real_entries` empty files whose end record says it holds one."""
    data = _zip({"model/saved_model.pb": b"x", **{f"model/e/{i}": b"" for i in range(real_entries - 1)}})
    position, fields = _end_record(data)
    end = struct.pack(zipfile.structEndArchive, fields[0], 0, 0, 1, 1, *fields[5:])
    return data[:position] + end


@pytest.fixture
def zip_index_spy(monkeypatch):
    """Once called, records (and refuses) any attempt to build zipfile's in-memory index of an archive."""
    opened: list[str] = []

    def refuse(*args, **kwargs):
        opened.append(str(args[0]) if args else "?")
        raise AssertionError("zipfile.ZipFile indexed an archive that should have been refused first")

    def start() -> list[str]:
        monkeypatch.setattr(zipfile, "ZipFile", refuse)
        return opened

    return start


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: _zip64_claiming(2_000_000), "holds more than 20000 entries"),
        (lambda: _zip64_claiming(2_000_000, markers=False), "holds more than 20000 entries"),
        (lambda: _zip_understating(20_001), "holds more than 20000 entries"),
        (lambda: _zip64_claiming(1, cd_size=2**30), "table of contents is over 64 MiB"),
    ],
    ids=["zip64", "zip64 without markers", "understated count", "huge directory"],
)
def test_a_zip_with_too_many_entries_is_refused_before_zipfile_reads_its_index(
    build, message, deployer, upload_dirs, zip_index_spy
):
    content = build()
    before = upload_dirs()
    opened = zip_index_spy()
    response = _post(login(deployer), content, "many.zip")
    _assert_refused(response, message, upload_dirs, before)
    assert opened == []


def test_a_zip_under_the_entry_limit_still_reaches_the_model_checks(deployer, upload_dirs):
    response = _post(login(deployer), _zip({"model/README.md": b"hi"}), "m.zip")
    assert response.status_code == 400 and "holds no saved_model.pb" in response.content.decode()


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def _tar_gz(path: Path, members: list[tuple[str, int]], kind: bytes = tarfile.REGTYPE) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, size in members:
            info = tarfile.TarInfo(name)
            info.size = size
            archive.addfile(info, io.BufferedReader(_Zeros(size)) if size else None)
    return path


@pytest.fixture
def gzip_reach(monkeypatch) -> list[int]:
    """How far into the decompressed stream any gzip reader went (reads and seeks both decompress)."""
    import gzip

    reached = [0]
    seek = gzip.GzipFile.seek  # GzipFile.tell() is seek(0, 1): call the original, not the spy
    for method in ("read", "seek"):
        original = getattr(gzip.GzipFile, method)

        def spy(self, *args, _original=original, **kwargs):
            result = _original(self, *args, **kwargs)
            reached[0] = max(reached[0], seek(self, 0, 1))
            return result

        monkeypatch.setattr(gzip.GzipFile, method, spy)
    return reached


def test_a_skipped_macos_member_counts_and_a_bomb_is_refused_before_it_is_decompressed(
    deployer, upload_dirs, settings, tmp_path, gzip_reach
):
    settings.LYNX_MODEL_UPLOAD_MAX_BYTES = 256 * 1024  # unpacked limit: 1 MiB
    bomb = _tar_gz(
        tmp_path / "bomb.tar.gz",
        [("model/saved_model.pb", 1), ("__MACOSX/model/._zeros", 64 * 2**20), ("model/after", 1)],
    )
    assert bomb.stat().st_size < 256 * 1024
    before = upload_dirs()
    response = _post(login(deployer), bomb.read_bytes(), "bomb.tar.gz")
    _assert_refused(response, "unpacks to more than 1 MiB", upload_dirs, before)
    assert gzip_reach[0] < 64 * 1024  # refused at the member's header, not after inflating 64 MiB


def test_a_tar_header_extension_too_large_to_be_a_name_is_refused_unread(
    deployer, upload_dirs, settings, tmp_path, gzip_reach
):
    settings.LYNX_MODEL_UPLOAD_MAX_BYTES = 256 * 1024
    # A GNU long-name header is read whole into memory by tarfile: one claiming 64 MiB must not be.
    path = tmp_path / "longname.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("././@LongLink")
        info.type, info.size = tarfile.GNUTYPE_LONGNAME, 64 * 2**20
        archive.addfile(info, io.BufferedReader(_Zeros(info.size)))
    before = upload_dirs()
    response = _post(login(deployer), path.read_bytes(), "longname.tar.gz")
    _assert_refused(response, "is damaged or hostile", upload_dirs, before)
    assert gzip_reach[0] < 64 * 1024


def test_every_tar_member_counts_toward_the_entry_limit_skipped_ones_too(
    deployer, upload_dirs, tmp_path, monkeypatch
):
    monkeypatch.setattr(model_archives, "MAX_MEMBERS", 50)
    archive = _tar_gz(
        tmp_path / "junk.tar.gz",
        [("model/saved_model.pb", 1)] + [(f"__MACOSX/model/._{i}", 0) for i in range(60)],
    )
    before = upload_dirs()
    response = _post(login(deployer), archive.read_bytes(), "junk.tar.gz")
    _assert_refused(response, "holds more than 50 entries", upload_dirs, before)


def _tar_entries(entries: list[tuple[str, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


NAME_CLASHES = {
    "zip: a file, then a folder of that name": (
        _zip({"model/saved_model.pb": b"x", "model/a": b"1", "model/a/b": b"2"}),
        "m.zip",
        "holds model/a both as a file and as a folder",
    ),
    "zip: a folder, then a file of that name": (
        _zip({"model/saved_model.pb": b"x", "model/a/b": b"2", "model/a": b"1"}),
        "m.zip",
        "holds model/a both as a file and as a folder",
    ),
    "tar: a folder entry, then a file of that name": (
        _tar_entries([("model/saved_model.pb", b"x"), ("model/v", None), ("model/v", b"1")]),
        "m.tar.gz",
        "holds model/v both as a file and as a folder",
    ),
    "tar: a file, then a folder entry of that name": (
        _tar_entries([("model/saved_model.pb", b"x"), ("model/v", b"1"), ("model/v", None)]),
        "m.tar.gz",
        "holds model/v both as a file and as a folder",
    ),
    "zip: a name over 255 bytes": (
        _zip({"model/saved_model.pb": b"x", f"model/{'n' * 256}": b"1"}),
        "m.zip",
        "over 255 bytes",
    ),
    "tar: a folder name over 255 bytes": (
        _tar_entries([("model/saved_model.pb", b"x"), (f"model/{'é' * 128}/x", b"1")]),
        "m.tar.gz",
        "over 255 bytes",
    ),
    "zip: a path over 1024 bytes": (
        _zip({"model/saved_model.pb": b"x", "model/" + "d/" * 600 + "x": b"1"}),
        "m.zip",
        "a path over 1024 bytes",
    ),
}


@pytest.mark.parametrize("case", sorted(NAME_CLASHES))
def test_a_name_the_disk_cannot_hold_is_refused_with_a_message(case, deployer, upload_dirs):
    content, filename, message = NAME_CLASHES[case]
    before = upload_dirs()
    response = _post(login(deployer), content, filename)
    _assert_refused(response, message, upload_dirs, before)


def test_a_labels_upload_stops_streaming_at_its_limit_and_is_refused(
    deployer, upload_dirs, tmp_path, demo_model_files, monkeypatch
):
    kept = {"labels": 0}
    original = TemporaryFileUploadHandler.receive_data_chunk

    def counting(self, raw_data, start):
        kept[self.field_name] = kept.get(self.field_name, 0) + len(raw_data)
        return original(self, raw_data, start)

    monkeypatch.setattr(TemporaryFileUploadHandler, "receive_data_chunk", counting)
    archive = pack(demo_model_files / "model", tmp_path / "digits.zip")
    before = upload_dirs()
    response = _post(login(deployer), archive.read_bytes(), "digits.zip", labels=b"cat\n" * (2 * 2**20))
    _assert_refused(response, "The labels file is over 1024 KiB", upload_dirs, before)
    # Written to disk up to the limit (and one chunk), then no further: the other 7 MiB went nowhere.
    assert kept["labels"] <= model_archives.LABELS_MAX_BYTES + 64 * 1024


def test_a_failure_of_any_kind_while_unpacking_leaves_no_folder_behind(
    deployer, upload_dirs, tmp_path, demo_model_files, monkeypatch
):
    archive = pack(demo_model_files / "model", tmp_path / "digits.zip")

    def killed(*args, **kwargs):
        raise SystemExit(1)  # what gunicorn raises in a worker it aborts for running too long

    monkeypatch.setattr(model_archives, "inspect_saved_model", killed)
    before = upload_dirs()
    with pytest.raises(SystemExit):
        model_upload(user=deployer, name="mnist", archive=archive)
    assert upload_dirs() == before and not RegisteredModel.objects.exists()


def _aged(path: Path, hours: float) -> Path:
    then = time.time() - hours * 3600
    os.utime(path, (then, then))
    return path


def test_the_sweep_removes_upload_and_unpack_leftovers_older_than_the_limit(settings, tmp_path):
    settings.LYNX_UPLOADS_DIR = uploads = tmp_path / "uploads"
    settings.LYNX_MODELS_DIR = tmp_path / "models"
    settings.FILE_UPLOAD_TEMP_DIR = str(uploads / "django")  # in ours: the folder stays, its old files go
    staging, temp = settings.LYNX_MODELS_DIR / ".staging", Path(settings.FILE_UPLOAD_TEMP_DIR)
    for folder in (uploads, staging, temp):
        folder.mkdir(parents=True, exist_ok=True)
    stale = [uploads / "unpack-old", staging / "0123abcd"]
    for folder in stale:
        (folder / "files" / "variables").mkdir(parents=True)
        (folder / "files" / "variables" / "v.data").write_bytes(b"0" * 1024)
        _aged(folder, 7)
    stale_upload = temp / "tmpab12.upload.zip"  # Django's temporary file of a request that was killed
    stale_upload.touch()
    _aged(stale_upload, 7)
    fresh = [uploads / "unpack-now", staging / "fedc3210", temp / "tmpcd34.upload.zip"]
    fresh[0].mkdir()
    fresh[1].mkdir()
    fresh[2].touch()
    model_files = settings.LYNX_MODELS_DIR / "mnist" / "1" / "mnist"
    model_files.mkdir(parents=True)
    _aged(settings.LYNX_MODELS_DIR / "mnist", 100)

    _aged(temp, 7)
    removed = uploads_sweep(older_than_hours=6)

    assert removed == 3
    assert not any(p.exists() for p in [*stale, stale_upload])
    assert all(p.exists() for p in fresh) and temp.is_dir()
    assert model_files.is_dir()  # registered models are never touched


def test_the_sweep_runs_periodically_from_the_one_schedule():
    import workers.tasks  # noqa: F401 - registers the tasks with the app
    from workers.celery import app
    from workers.schedule import beat_schedule

    entry = beat_schedule()["sweep-uploads"]
    assert entry["task"] == "workers.tasks.sweep_uploads" and entry["task"] in app.tasks
    assert 60 <= entry["schedule"] <= 6 * 3600


def test_django_keeps_request_bodies_on_disk_not_in_memory():
    # Form fields are held in memory up to this; files over FILE_UPLOAD_MAX_MEMORY_SIZE go to disk, and the
    # upload views stream every file to disk whatever its size.
    assert 0 < django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE <= 10 * 2**20
    assert 0 < django_settings.FILE_UPLOAD_MAX_MEMORY_SIZE <= 10 * 2**20
