"""The real `make run` launcher (embedded SQLite and Redis): kill its web server, its worker and its Redis
outright, and each comes back by itself while the launcher keeps running; Ctrl-C still stops it all."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests

from tests.conftest import wait_for

pytestmark = pytest.mark.slow

BASE_DIR = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthz(port: int) -> dict | None:
    try:
        answer = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=3)
        return answer.json() if answer.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None


def _child_with(launcher: psutil.Process, marker: str) -> psutil.Process:
    """The launcher's direct child whose command line contains `marker`."""
    for child in launcher.children():
        try:
            if marker in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    raise LookupError(marker)


def test_make_run_restarts_what_was_killed_and_keeps_running(tmp_path, demo_model_files):
    var_dir = tmp_path / "var"
    # The demo model this session already built: the launcher's seed finds it instead of training it again.
    shutil.copytree(demo_model_files, var_dir / "cache" / "demo-model")
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "REDIS_URL")} | {
        "LYNX_VAR_DIR": str(var_dir),
        "LYNX_PORT": str(port),
        "LYNX_ADMIN_PASSWORD": "a-long-test-passphrase",
    }
    log = (tmp_path / "launcher.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "lynx.launcher"],
        cwd=BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    launcher = psutil.Process(process.pid)
    try:
        wait_for(lambda: (_healthz(port) or {}).get("workers", 0) >= 1, timeout=120, message="Lynx up")
        for marker in ("gunicorn", "workers worker", "redis-server"):
            victim = _child_with(launcher, marker)
            os.killpg(victim.pid, signal.SIGKILL)
            wait_for(
                lambda victim=victim, marker=marker: _child_with_or_none(
                    launcher, marker, not_pid=victim.pid
                ),
                timeout=60,
                message=f"{marker} restarted",
            )
            wait_for(lambda: (_healthz(port) or {}).get("workers", 0) >= 1, timeout=90, message="Lynx back")
            assert process.poll() is None
        text = (tmp_path / "launcher.log").read_text(errors="replace")
        for name in ("web server", "Celery worker", "embedded Redis"):
            assert f"the {name} exited with code" in text and f"the {name} is running again" in text
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)
        log.close()
    assert process.returncode == 0
    leftovers = [
        p for p in psutil.process_iter(["cmdline"]) if str(var_dir) in " ".join(p.info["cmdline"] or [])
    ]
    assert not leftovers


def _child_with_or_none(launcher: psutil.Process, marker: str, not_pid: int) -> psutil.Process | None:
    try:
        child = _child_with(launcher, marker)
    except LookupError:
        return None
    return child if child.pid != not_pid else None
