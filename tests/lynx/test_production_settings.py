"""LYNX_ENV=production: placeholder secrets stop Lynx at start; Secure cookies, HSTS and the HTTPS redirect.

Each case imports the settings in a fresh interpreter, as gunicorn, Celery and manage.py do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOOD_SECRET = "m1Vq3rX8pL0sT6wYb2Nd9Hf4Kj7Gc5Ze-aQuR0oWi3Ey8Tu_Lp2Vs"
GOOD_KEY = "Zp4Lr8Xw2Qs6Vn0Tb3Mk7Hj1Gf5Dc9Ya-eWuI2oP6sK0nB4_Rt7Ym"
PRINT_SETTINGS = """
import json, django
django.setup()
from django.conf import settings as s
print(json.dumps({name: getattr(s, name) for name in (
    "DEBUG", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS",
    "SECURE_PROXY_SSL_HEADER", "SECURE_REDIRECT_EXEMPT", "SESSION_COOKIE_HTTPONLY")}))
"""


def _production_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LYNX_", "SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL"))
        # Set by the browser tests' fixture for this test process (tests/conftest.py), never in production.
        and key != "DJANGO_ALLOW_ASYNC_UNSAFE"
    }
    env.update(
        DJANGO_SETTINGS_MODULE="lynx.settings",
        LYNX_ENV="production",
        LYNX_VAR_DIR=str(tmp_path / "var"),
        SECRET_KEY=GOOD_SECRET,
        LYNX_ENCRYPTION_KEY=GOOD_KEY,
        DATABASE_URL="postgres://lynx:lynx@127.0.0.1:5432/lynx",
        REDIS_URL="redis://127.0.0.1:6379/0",
        ALLOWED_HOSTS="lynx.example.com",
    )
    env.update(overrides)
    return env


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SECRET_KEY", "change-me"),  # .env.example's placeholders, copied as they are
        ("LYNX_ENCRYPTION_KEY", "change-me-too"),
        ("SECRET_KEY", "changeme-changeme-changeme-changeme-changeme"),
        ("SECRET_KEY", "django-insecure-" + "x1y2z3" * 8),
        ("LYNX_ENCRYPTION_KEY", "s3cret-but-short"),
        ("SECRET_KEY", "a" * 60),
    ],
)
def test_production_refuses_placeholder_or_weak_secrets_at_start(tmp_path, name, value):
    env = _production_env(tmp_path, **{name: value})
    result = _run([sys.executable, "-c", "import django; django.setup()"], env)
    assert result.returncode != 0
    assert f"LYNX_ENV=production refuses {name}" in result.stderr, result.stderr[-2000:]
    assert value not in result.stderr  # the message names the variable, never echoes the secret


def test_production_turns_on_secure_cookies_hsts_and_the_https_redirect(tmp_path):
    result = _run([sys.executable, "-c", PRINT_SETTINGS], _production_env(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values["DEBUG"] is False
    assert values["SESSION_COOKIE_SECURE"] and values["CSRF_COOKIE_SECURE"]
    assert values["SESSION_COOKIE_HTTPONLY"]
    assert values["SECURE_SSL_REDIRECT"] is True
    assert values["SECURE_HSTS_SECONDS"] >= 31536000
    # The container's own healthcheck asks over plain HTTP on loopback.
    assert values["SECURE_REDIRECT_EXEMPT"] == [r"^healthz$"]
    # X-Forwarded-Proto is a header any client can send: trusted only when the operator says a proxy sets it.
    assert values["SECURE_PROXY_SSL_HEADER"] is None


def test_the_forwarded_proto_header_is_trusted_only_when_configured(tmp_path):
    env = _production_env(tmp_path, LYNX_TRUST_PROXY_HEADERS="1")
    result = _run([sys.executable, "-c", PRINT_SETTINGS], env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["SECURE_PROXY_SSL_HEADER"] == [
        "HTTP_X_FORWARDED_PROTO",
        "https",
    ]


def test_check_deploy_finds_no_cookie_hsts_redirect_or_secret_warning(tmp_path):
    result = _run([sys.executable, "manage.py", "check", "--deploy"], _production_env(tmp_path))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    for warning in ("W004", "W008", "W009", "W012", "W016", "W018", "W020"):
        assert f"security.{warning}" not in output, output[-3000:]


def test_development_still_starts_with_the_embedded_defaults(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LYNX_", "SECRET_KEY", "DATABASE_URL"))}
    env.update(DJANGO_SETTINGS_MODULE="lynx.settings", LYNX_VAR_DIR=str(tmp_path / "var"))
    result = _run([sys.executable, "-c", PRINT_SETTINGS], env)
    assert result.returncode == 0, result.stderr[-2000:]
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values["SESSION_COOKIE_SECURE"] is False and values["SECURE_SSL_REDIRECT"] is False
