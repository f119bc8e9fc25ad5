"""Checking and unpacking an uploaded SavedModel archive (.zip or .tar.gz) before anything is registered.

An archive is refused, with a message that says why, when it is not a zip or tar archive, is larger than
the limits below, holds an absolute path, a `..` component, a link or a device file, or holds no (or more
than one) `saved_model.pb`. Files are copied out one by one with their real sizes counted, so a header that
lies about sizes cannot fill the disk. The caller owns `dest` and removes it whatever happens.

Every limit is enforced while the archive is read, before memory or disk is spent on what is over it: a zip's
entries are counted from its own end and central-directory records before zipfile indexes them in memory; a
compressed tar is inflated through a stream that refuses to go past the unpacked limit, and every member,
skipped ones included, counts toward the limits before its data is read.

The limits (README "Models"): an upload of at most LYNX_MODEL_UPLOAD_MAX_MB (default 1024 MiB), unpacking
to at most 4 times that, in at most 20 000 entries.
"""

from __future__ import annotations

import errno
import gzip
import json
import lzma
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO

from django.conf import settings

from deployments import archive_streams
from deployments.archive_streams import Damaged, Exceeded

MAX_MEMBERS = 20_000
NAME_MAX_BYTES = 255  # one file or folder name (what Linux file systems hold)
PATH_MAX_BYTES = 1024  # a whole path inside the archive (it is laid out again under the models folder)
INSPECT_TIMEOUT_S = 120
LABELS_MAX_BYTES = 1024 * 1024
_COPY_CHUNK = 1024 * 1024
_JUNK = ("__MACOSX/",)  # macOS Finder adds resource forks here; they are never part of a model
# tarfile reads a pax or GNU long-name header's data whole into memory; a name never needs this much.
_TAR_EXTENSION_MAX_BYTES = 1024 * 1024
# What a tar holds besides its files' bytes: a 512-byte header per member, padding, long names.
_TAR_OVERHEAD_PER_MEMBER = 4 * 1024
# zipfile reads a zip's central directory whole: 20 000 entries with 1 KiB paths fit in a fraction of this.
_ZIP_DIRECTORY_MAX_BYTES = 64 * 1024 * 1024


def upload_max_bytes() -> int:
    return int(getattr(settings, "LYNX_MODEL_UPLOAD_MAX_BYTES", 0) or 1024 * 1024 * 1024)


def unpacked_max_bytes() -> int:
    return 4 * upload_max_bytes()


def human_size(size: int) -> str:
    return f"{size / 2**20:.0f} MiB" if size >= 2**20 else f"{max(1, size // 1024)} KiB"


class ArchiveRefused(Exception):
    """The upload cannot become a model version; the message says why, in the user's terms."""


@dataclass
class Member:
    path: PurePosixPath
    is_dir: bool
    size: int
    open: Callable[[], IO[bytes] | None] = field(repr=False)  # a binary stream of the file's bytes


@dataclass(frozen=True)
class UnpackedModel:
    saved_model_dir: Path  # the directory holding saved_model.pb (registered as the model's files)
    labels: str  # labels.txt found in the archive next to or above the SavedModel ("" when none)
    signature: dict


def _safe_path(raw: str) -> PurePosixPath:
    name = raw.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveRefused(
            f"The archive holds an absolute path ({raw}); paths must be relative to the archive."
        )
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveRefused(f"The archive holds a path that climbs out of it ({raw}): nothing was unpacked.")
    if any("\x00" in p for p in parts):
        raise ArchiveRefused("The archive holds a file name with a NUL byte.")
    if len(name.encode("utf-8", "surrogateescape")) > PATH_MAX_BYTES:
        raise ArchiveRefused(
            f"The archive holds a path over {PATH_MAX_BYTES} bytes ({raw[:80]}…): "
            "that is deeper than a model needs."
        )
    for part in parts:
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX_BYTES:
            raise ArchiveRefused(
                f"The archive holds a name over {NAME_MAX_BYTES} bytes ({part[:60]}…), "
                "longer than a file system allows."
            )
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _zip_members(archive: zipfile.ZipFile) -> Iterator[Member]:
    for info in archive.infolist():
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise ArchiveRefused(
                f"The archive holds a symbolic link ({info.filename}); links are not accepted."
            )
        # Many zip writers (Python's writestr, Windows tools) leave the file-type bits empty: that is a file.
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise ArchiveRefused(f"The archive holds {info.filename}, which is not a regular file or folder.")
        if info.flag_bits & 0x1:
            raise ArchiveRefused(f"{info.filename} is encrypted: upload an archive without a password.")
        yield Member(_safe_path(info.filename), info.is_dir(), info.file_size, partial(archive.open, info))


