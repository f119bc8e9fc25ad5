"""Client side of the local target: what Lynx's backend calls to start, watch, roll and stop a supervisor.

Light on purpose (standard library only, no TensorFlow, no Django, no aiohttp): it runs inside Celery workers
and web requests. Every function takes the deployment's state directory; the supervisor's lock on
`<state_dir>/supervisor.lock` is the single source of truth for "is it running".
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from .fsutil import atomic_write_json, read_json
from .keys import write_key_file
from .netutil import free_port
from .state_dir import (
    DESIRED_FILE,
    LOCK_FILE,
    LOG_DIR,
    STATUS_FILE,
    SUPERVISOR_LOG,
    is_locked,
    lock_holder_pid,
    process_alive,
)

__all__ = [
    "NotRunning",
    "free_port",
    "is_running",
    "read_status",
    "restart_dead",
    "roll",
    "spawn",
    "stop",
    "stop_all",
    "tail_logs",
    "write_key_file",
]

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent
# Started through this short-lived launcher so the supervisor is nobody's child once it returns: it is
# reparented to init, which reaps it, instead of lingering as a zombie of a long-lived Celery worker.
_LAUNCHER = """
import subprocess, sys
log = open(sys.argv[1], "ab")
child = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True)
print(child.pid)
"""


class NotRunning(RuntimeError):
    pass


def spawn(
    *,
    state_dir: Path,
    entry_script: Path,
    model_path: Path,
    model_name: str,
    model_version: str | int,
    port: int,
    replicas: int,
    key_file: Path,
    max_batch_size: int = 32,  # ReplicaSpec's defaults (not imported: this module stays standard-library)
    max_batch_wait_ms: int = 5,
    ready_timeout_s: float = 120.0,
    sandbox: bool = True,
    memory_limit_mb: int = 0,
    host: str = "127.0.0.1",
    public_host: str | None = None,
    require_gpu: bool = False,
) -> int:
    """Start a detached supervisor (its own session, so it outlives the caller) and return its pid at once.

    It returns as soon as the supervisor holds the state directory's lock (so `is_running()` is true and
    `stop()` works), or has exited; readiness is not awaited: poll `read_status()`. The supervisor's output
    goes to <state_dir>/supervisor.log; if it refuses to start (exit code 2 to 5, see scoring.state_dir)
    the reason is there. sandbox=False runs the replicas without the sandbox (scoring.sandbox).
    memory_limit_mb: a replica holding more is killed and restarted (OOMKilled); 0: no limit.
    require_gpu: the deployment asked for a GPU; the entry script sees LYNX_REQUIRE_GPU=1.
    host: where the front proxy listens; public_host: the host its scoring URI names (default: host, or
    127.0.0.1 for a wildcard host).
    """
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "scoring.runtime", "serve",
        "--state-dir", str(state_dir),
        "--entry-script", str(Path(entry_script).resolve()),
        "--model", str(Path(model_path).resolve()),
        "--model-name", str(model_name),
        "--model-version", str(model_version),
        "--port", str(int(port)),
        "--replicas", str(int(replicas)),
        "--key-file", str(Path(key_file).resolve()),  # the keys themselves never appear on a command line
        "--max-batch-size", str(int(max_batch_size)),
        "--max-batch-wait-ms", str(int(max_batch_wait_ms)),
        "--ready-timeout", str(float(ready_timeout_s)),
        "--memory-limit-mb", str(int(memory_limit_mb)),
        "--host", host,
    ]  # fmt: skip
    if public_host:
        command += ["--public-host", public_host]
    if not sandbox:
        command.append("--no-sandbox")
    if require_gpu:
        command.append("--require-gpu")
    launched = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, str(state_dir / SUPERVISOR_LOG), *command],
        cwd=_PACKAGE_ROOT,  # so that `-m scoring.runtime` resolves even when Lynx is not installed
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    pid = int(launched.stdout.strip())
    # Return once it holds the lock (a fraction of a second) or has given up: otherwise a stop() right after
    # spawn() would find nothing running and the new supervisor would live on unowned.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process_alive(pid):
        if is_locked(state_dir) and lock_holder_pid(state_dir) == pid:
            break
        time.sleep(0.02)
    return pid


def is_running(state_dir: Path) -> bool:
    """True while a supervisor holds this state directory's lock."""
    return is_locked(Path(state_dir))


