"""Docker cannot run here, so check what can be: every service's command names something real."""

import importlib.util
import re
import tomllib
from pathlib import Path

import yaml
from django.conf import settings

from dashboard.process_args import gunicorn_argv

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_describes_the_production_stack():
    services = _compose()["services"]
    assert {"postgres", "redis", "web", "worker", "beat"} <= set(services)
    web = services["web"]
    assert web["environment"]["DATABASE_URL"].startswith("postgres://")
    assert web["environment"]["REDIS_URL"].startswith("redis://")
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]


def test_every_project_command_names_a_real_module_or_script():
    checked = 0
    for name, service in _compose()["services"].items():
        command = service.get("command")
        if not command or command[0] != "python":
            continue  # postgres, redis: upstream images
        if command[1] == "-m":
            module = command[2]
            assert importlib.util.find_spec(module) is not None, f"{name}: no module {module}"
            if module == "gunicorn":
                target = command[3].split(":")[0]
                assert importlib.util.find_spec(target) is not None, f"{name}: no WSGI module {target}"
            if module == "celery":
                app = command[command.index("-A") + 1]
                assert importlib.util.find_spec(app) is not None, f"{name}: no Celery app {app}"
        else:
            assert (ROOT / command[1]).is_file(), f"{name}: no script {command[1]}"
        checked += 1
    assert checked >= 4


# --- The production stack's shape (issues 10 and 11) --------------------------------------------------

LONG_RUNNING = ("postgres", "redis", "web", "worker", "beat", "nginx")
NGINX_CONF = ROOT / "deploy" / "nginx.conf"


def _nginx_directive(name: str) -> str:
    """The value of a directive set once in deploy/nginx.conf (comments ignored)."""
    text = "\n".join(line.split("#", 1)[0] for line in NGINX_CONF.read_text().splitlines())
    values = set(re.findall(rf"^\s*{name}\s+([^;]+);", text, re.M))
    assert len(values) == 1, f"{name}: {values or 'not set'}"
    return values.pop().strip()


def test_nginx_fronts_the_web_server_which_is_not_published():
    services = _compose()["services"]
    nginx = services["nginx"]
    assert nginx["image"].startswith("nginx:")
    assert any(str(v).startswith("./deploy/nginx.conf:") for v in nginx["volumes"]), nginx["volumes"]
    assert NGINX_CONF.is_file()
    assert {str(p).split(":")[-1] for p in nginx["ports"]} == {"80", "443"}
    assert "ports" not in services["web"], "gunicorn must be reachable only through nginx"
    assert "proxy_pass http://web:8000" in NGINX_CONF.read_text()


def test_nginx_bounds_slow_clients_and_buffers_uploads():
    for directive in ("client_header_timeout", "client_body_timeout", "send_timeout", "proxy_read_timeout"):
        seconds = int(_nginx_directive(directive).rstrip("s"))
        assert 1 <= seconds <= 300, (directive, seconds)
    assert int(_nginx_directive("client_header_timeout").rstrip("s")) <= 15
    # A model archive of Lynx's largest size (and its multipart wrapping) passes; not much more does.
    max_body = _nginx_directive("client_max_body_size")
    assert max_body.endswith("m")
    limit_mb = settings.LYNX_MODEL_UPLOAD_MAX_BYTES // 2**20
    assert limit_mb < int(max_body[:-1]) <= limit_mb + 64
    # The whole body is in before gunicorn is asked: a slow upload holds nginx, not a gunicorn thread.
    assert _nginx_directive("proxy_request_buffering") == "on"


def test_the_forwarded_headers_are_set_by_nginx_and_trusted_by_django():
    text = NGINX_CONF.read_text()
    # Overwritten, never appended to: what the client sent in these headers is dropped at the edge.
    assert re.search(r"proxy_set_header\s+X-Forwarded-Proto\s+\$scheme;", text)
    assert re.search(r"proxy_set_header\s+X-Forwarded-For\s+\$remote_addr;", text)
    assert _compose()["services"]["web"]["environment"]["LYNX_TRUST_PROXY_HEADERS"] == "1"


def test_every_long_running_service_restarts_and_has_a_healthcheck():
    services = _compose()["services"]
    assert set(LONG_RUNNING) | {"migrate"} == set(services)
    for name in LONG_RUNNING:
        assert services[name].get("restart") == "unless-stopped", name
        check = services[name].get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), name
    # The one-shot migration must not be restarted once it has succeeded.
    assert services["migrate"]["restart"] in ("no", "on-failure")


def test_migrations_run_once_before_web_and_workers_start():
    services = _compose()["services"]
    assert services["migrate"]["command"][:3] == ["python", "manage.py", "migrate"]
    for name in ("web", "worker", "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name
        assert depends["postgres"] == {"condition": "service_healthy"}, name
    assert services["nginx"]["depends_on"]["web"]["condition"] in ("service_started", "service_healthy")


def test_compose_runs_the_same_gunicorn_as_make_run():
    command = _compose()["services"]["web"]["command"]
    expected = gunicorn_argv("0.0.0.0:8000", workers=3)
    assert command == ["python", *expected[1:]]


def test_the_image_leaves_out_the_test_tools():
    dockerfile = (ROOT / "Dockerfile").read_text()
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    excluded = re.search(r"grep -v -E? ?'\^\(([^)]+)\)==", dockerfile)
    assert excluded, "the Dockerfile installs requirements.lock unfiltered"
    names = set(excluded.group(1).split("|"))
    assert {requirement.split("==")[0] for requirement in dev} <= names
    assert re.search(r"^USER\s+lynx", dockerfile, re.M), "the image runs as root"