def _tar_members(archive: tarfile.TarFile) -> Iterator[Member]:
    for info in archive:
        if info.issym() or info.islnk():
            raise ArchiveRefused(
                f"The archive holds a link ({info.name} -> {info.linkname}); links are not accepted."
            )
        if not (info.isfile() or info.isdir()):
            raise ArchiveRefused(f"The archive holds {info.name}, which is not a regular file or folder.")
        yield Member(_safe_path(info.name), info.isdir(), info.size, partial(archive.extractfile, info))


def _over_unpacked_limit(name: str) -> ArchiveRefused:
    return ArchiveRefused(
        f"The archive unpacks to more than {human_size(unpacked_max_bytes())} (at {name}): "
        "that is over Lynx's limit."
    )


def _too_many_entries() -> ArchiveRefused:
    return ArchiveRefused(f"The archive holds more than {MAX_MEMBERS} entries; that is over the limit.")


def _open_archive(path: Path, display_name: str, stack: ExitStack):
    """The archive opened for reading member by member, once its size on the inside is known to be bounded
    (zip) or is bounded while it is read (tar)."""
    if zipfile.is_zipfile(path):
        try:
            archive_streams.zip_entries_check(path, MAX_MEMBERS, _ZIP_DIRECTORY_MAX_BYTES)
            return stack.enter_context(zipfile.ZipFile(path)), _zip_members
        except Exceeded as exc:
            if exc.args[0] == "entries":
                raise _too_many_entries() from None
            raise ArchiveRefused(
                f"{display_name}'s table of contents is over {human_size(_ZIP_DIRECTORY_MAX_BYTES)}; "
                "that is over the limit."
            ) from None
        except (Damaged, zipfile.BadZipFile, OSError) as exc:
            raise ArchiveRefused(f"{display_name} looks like a zip file but cannot be read: {exc}") from exc
    # Headers, padding and long names ride on top of the files' bytes; a tar longer than that is refused
    # before it is inflated any further.
    ceiling = unpacked_max_bytes() + MAX_MEMBERS * _TAR_OVERHEAD_PER_MEMBER
    try:
        stream = stack.enter_context(archive_streams.decompressed(path))
        bounded = stack.enter_context(archive_streams.CeilingStream(stream, ceiling))
        tarinfo = archive_streams.guarded_tarinfo(_TAR_EXTENSION_MAX_BYTES)
        return stack.enter_context(tarfile.open(fileobj=bounded, mode="r:", tarinfo=tarinfo)), _tar_members
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError):
        raise ArchiveRefused(
            f"{display_name} is not a .zip or .tar.gz archive: upload the SavedModel folder packed as one."
        ) from None


def _copy_bounded(source: IO[bytes], target: Path, budget: int, name: str) -> int:
    written = 0
    with open(target, "xb") as out:
        while chunk := source.read(_COPY_CHUNK):
            written += len(chunk)
            if written > budget:
                raise _over_unpacked_limit(name)
            out.write(chunk)
    return written


def _kind_clash(root: Path, member: Member) -> PurePosixPath | None:
    """The path the archive holds both as a file and as a folder on the way to `member`, if any."""
    wanted = [(parent, True) for parent in reversed(member.path.parents) if str(parent) != "."]
    for path, is_dir in [*wanted, (member.path, member.is_dir)]:
        on_disk = root.joinpath(*path.parts)
        if (on_disk.is_dir() and not is_dir) or (on_disk.is_file() and is_dir):
            return path
    return None


