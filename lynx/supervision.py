"""Keeping `make run`'s processes up: a child that exits is started again, with a growing pause.

One crash of the web server, a worker or the embedded Redis used to stop all of Lynx, local replicas
included (issue 11). Now only that child is restarted; the replicas, which run under their own
supervisors, never notice. The pause doubles after each quick exit (1 s up to 30 s), so a child that
cannot start (a port taken, a broken settings file) does not spin, and resets once a child has run for
a minute.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

FIRST_PAUSE_S = 1.0
MAX_PAUSE_S = 30.0
HEALTHY_AFTER_S = 60.0


def say(message: str) -> None:
    print(f"lynx: {message}", flush=True)


@dataclass
class Child:
    """One process `make run` keeps running, in its own session so Ctrl-C reaches only the launcher."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    before_start: Callable[[], None] | None = None  # e.g. remove a stale unix socket
    process: subprocess.Popen | None = None
    restarts: int = 0
    pause_s: float = FIRST_PAUSE_S
    started_at: float = 0.0
    restart_at: float | None = None
    exits: list[int] = field(default_factory=list)

    def start(self) -> None:
        if self.before_start is not None:
            self.before_start()
        self.process = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, start_new_session=True)
        self.started_at = time.monotonic()
        self.restart_at = None

    def check(self, now: float) -> None:
        """Notice an exit and schedule the restart; restart when its pause is over."""
        if self.process is None:
            return
        if self.restart_at is None:
            code = self.process.poll()
            if code is None:
                return
            self.exits.append(code)
            if now - self.started_at >= HEALTHY_AFTER_S:
                self.pause_s = FIRST_PAUSE_S
            say(
                f"the {self.name} exited with code {code}; starting it again in {self.pause_s:g} s "
                f"(restart {self.restarts + 1}). Local deployments keep serving."
            )
            self.restart_at = now + self.pause_s
            self.pause_s = min(self.pause_s * 2, MAX_PAUSE_S)
        elif now >= self.restart_at:
            self.restarts += 1
            self.start()
            say(f"the {self.name} is running again (pid {self.process.pid})")

    def stop(self, timeout: float = 15) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        say(f"stopping the {self.name}")
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def keep_running(children: list[Child], stopping: Callable[[], bool], tick_s: float = 0.5) -> None:
    """Watch the children until `stopping()` says so; each one that exits is restarted on its own."""
    while not stopping():
        now = time.monotonic()
        for child in children:
            child.check(now)
        time.sleep(tick_s)
