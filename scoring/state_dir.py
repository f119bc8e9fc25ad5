"""A deployment's state directory: its files, its lock, and the supervisor's exit codes.

Standard library only: shared by the supervisor and by `scoring.control`.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

LOCK_FILE = "supervisor.lock"  # flock'ed by the supervisor for its whole life; holds its pid
STATUS_FILE = "status.json"  # rewritten atomically about every second
DESIRED_FILE = "desired.json"  # written by control.roll() before SIGUSR2
SUPERVISOR_LOG = "supervisor.log"  # the supervisor's stdout/stderr when started by control.spawn()
LOG_DIR = "logs"  # logs/replica-<i>.log
# Written by the local backend, which starts the supervisor:
KEY_FILE = "keys.json"  # the two scoring keys, 0600; the front proxy re-reads it when it changes
PORT_FILE = "port"  # the front port reserved for the deployment
SPAWNED_AT_FILE = "spawned_at"  # when the supervisor was last started (a grace period before judging it)
SUPERVISOR_PID_FILE = "supervisor.pid"  # the pid it was started with, to tell a refusal from a slow start

EXIT_OK = 0
EXIT_FAILED = 1  # unexpected error
EXIT_CONFIG = 2  # bad arguments, entry script or model missing, unusable key file
EXIT_LOCKED = 3  # another supervisor already serves this state directory
EXIT_PORT_IN_USE = 4  # the front port could not be bound
EXIT_NO_SANDBOX = 5  # the sandbox cannot start here, and --no-sandbox was not given


def acquire_lock(state_dir: Path, *, wait_s: float = 0.5) -> int | None:
    """Take the state directory's exclusive lock and write our pid in it; None when another process holds it.

    Retries for `wait_s`, because `is_running()` probes hold the lock for a few microseconds; a live
    supervisor holds it for good, so a second one still gives up almost at once.
    """
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.02)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def is_locked(state_dir: Path) -> bool:
    """True while a supervisor holds the state directory's lock."""
    try:
        fd = os.open(Path(state_dir) / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        # A shared probe: it conflicts with the supervisor's exclusive lock, never with another probe.
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def lock_holder_pid(state_dir: Path) -> int | None:
    """The pid the current (or last) supervisor wrote into the lock file."""
    try:
        text = (Path(state_dir) / LOCK_FILE).read_text().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def process_alive(pid: int) -> bool:
    """Whether the process runs: it exists and is not a zombie (exited, waiting for its parent to reap it).

    A process that exists but is another user's counts as alive; one that vanishes between the two checks
    as gone. Without /proc (not Linux), existing is all that can be known.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            # "pid (comm) state …": comm may itself hold ") ", so split at the last one.
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    except OSError:
        return True