def _write_member(root: Path, member: Member, budget: int) -> int:
    """Create the member's folder or copy its file under root; the bytes written."""
    target = root.joinpath(*member.path.parts)
    if not target.resolve().is_relative_to(root):  # belt and braces after _safe_path
        raise ArchiveRefused(f"The archive holds a path that climbs out of it ({member.path}).")
    if not member.is_dir:
        if target.is_dir():
            raise ArchiveRefused(f"The archive holds {member.path} both as a file and as a folder.")
        if target.exists():
            raise ArchiveRefused(f"The archive holds {member.path} twice.")
        if member.size > budget:  # a tar's header is the truth; a zip's is checked again while copying
            raise _over_unpacked_limit(str(member.path))
    try:
        (target if member.is_dir else target.parent).mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        # The disk is the index of what was unpacked: only on a clash is it asked which path clashed.
        if (clash := _kind_clash(root, member)) is None:
            raise
        raise ArchiveRefused(f"The archive holds {clash} both as a file and as a folder.") from None
    if member.is_dir:
        return 0
    stream = member.open()
    if stream is None:
        raise ArchiveRefused(f"{member.path} cannot be read from the archive.")
    with stream:
        return _copy_bounded(stream, target, budget, str(member.path))


def unpack(archive_path: Path, dest: Path, display_name: str = "The upload") -> list[PurePosixPath]:
    """Check every entry of the archive and copy its files under `dest` (which must be empty or absent).

    Returns the relative paths of the files written. Raises ArchiveRefused; `dest` may then hold a part of
    the archive: the caller removes it.
    """
    size = archive_path.stat().st_size
    if size > upload_max_bytes():
        raise ArchiveRefused(
            f"{display_name} is {human_size(size)}; the limit is {human_size(upload_max_bytes())}."
        )
    budget, count, files = unpacked_max_bytes(), 0, []
    member: Member | None = None
    try:
        with ExitStack() as stack:
            archive, members = _open_archive(archive_path, display_name, stack)
            dest.mkdir(parents=True, exist_ok=True)
            root = dest.resolve()
            for member in members(archive):
                count += 1
                if count > MAX_MEMBERS:
                    raise _too_many_entries()
                if (
                    str(member.path) == "."
                    or str(member.path).startswith(_JUNK)
                    or member.path.name == ".DS_Store"
                ):
                    # Not unpacked, yet counted: a tar inflates a skipped member all the same.
                    if member.size > budget:
                        raise _over_unpacked_limit(str(member.path))
                    budget -= member.size
                    continue
                budget -= _write_member(root, member, budget)
                if not member.is_dir:
                    files.append(member.path)
    except Exceeded as exc:
        if exc.args[0] == "entries":
            raise _too_many_entries() from None
        raise _over_unpacked_limit(str(member.path) if member else "its start") from None
    except Damaged as exc:
        raise ArchiveRefused(f"{display_name} is damaged or hostile: {exc}.") from None
    except (
        zipfile.BadZipFile,
        tarfile.TarError,
        gzip.BadGzipFile,
        EOFError,
        zlib.error,
        lzma.LZMAError,
    ) as exc:
        raise ArchiveRefused(f"{display_name} is damaged and cannot be unpacked: {exc}") from exc
    except OSError as exc:
        # What the checks above do not foresee (a full disk, a file system's own limits): still a message.
        where = f" at {member.path}" if member else ""
        reason = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
        raise ArchiveRefused(f"{display_name} cannot be unpacked here{where}: {reason}.") from None
    return files


