"""Scoring keys: the key file format and the store the front proxy checks every request against.

A key file is JSON `{"primary": "...", "secondary": "..."}`, mode 0600. The store re-reads it whenever it
changes (mtime, inode or size), so a regenerated key locks the old one out on the next request.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .fsutil import atomic_write_json

logger = logging.getLogger(__name__)


class KeyFileError(ValueError):
    pass


@dataclass(frozen=True)
class Keys:
    primary: str
    secondary: str | None = None

    def as_bytes(self) -> tuple[bytes, ...]:
        return tuple(key.encode() for key in (self.primary, self.secondary) if key)


def write_key_file(path: Path, primary: str, secondary: str | None = None) -> None:
    """Write a key file atomically with mode 0600."""
    if not primary:
        raise KeyFileError("the primary key must not be empty")
    atomic_write_json(Path(path), {"primary": primary, "secondary": secondary or ""}, mode=0o600)


def read_key_file(path: Path) -> Keys:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise KeyFileError(f"cannot read key file {path}: {error.__class__.__name__}") from None
    if not isinstance(data, dict) or not isinstance(data.get("primary"), str) or not data["primary"]:
        raise KeyFileError(f'key file {path} must be JSON with a non-empty "primary"')
    secondary = data.get("secondary")
    return Keys(data["primary"], secondary if isinstance(secondary, str) and secondary else None)


def check_key_file_private(path: Path) -> None:
    """Refuse a key file that other users can read (like ssh does with private keys)."""
    mode = os.stat(path).st_mode
    if stat.S_IMODE(mode) & 0o077:
        raise KeyFileError(f"key file {path} is readable by other users: chmod 600 it")


class KeyStore:
    """The accepted keys: fixed ones from the command line, or a key file followed as it changes."""

    def __init__(self, *, keys: Keys | None = None, key_file: Path | None = None) -> None:
        if (keys is None) == (key_file is None):
            raise ValueError("give either keys or a key_file")
        self._key_file = Path(key_file) if key_file else None
        self._accepted: tuple[bytes, ...] = keys.as_bytes() if keys else ()
        self._signature: tuple[int, int, int] | None = None
        if self._key_file:
            self._accepted = read_key_file(self._key_file).as_bytes()
            self._signature = self._file_signature(self._key_file)

    @staticmethod
    def _file_signature(key_file: Path) -> tuple[int, int, int] | None:
        try:
            st = os.stat(key_file)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ino, st.st_size)

    def _refresh(self, key_file: Path) -> None:
        # One stat() per request: cheap, and it makes a key rotation take effect on the very next request.
        signature = self._file_signature(key_file)
        if signature == self._signature:
            return
        self._signature = signature
        try:
            self._accepted = read_key_file(key_file).as_bytes()
            logger.info("key file changed: keys reloaded")
        except KeyFileError as error:
            # Fail closed: with no readable key file nobody gets in.
            self._accepted = ()
            logger.warning("key file unusable, refusing every request until it is fixed: %s", error)

    def accepts_authorization(self, header: str | None) -> bool:
        """True when `header` is `Bearer <a current key>`."""
        if self._key_file:
            self._refresh(self._key_file)
        if not header:
            return False
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        try:
            presented = token.strip().encode()
        except UnicodeEncodeError:  # bytes that were not UTF-8 on the wire (aiohttp keeps them as surrogates)
            return False
        # Compare with every key, without stopping early: timing says nothing about which one matched.
        matches = [hmac.compare_digest(presented, key) for key in self._accepted]
        return any(matches)
