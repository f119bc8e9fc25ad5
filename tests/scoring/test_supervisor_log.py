"""supervisor.log stays bounded: rotated by the supervisor itself (its stdout and stderr following the current
file), and a flood of one message logged a few times, then counted."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import textwrap

from scoring import supervisor_log

from .conftest import REPO

# Run as the supervisor is when control.spawn() starts it: stdout and stderr appended to supervisor.log. The
# log is configured by runtime.main(), as for a real serve, up to the point where serve() would start.
CHILD = """
import logging, os, sys
from pathlib import Path
from unittest import mock
from scoring import runtime, supervisor_log
supervisor_log.MAX_BYTES = 64 * 1024
state_dir = Path(sys.argv[1])
with mock.patch.object(runtime, "serve", return_value=0):
    runtime.main(["serve", "--state-dir", str(state_dir), "--entry-script", "x", "--model", "y",
                  "--port", "1", "--key", "k"])
print("http://127.0.0.1:1/score", flush=True)
for i in range(5000):  # ~1 MB of distinct lines: about 16 rotations of 64 KiB
    logging.getLogger("scoring.supervisor").info(f"line {i} " + "x" * 150)
print("printed after the rotations", flush=True)
os.write(2, b"written to fd 2 after the rotations\\n")
logging.getLogger("scoring.supervisor").info("the last line")
"""


def test_the_supervisor_rotates_its_log_and_its_stdout_and_stderr_follow_the_current_file(tmp_path):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    log = state_dir / "supervisor.log"
    with open(log, "ab") as output:
        subprocess.run(
            [sys.executable, "-c", textwrap.dedent(CHILD), str(state_dir)],
            cwd=REPO, stdout=output, stderr=subprocess.STDOUT, check=True, timeout=60,
        )  # fmt: skip
    files = sorted(p.name for p in state_dir.iterdir())
    assert files == ["supervisor.log", "supervisor.log.1", "supervisor.log.2", "supervisor.log.3"]
    for name in files:
        assert (state_dir / name).stat().st_size <= 64 * 1024 + 4096, name
    current = log.read_text()
    assert "printed after the rotations" in current and "written to fd 2 after the rotations" in current
    assert current.rstrip().endswith("the last line")
    assert "line 4999 " in current


def test_a_supervisor_started_by_hand_logs_to_its_terminal_and_to_the_file(tmp_path, monkeypatch):
    terminal = io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        supervisor_log.configure(tmp_path)
        logging.getLogger("scoring.supervisor").info("replica-0: ready after 1.0 s")
        for handler in root.handlers:
            handler.flush()
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], root.level = saved
    assert "replica-0: ready after 1.0 s" in terminal.getvalue()
    assert "replica-0: ready after 1.0 s" in (tmp_path / "supervisor.log").read_text()


def _record(created: float, msg: str = "%s: %s, retrying once") -> logging.LogRecord:
    fields = {"name": "scoring.proxy", "levelno": logging.WARNING, "msg": msg}
    record = logging.makeLogRecord({**fields, "args": ("replica-0", "ClientOSError")})
    record.created = created
    return record


def test_a_flood_of_one_message_is_logged_a_few_times_a_minute_and_then_counted():
    flood = supervisor_log.FloodFilter()
    passed = [record for record in (_record(1000 + i / 1000) for i in range(10_000)) if flood.filter(record)]
    assert len(passed) == supervisor_log.FLOOD_BURST
    other = _record(1001, "%s: exited with code %s")
    assert flood.filter(other)  # another message is not held back by the flood
    later = _record(1000 + supervisor_log.FLOOD_WINDOW_S + 1)
    assert flood.filter(later)
    assert later.getMessage() == (
        f"replica-0: ClientOSError, retrying once [and {10_000 - supervisor_log.FLOOD_BURST} more like this "
        "before, not logged]"
    )


def test_messages_that_differ_only_after_their_first_line_count_as_one():
    flood = supervisor_log.FloodFilter()
    records = [
        _record(1000, f"Task exception was never retrieved\nfuture: <Task at 0x{i:x}>") for i in range(100)
    ]
    assert sum(flood.filter(record) for record in records) == supervisor_log.FLOOD_BURST


def test_a_replica_log_written_through_the_rotating_writer_stays_bounded(tmp_path):
    path = tmp_path / "logs" / "replica-0.log"
    writer = supervisor_log.RotatingWriter(path, max_bytes=10_000, backups=2)
    writer.write(b"--- lynx: starting replica-0 ---\n")
    for i in range(1000):
        writer.write(f"line {i} {'x' * 90}\n".encode())
    writer.close()
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["replica-0.log", "replica-0.log.1", "replica-0.log.2"]
    assert all(p.stat().st_size <= 10_000 for p in path.parent.iterdir())
    assert path.read_text().splitlines()[-1].startswith("line 999 ")
    assert path.with_name("replica-0.log.1").read_text().splitlines()[-1].split()[1] == str(
        int(path.read_text().split()[1]) - 1
    )
