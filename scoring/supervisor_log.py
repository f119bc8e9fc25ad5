"""The supervisor's own log, <state_dir>/supervisor.log: rotated, and a flood of one message cut to a count.

Under 21 000 half-open connections supervisor.log once grew 380 MB in two minutes, one traceback per failed
connection, in a file nothing rotated. control.spawn() points the supervisor's stdout and stderr at this file
(so a refusal to start, or a crash, lands where the dashboard's log panel looks); once running, the supervisor
logs through a RotatingFileHandler on the same file and, after each rotation, points its stdout and stderr at
the new file as well, so nothing goes on writing into a rotated one. The total stays near
(BACKUPS + 1) × MAX_BYTES.
"""

from __future__ import annotations

import logging
import os
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import BinaryIO

from .state_dir import SUPERVISOR_LOG

MAX_BYTES = 4 * 2**20
BACKUPS = 3
# Per message (its logger, level and the first line of its template): the first FLOOD_BURST records of a
# window are logged, the rest only counted, and the count is told on the first one logged in a later window.
FLOOD_WINDOW_S = 60.0
FLOOD_BURST = 10
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class FloodFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self._windows: dict[tuple[str, int, str], list[float]] = {}  # key -> [start, logged, not logged]

    def filter(self, record: logging.LogRecord) -> bool:
        # The first line only: asyncio puts the task's repr, a new address each time, on the lines after.
        key = (record.name, record.levelno, str(record.msg).partition("\n")[0][:200])
        window = self._windows.get(key)
        if window is None or record.created - window[0] >= FLOOD_WINDOW_S:
            if len(self._windows) > 1000:  # messages built without a template must not grow this for ever
                self._windows = {
                    k: w for k, w in self._windows.items() if record.created - w[0] < FLOOD_WINDOW_S
                }
            self._windows[key] = [record.created, 1, 0]
            if window is not None and window[2]:
                record.msg = f"{record.getMessage()} [and {int(window[2])} more like this before, not logged]"
                record.args = ()
            return True
        if window[1] < FLOOD_BURST:
            window[1] += 1
            return True
        window[2] += 1
        return False


class _RotatingLog(RotatingFileHandler):
    def __init__(self, path: Path, *, carry_std_streams: bool) -> None:
        # delay: a supervisor that is refused (the state directory is locked) never opens, so never rotates,
        # the log of the one that runs.
        super().__init__(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8", delay=True)
        self._carry_std_streams = carry_std_streams

    def doRollover(self) -> None:
        super().doRollover()
        if self._carry_std_streams:
            if self.stream is None:
                self.stream = self._open()
            sys.stdout.flush()
            sys.stderr.flush()
            for fd in (1, 2):
                os.dup2(self.stream.fileno(), fd)


class RotatingWriter:
    """Bytes appended to a file rotated as supervisor.log is (MAX_BYTES, BACKUPS; <path>.1 the newest older
    one): a replica's stdout and stderr, which the supervisor reads from a pipe. A replica that prints without
    end fills (BACKUPS + 1) × MAX_BYTES of disk, not the disk."""

    def __init__(self, path: Path, *, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._file: BinaryIO | None = None

    def write(self, data: bytes) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")  # kept open between writes
        if self._file.tell() and self._file.tell() + len(data) > self.max_bytes:
            self._rotate()
        self._file.write(data)
        self._file.flush()

    def _rotate(self) -> None:
        self.close()
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        if self.backups:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._file = open(self.path, "ab")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _is_file(fd: int, path: Path) -> bool:
    try:
        opened, named = os.fstat(fd), path.stat()
    except OSError:
        return False
    return (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)


def configure(state_dir: Path, level: int = logging.INFO) -> None:
    """Log to <state_dir>/supervisor.log, rotated; and to stderr too unless stderr already is that file."""
    path = state_dir / SUPERVISOR_LOG
    spawned = _is_file(2, path)  # control.spawn() redirected stderr here
    log = _RotatingLog(path, carry_std_streams=spawned)
    log.addFilter(FloodFilter())
    handlers: list[logging.Handler] = [log]
    if not spawned:  # started by hand: the terminal shows everything
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(level=level, format=FORMAT, handlers=handlers, force=True)