def read_status(state_dir: Path) -> dict[str, Any] | None:
    """The supervisor's status.json, or None when no supervisor runs.

    Just after start, before the first write, a stub `{"state": "starting", "pid": ..., "replicas": []}`.
    """
    state_dir = Path(state_dir)
    if not is_running(state_dir):
        return None
    pid = lock_holder_pid(state_dir)
    status = read_json(state_dir / STATUS_FILE)
    if not isinstance(status, dict) or status.get("pid") != pid:  # not written yet, or left by an earlier run
        return {"state": "starting", "pid": pid, "replicas": [], "retiring": [], "rollout": {}, "stats": {}}
    return status


def _signal_supervisor(state_dir: Path, signum: int, timeout: float = 10.0) -> int:
    """Send `signum` once the supervisor has installed its handlers (it has, once it wrote its status)."""
    deadline = time.monotonic() + timeout
    while True:
        status = read_status(state_dir)
        if status is None:
            raise NotRunning(f"no supervisor runs for {state_dir}")
        if status["state"] != "starting":
            os.kill(status["pid"], signum)
            return status["pid"]
        if time.monotonic() >= deadline:
            raise NotRunning(f"the supervisor for {state_dir} did not come up within {timeout:g} s")
        time.sleep(0.05)


def restart_dead(state_dir: Path) -> None:
    """Ask the supervisor to restart its dead replicas (SIGUSR1)."""
    _signal_supervisor(Path(state_dir), signal.SIGUSR1)


def roll(state_dir: Path, desired: dict[str, Any]) -> str:
    """Roll to a new spec without downtime: writes desired.json, then SIGUSR2. Returns the request id that
    status["rollout"]["request_id"] will carry for this rollout.

    `desired` has the CLI's fields: entry_script, model_path (required), model_name, model_version, replicas,
    max_batch_size, max_batch_wait_ms, ready_timeout_s, memory_limit_mb, require_gpu.
    """
    state_dir = Path(state_dir)
    missing = {"entry_script", "model_path"} - desired.keys()
    if missing:
        raise ValueError(f"desired lacks {', '.join(sorted(missing))}")
    request_id = uuid.uuid4().hex
    payload = {key: str(value) if isinstance(value, Path) else value for key, value in desired.items()}
    atomic_write_json(state_dir / DESIRED_FILE, {**payload, "request_id": request_id}, mode=0o600)
    _signal_supervisor(state_dir, signal.SIGUSR2)
    return request_id


def _known_pids(status: dict[str, Any] | None) -> set[int]:
    pids: set[int] = set()
    for group in ("replicas", "retiring"):
        for replica in (status or {}).get(group, []):
            pids.update(
                p
                for p in [replica.get("pid"), replica.get("server_pid"), *replica.get("worker_pids", [])]
                if p
            )
    for replica in (status or {}).get("rollout", {}).get("replicas", []):
        pids.update(
            p for p in [replica.get("pid"), replica.get("server_pid"), *replica.get("worker_pids", [])] if p
        )
    return pids


def _begin_stop(state_dir: Path) -> tuple[int | None, set[int]]:
    status = read_status(state_dir)
    if status is None:
        return None, set()
    pid = status["pid"]
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    return pid, _known_pids(status)


