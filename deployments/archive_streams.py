"""Reading an uploaded archive's structure without trusting it to be small: a zip's entry count from its own
records, and a compressed tar inflated through a stream with a ceiling.

zipfile reads the whole central directory into memory and builds an object per entry before a caller can
count them (2 M entries: about a gigabyte); tarfile inflates everything it skips over and reads long-name and
pax headers whole. These helpers raise `Exceeded` or `Damaged` first; model_archives turns them into
messages.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import struct
import tarfile
from pathlib import Path

# The ZIP records read here, as PKWARE's APPNOTE lays them out (zipfile keeps the same, privately).
_END = struct.Struct("<4s4H2LH")  # end of central directory
_END64 = struct.Struct("<4sQ2H2L4Q")  # zip64 end of central directory
_LOCATOR = struct.Struct("<4sLQL")  # zip64 end of central directory locator
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")  # central directory file header
_END_SIGNATURE, _END64_SIGNATURE = b"PK\x05\x06", b"PK\x06\x06"
_LOCATOR_SIGNATURE, _CENTRAL_SIGNATURE = b"PK\x06\x07", b"PK\x01\x02"
_MAX_COMMENT = 0xFFFF


class Exceeded(Exception):
    """The archive is over a limit; args: (what, limit)."""


class Damaged(Exception):
    """The archive's records contradict themselves."""


def zip_entries_check(path: Path, max_entries: int, max_directory_bytes: int) -> None:
    """Raise Exceeded when the zip holds more than `max_entries` entries or a central directory over
    `max_directory_bytes` (zipfile reads it whole), reading only its end records and walking the directory
    header by header (constant memory). The records are chosen as zipfile chooses them.

    Both counts matter: the end record's claim (the reviewer's 2 M-entry zip), and the headers really there
    (a zip can understate its count: zipfile reads by the directory's size, not by the count).
    """
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        tail_start = max(0, size - _END.size - _MAX_COMMENT)
        f.seek(tail_start)
        tail = f.read()
        at = tail.rfind(_END_SIGNATURE)
        if at < 0 or len(tail) - at < _END.size:
            raise Damaged("no end-of-central-directory record")
        end = _END.unpack_from(tail, at)
        entries, directory_size = end[4], end[5]
        record_at = tail_start + at
        # zipfile believes a ZIP64 locator right before the end record, and a ZIP64 record right before
        # that, whatever the end record says: so must this count.
        if record_at >= _LOCATOR.size + _END64.size:
            f.seek(record_at - _LOCATOR.size - _END64.size)
            record, locator = f.read(_END64.size), f.read(_LOCATOR.size)
            if locator[:4] == _LOCATOR_SIGNATURE and record[:4] == _END64_SIGNATURE:
                fields = _END64.unpack(record)
                entries, directory_size = fields[7], fields[8]
                record_at -= _LOCATOR.size + _END64.size
        if entries > max_entries:
            raise Exceeded("entries", max_entries)
        if directory_size > max_directory_bytes:
            raise Exceeded("directory bytes", max_directory_bytes)
        start = record_at - directory_size
        if start < 0:
            raise Damaged("the central directory starts before the file")
        f.seek(start)
        counted = walked = 0
        while walked < directory_size:
            header = f.read(_CENTRAL.size)
            if len(header) < _CENTRAL.size or header[:4] != _CENTRAL_SIGNATURE:
                raise Damaged("a central directory header is broken")
            fields = _CENTRAL.unpack(header)
            rest = fields[12] + fields[13] + fields[14]  # name, extra field and comment lengths
            f.seek(rest, os.SEEK_CUR)
            walked += _CENTRAL.size + rest
            counted += 1
            if counted > max_entries:
                raise Exceeded("entries", max_entries)


def decompressed(path: Path) -> io.BufferedIOBase:
    """The tar inside a .tar.gz, .tar.bz2 or .tar.xz (or the file itself), decompressing as it is read."""
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.open(path, "rb")
    if magic.startswith(b"BZh"):
        return bz2.open(path, "rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(path, "rb")
    return open(path, "rb")


class CeilingStream(io.RawIOBase):
    """A forward-only view of a decompressing stream that refuses to read or skip past `ceiling` bytes.

    tarfile skips a member by seeking, and seeking forward in a compressed stream inflates everything in
    between: the ceiling is checked before the underlying seek, so a bomb is refused, not inflated.
    """

    def __init__(self, stream: io.BufferedIOBase, ceiling: int) -> None:
        super().__init__()
        self._stream, self._ceiling = stream, ceiling

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._stream.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = offset if whence == os.SEEK_SET else self.tell() + offset
        if whence not in (os.SEEK_SET, os.SEEK_CUR):
            raise io.UnsupportedOperation("a decompressed archive is read from its start")
        if target > self._ceiling:
            raise Exceeded("bytes", self._ceiling)
        return self._stream.seek(target)

    def read(self, size: int | None = -1) -> bytes:
        room = self._ceiling - self.tell()
        want = room + 1 if size is None or size < 0 else min(size, room + 1)
        data = self._stream.read(want)
        if len(data) > room:
            raise Exceeded("bytes", self._ceiling)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


_EXTENSION_TYPES = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)


def guarded_tarinfo(max_extension_bytes: int) -> type[tarfile.TarInfo]:
    """A TarInfo class that refuses a long-name or pax header bigger than `max_extension_bytes`: tarfile
    reads such a header's data whole into memory before the caller sees any member."""

    class GuardedTarInfo(tarfile.TarInfo):
        # _proc_member is where tarfile dispatches every header it reads, extensions included.
        def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
            if self.type in _EXTENSION_TYPES and self.size > max_extension_bytes:
                raise Damaged(f"a {self.size}-byte extended header (a name is never that long)")
            return super()._proc_member(tarfile_)  # type: ignore[misc]  # private, so not in typeshed

    return GuardedTarInfo