def find_saved_model(root: Path, files: list[PurePosixPath]) -> Path:
    found = [f for f in files if f.name == "saved_model.pb"]
    if not found:
        hint = (
            " (a saved_model.pbtxt is there: export it as binary)"
            if any(f.name == "saved_model.pbtxt" for f in files)
            else ""
        )
        raise ArchiveRefused(
            "The archive holds no saved_model.pb: upload the folder that tf.saved_model.save (or "
            f"SavedModelBuilder) wrote, packed as .zip or .tar.gz{hint}."
        )
    if len(found) > 1:
        listed = ", ".join(str(f) for f in sorted(found)[:5])
        raise ArchiveRefused(
            f"The archive holds {len(found)} SavedModels ({listed}); upload one model at a time."
        )
    return root.joinpath(*found[0].parent.parts)


def find_labels(saved_model_dir: Path, root: Path) -> str:
    directory = saved_model_dir
    while True:
        candidate = directory / "labels.txt"
        if candidate.is_file() and candidate.stat().st_size <= LABELS_MAX_BYTES:
            try:
                return candidate.read_text(encoding="utf-8-sig")
            except UnicodeDecodeError:
                return ""
        if directory == root or directory == directory.parent:
            return ""
        directory = directory.parent


def inspect_saved_model(saved_model_dir: Path) -> dict:
    """Signatures of the SavedModel, read by `python -m scoring.inspect_model` in a subprocess (TensorFlow
    stays out of this process)."""
    try:
        result = subprocess.run(
            [sys.executable, "-m", "scoring.inspect_model", str(saved_model_dir)],
            capture_output=True,
            text=True,
            timeout=INSPECT_TIMEOUT_S,
            cwd=settings.BASE_DIR,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""},
        )
    except subprocess.TimeoutExpired:
        raise ArchiveRefused(
            f"Reading the SavedModel's signatures took over {INSPECT_TIMEOUT_S} s."
        ) from None
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise ArchiveRefused(f"saved_model.pb is not a SavedModel TensorFlow can read ({reason}).")
    return json.loads(result.stdout.strip().splitlines()[-1])


def check_serving_signature(described: dict) -> None:
    signatures = described.get("signatures", {})
    serving = signatures.get("serving_default")
    if serving is None:
        others = ", ".join(signatures) or "none"
        raise ArchiveRefused(
            f"The SavedModel has no serving_default signature (it has: {others}). Export it with "
            "signatures={'serving_default': ...}: entry scripts and the test page call that one."
        )
    inputs = serving.get("inputs", {})
    if len(inputs) != 1:
        names = ", ".join(inputs) or "none"
        raise ArchiveRefused(
            f"serving_default takes {len(inputs)} inputs ({names}); a scoring request carries one image, so "
            "export a serving_default signature with exactly one input."
        )


def unpack_saved_model(archive_path: Path, dest: Path, display_name: str = "The upload") -> UnpackedModel:
    """Unpack, find the one SavedModel, read and check its signatures. Raises ArchiveRefused."""
    files = unpack(archive_path, dest, display_name)
    saved_model_dir = find_saved_model(dest.resolve(), files)
    described = inspect_saved_model(saved_model_dir)
    check_serving_signature(described)
    return UnpackedModel(
        saved_model_dir=saved_model_dir,
        labels=find_labels(saved_model_dir, dest.resolve()),
        signature=described,
    )


def parse_labels(raw: bytes) -> list[str]:
    """A labels file: UTF-8 text, one class name per line (blank lines ignored)."""
    if len(raw) > LABELS_MAX_BYTES:
        raise ArchiveRefused(
            f"The labels file is over {LABELS_MAX_BYTES // 1024} KiB; it should be one name per line."
        )
    if b"\x00" in raw:
        raise ArchiveRefused("The labels file is not text: it should be one class name per line.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ArchiveRefused(
            "The labels file is not UTF-8 text: save it as UTF-8, one class name per line."
        ) from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def output_classes(described: dict) -> int | None:
    """How many classes serving_default's outputs score, when a [batch, classes] output says so."""
    outputs = described.get("signatures", {}).get("serving_default", {}).get("outputs", {})
    for name in ("probabilities", "scores", "predictions", "logits", *outputs):
        shape = outputs.get(name, {}).get("shape")
        if shape and len(shape) == 2 and shape[1]:
            return int(shape[1])
    return None


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