def _finish_stop(state_dir: Path, pid: int | None, pids: set[int], timeout: float) -> bool:
    if pid is None:
        return True
    # The supervisor itself too: the kernel drops its lock a moment before the process is fully gone.
    everyone = {pid, *pids}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(state_dir) and not any(process_alive(p) for p in everyone):
            return True
        time.sleep(0.02)
    # Last resort. Only a process group of its own (spawn() makes one) is killed whole: a supervisor started
    # by hand shares its shell's group.
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for victim in everyone:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass
    end = time.monotonic() + 5
    while time.monotonic() < end and (is_running(state_dir) or any(process_alive(p) for p in everyone)):
        time.sleep(0.05)
    return False


def stop(state_dir: Path, timeout: float = 20) -> bool:
    """Stop the supervisor and its replicas: SIGTERM, wait until the lock is free and the replica processes
    are gone, SIGKILL as a last resort. True when it stopped cleanly (or was not running), False if killed."""
    state_dir = Path(state_dir)
    pid, pids = _begin_stop(state_dir)
    return _finish_stop(state_dir, pid, pids, timeout)


def stop_all(root: Path, timeout: float = 20) -> int:
    """Stop every supervisor whose state directory lies under `root` (at any depth), all at once.

    Returns how many were running. Model links inside state directories are not followed.
    """
    state_dirs = []
    for directory, subdirectories, files in os.walk(root):
        if LOCK_FILE in files:
            state_dirs.append(Path(directory))
            subdirectories.clear()  # a state directory holds no other state directory
    begun = [(state_dir, *_begin_stop(state_dir)) for state_dir in sorted(state_dirs)]
    running = [(state_dir, pid, pids) for state_dir, pid, pids in begun if pid is not None]
    for state_dir, pid, pids in running:
        _finish_stop(state_dir, pid, pids, timeout)
    return len(running)


# A tail reads one window at the end of a log, never the whole file: a log panel polls this every few seconds,
# and one 16 MiB line (a model printing an array) once made each poll take 21 s. 256 KiB holds 200 lines of
# even a chatty log; a line over TAIL_LINE_MAX_CHARS is shown cut.
TAIL_WINDOW_BYTES = 256 * 1024
TAIL_LINE_MAX_CHARS = 4000
_CUT_LEFT, _CUT_RIGHT = "[…] ", " [… line cut]"


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(0, size - TAIL_WINDOW_BYTES)
            # One byte more on the left says whether the window starts on a line boundary.
            handle.seek(max(0, start - 1))
            data = handle.read(size - max(0, start - 1))
    except FileNotFoundError:
        return ""
    starts_mid_line = start > 0 and data[:1] != b"\n"
    if start > 0:
        data = data[1:]
    kept = data.decode("utf-8", "replace").splitlines()
    if starts_mid_line and kept:
        if kept[0]:
            kept[0] = _CUT_LEFT + kept[0][-TAIL_LINE_MAX_CHARS:]
        else:  # the window began on the newline itself: no fragment of a line at all
            del kept[0]
    return "\n".join(
        line if len(line) <= TAIL_LINE_MAX_CHARS else line[:TAIL_LINE_MAX_CHARS] + _CUT_RIGHT
        for line in kept[-lines:]
    )


def _tail_rotated(path: Path, lines: int) -> str:
    """`_tail` of a log that a RotatingFileHandler writes: it reaches into <path>.1 when the current file is
    short, so the panel does not go blank just after a rotation."""
    text = _tail(path, lines)
    count = len(text.split("\n")) if text else 0
    if count >= lines:
        return text
    older = _tail(path.with_name(path.name + ".1"), lines - count)
    return "\n".join(part for part in (older, text) if part)


