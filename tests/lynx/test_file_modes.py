"""What Lynx keeps in var/ (the SQLite database with its sessions, the secret and encryption keys, replica
state) is private to the user Lynx runs as: the directory 0700, files 0600, also when an older checkout left
them readable."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPEN_DATABASE = """
import django
django.setup()
from django.db import connection
connection.ensure_connection()
with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE IF NOT EXISTS t (x int)")
    cursor.execute("INSERT INTO t VALUES (1)")
"""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _embedded_env(var_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LYNX_", "SECRET_KEY", "DATABASE_URL", "REDIS_URL"))
    }
    env.update(DJANGO_SETTINGS_MODULE="lynx.settings", LYNX_VAR_DIR=str(var_dir))
    return env


def _start(var_dir: Path) -> None:
    # A shell umask of 022, as on a laptop: Lynx must not rely on it.
    result = subprocess.run(
        ["/bin/sh", "-c", 'umask 022 && exec "$0" -c "$1"', sys.executable, OPEN_DATABASE],
        cwd=ROOT,
        env=_embedded_env(var_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_fresh_var_dir_is_private(tmp_path):
    var_dir = tmp_path / "var"
    _start(var_dir)
    assert _mode(var_dir) == 0o700
    assert _mode(var_dir / "lynx.sqlite3") == 0o600
    assert _mode(var_dir / "secret_key") == 0o600
    assert _mode(var_dir / "encryption_key") == 0o600
    for path in var_dir.iterdir():
        if path.is_dir():
            assert _mode(path) == 0o700, path
        else:
            assert _mode(path) & 0o077 == 0, (path, oct(_mode(path)))


def test_files_an_older_checkout_left_readable_are_made_private_at_start(tmp_path):
    var_dir = tmp_path / "var"
    (var_dir / "local").mkdir(parents=True)
    database = var_dir / "lynx.sqlite3"
    database.write_bytes(b"")
    (var_dir / "secret_key").write_text("k" * 64)
    for path, mode in ((var_dir, 0o755), (var_dir / "local", 0o755), (database, 0o644)):
        path.chmod(mode)
    (var_dir / "secret_key").chmod(0o644)
    _start(var_dir)
    assert _mode(var_dir) == 0o700
    assert _mode(var_dir / "local") == 0o700
    assert _mode(database) == 0o600
    assert _mode(var_dir / "secret_key") == 0o600
