"""A multipart/form-data body that is read from its files as it is sent.

`requests`' own `files=` builds the whole body in memory first, which a multi-gigabyte SavedModel archive
must not do. This body knows its length up front (so the request carries Content-Length, which Django's
servers need: they do not take chunked uploads) and hands out the files' bytes a block at a time.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

BLOCK = 64 * 1024


@dataclass(frozen=True)
class _FilePart:
    handle: BinaryIO
    start: int  # the file's position when it was added: its bytes from there to the end are sent
    size: int


def _quote(value: str) -> str:
    # RFC 7578 §4.2: quotes and line breaks in a name or filename are percent-escaped.
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class MultipartBody:
    """A file-like body: `read(n)` returns the next n bytes of the encoded form; `len()` is its full size."""

    def __init__(self) -> None:
        self.boundary = uuid.uuid4().hex
        self._parts: list[bytes | _FilePart] = []
        self._index = 0  # which part `read` is in
        self._offset = 0  # how far into that part
        self._closed = False

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def add_field(self, name: str, value: str) -> None:
        head = f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"\r\n\r\n'
        self._parts.append(head.encode() + value.encode() + b"\r\n")

    def add_file(self, name: str, handle: BinaryIO, filename: str, content_type: str) -> None:
        head = (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="{_quote(name)}"; filename="{_quote(filename)}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        )
        start = handle.tell()
        size = os.fstat(handle.fileno()).st_size - start
        self._parts += [head.encode(), _FilePart(handle, start, size), b"\r\n"]

    def _closing(self) -> None:
        if not self._closed:
            self._parts.append(f"--{self.boundary}--\r\n".encode())
            self._closed = True

    def __len__(self) -> int:
        self._closing()
        return sum(part.size if isinstance(part, _FilePart) else len(part) for part in self._parts)

    def tell(self) -> int:
        before = self._parts[: self._index]
        return sum(p.size if isinstance(p, _FilePart) else len(p) for p in before) + self._offset

    def seek(self, position: int, whence: int = os.SEEK_SET) -> int:
        """Only back to the start (a retried request sends the body again)."""
        if position != 0 or whence != os.SEEK_SET:
            raise OSError("a multipart body can only be rewound to its start")
        self._index, self._offset = 0, 0
        return 0

    def read(self, size: int = -1) -> bytes:
        self._closing()
        chunks: list[bytes] = []
        wanted = len(self) - self.tell() if size is None or size < 0 else size
        while wanted > 0 and self._index < len(self._parts):
            part = self._parts[self._index]
            if isinstance(part, _FilePart):
                part.handle.seek(part.start + self._offset)
                chunk = part.handle.read(min(wanted, part.size - self._offset))
                if not chunk and self._offset < part.size:
                    raise OSError(f"{getattr(part.handle, 'name', 'a file')} got shorter while it was sent")
                length = part.size
            else:
                chunk = part[self._offset : self._offset + wanted]
                length = len(part)
            chunks.append(chunk)
            self._offset += len(chunk)
            wanted -= len(chunk)
            if self._offset >= length:
                self._index, self._offset = self._index + 1, 0
        return b"".join(chunks)

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(BLOCK):
            yield chunk