def tail_logs(state_dir: Path, lines: int = 200) -> dict[str, str]:
    """The last `lines` lines of each replica's log, by replica name, plus "supervisor" for the supervisor's.

    While running: the replicas in status (serving, retiring, incoming); otherwise every replica log found.
    """
    state_dir = Path(state_dir)
    status = read_status(state_dir)
    if status and status.get("replicas"):
        groups = [status.get("replicas", []), status.get("retiring", [])]
        groups.append(status.get("rollout", {}).get("replicas", []))
        names = [replica["name"] for group in groups for replica in group]
    else:
        found = (state_dir / LOG_DIR).glob("replica-*.log")
        names = sorted((p.stem for p in found), key=lambda name: int(name.rsplit("-", 1)[1]))
    # Replica logs are rotated like the supervisor's (the supervisor writes what replicas print, see
    # scoring.supervisor_log.RotatingWriter): just after a rotation, the lines are in <name>.log.1.
    logs = {name: _tail_rotated(state_dir / LOG_DIR / f"{name}.log", lines) for name in names}
    logs["supervisor"] = _tail_rotated(state_dir / SUPERVISOR_LOG, lines)
    return logs


_LOG_START = re.compile(r"^--- \S+ lynx: starting ")
_GUNICORN = re.compile(r"^\[[^\]]+\] \[\d+\] \[(\w+)\] (.*)$")  # [time] [pid] [LEVEL] message
_SERVER = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ ([A-Z]) \[\d+\] ([\w.]+) - (.*)$")  # azmlinfsrv's lines
_FRAME = re.compile(r'^(\s*)File "([^"]+)", (line \d+.*)$')
_SERVER_NOISE = ("Found extra keys", "Extra keys =", "Initializing logger")


def script_error(state_dir: Path, name: str, script_dir: Path | str, lines: int = 12) -> str:
    """What the entry script itself said before replica `name` last exited: its prints, its errors, the
    frames of its own files in a traceback (by file name). The inference server's frames and lines, gunicorn's
    and every other file path are left out: this is shown on the deployment's page, to whoever deployed."""
    text = _tail_rotated(Path(state_dir) / LOG_DIR / f"{name}.log", 400)
    kept = text.split("\n")
    starts = [i for i, line in enumerate(kept) if _LOG_START.match(line)]
    if starts:
        kept = kept[starts[-1] + 1 :]  # the last run of the replica only
    script_dir = str(script_dir).rstrip("/") + "/"
    out: list[str] = []
    skip_source = False  # the source line that follows a dropped frame
    in_server_chain = False  # the server's own traceback, chained after the script's
    for line in kept:
        if skip_source and line.startswith("    ") and not _FRAME.match(line):
            skip_source = False
            continue
        skip_source = False
        if frame := _FRAME.match(line):
            if frame.group(2).startswith(script_dir):
                out.append(f'{frame.group(1)}File "{frame.group(2)[len(script_dir) :]}", {frame.group(3)}')
            else:
                skip_source = True
            continue
        if line.startswith("The above exception was the direct cause") or line.startswith(
            "During handling of the above exception"
        ):
            in_server_chain = True
            continue
        if gunicorn := _GUNICORN.match(line):
            message = gunicorn.group(2)
            if "exited with code" in message or "was sent" in message:
                out.append(re.sub(r"^Worker \(pid:\d+\)", "The server's worker", message))
            continue
        if server := _SERVER.match(line):
            level, logger_name, message = server.groups()
            if logger_name.endswith(".print"):
                out.append(message)  # the script's own print()
            elif message.startswith("Encountered Exception Traceback"):
                out.append("Traceback (most recent call last):")
                in_server_chain = False
            elif level in "EC" and not in_server_chain:
                out.append(message)
            continue
        if in_server_chain or not line.strip() or line.startswith(_SERVER_NOISE):
            continue
        if line.startswith("Traceback (most recent call last)"):
            in_server_chain = False
        out.append(line)
    return "\n".join(line[:TAIL_LINE_MAX_CHARS] for line in out[-lines:])


def _main() -> None:  # tiny manual helper: python -m scoring.control status DIR
    if len(sys.argv) == 3 and sys.argv[1] == "status":
        print(json.dumps(read_status(Path(sys.argv[2])), indent=2))
    else:
        print("usage: python -m scoring.control status STATE_DIR", file=sys.stderr)


if __name__ == "__main__":
    _main()
