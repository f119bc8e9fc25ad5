"""`lynx models register` streams the archive as multipart: the server gets every byte, the client never holds
the whole file."""

from __future__ import annotations

import email.parser
import email.policy
import os
import tracemalloc
from pathlib import Path

from tests.cli.conftest import FakeLynx, Reply, Seen

ARCHIVE_MB = 24


def _parts(seen: Seen) -> dict[str, tuple[str | None, bytes]]:
    """The form's parts as the server's multipart parser sees them: name → (filename, bytes)."""
    head = f"Content-Type: {seen.headers['Content-Type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + seen.body)
    found = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        found[str(name)] = (part.get_filename(), payload)
    return found


def _registered(seen: Seen) -> Reply:
    return Reply(
        201, {"model": {"name": "digits", "version": 4}, "warnings": ["labels.txt names 11 classes."]}
    )


def test_register_streams_the_archive_as_multipart_without_holding_it(lynx: FakeLynx, run, tmp_path: Path):
    lynx.on("POST", "/api/v1/models", _registered)
    archive = tmp_path / "digits savedmodel.tar.gz"
    archive.write_bytes(os.urandom(ARCHIVE_MB * 2**20))
    labels = tmp_path / "labels.txt"
    labels.write_text("zero\none\ntwo\n")

    tracemalloc.start()
    try:
        result = run(
            "models",
            "register",
            "digits",
            str(archive),
            "--labels",
            str(labels),
            "--description",
            "MNIST, v4",
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert result.code == 0, result.err
    assert result.out == "Registered digits version 4\n"
    assert result.err == "lynx: warning: labels.txt names 11 classes.\n"
    # Read whole (as requests' own files= does), the archive alone would be a 24 MB peak.
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MB while sending a {ARCHIVE_MB} MB archive"
    (seen,) = lynx.requests_to("POST", "/api/v1/models")
    assert seen.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert int(seen.headers["Content-Length"]) == len(seen.body)
    assert "Transfer-Encoding" not in seen.headers  # Django's servers do not take chunked bodies
    parts = _parts(seen)
    assert parts["name"] == (None, b"digits")
    assert parts["description"] == (None, b"MNIST, v4")
    assert parts["labels"] == ("labels.txt", b"zero\none\ntwo\n")
    assert parts["archive"][0] == "digits savedmodel.tar.gz"
    assert parts["archive"][1] == archive.read_bytes()


def test_a_rate_limited_upload_is_sent_again_whole(lynx: FakeLynx, run, tmp_path: Path):
    lynx.on(
        "POST",
        "/api/v1/models",
        Reply(429, {"detail": "Over 600/m."}, {"Retry-After": "0"}),
        Reply(201, {"model": {"name": "digits", "version": 1}, "warnings": []}),
    )
    archive = tmp_path / "model.zip"
    archive.write_bytes(os.urandom(300_000))

    assert run("models", "register", "digits", str(archive)).code == 0

    first, second = lynx.requests_to("POST", "/api/v1/models")
    assert first.body == second.body
    assert _parts(second)["archive"] == ("model.zip", archive.read_bytes())


def test_a_missing_archive_is_refused_before_anything_is_sent(lynx: FakeLynx, run, tmp_path: Path):
    result = run("models", "register", "digits", str(tmp_path / "nope.zip"))

    assert (result.code, result.err) == (1, f"lynx: {tmp_path / 'nope.zip'}: no such file\n")
    assert lynx.seen == []
