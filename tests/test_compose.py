"""Docker cannot run here (no engine on this machine), so check what can be by parsing docker-compose.yml and
the Dockerfile: every service's command names something real, and each service has the settings it needs."""

import importlib.util
import re
import tomllib
from pathlib import Path

import yaml
from django.conf import settings

from lynx.process_args import DEFAULT_QUEUE, celery_worker_argv, gunicorn_argv, local_queue

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


def _locked(path: Path) -> set[str]:
    return {m.group(1).lower() for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==\S+ \\$", path.read_text(), re.M)}


def test_the_image_installs_the_running_lock_without_the_test_tools():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"pip install [^\n]*--require-hashes -r requirements\.lock", dockerfile)
    assert "-r requirements-dev.lock" not in dockerfile
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    tools = {requirement.split("==")[0].lower() for requirement in dev}
    running, developing = _locked(ROOT / "requirements.lock"), _locked(ROOT / "requirements-dev.lock")
    assert tools and not tools & running and tools <= developing
    assert running < developing  # the dev lock is the running set plus the tools
    for lock in ("requirements.lock", "requirements-dev.lock"):
        text = (ROOT / lock).read_text()
        pins = re.findall(r"^\S+==\S+ \\\n(\s+--hash=sha256:[0-9a-f]{64})?", text, re.M)
        assert pins and all(pins), f"{lock}: every pin carries its hashes (pip install --require-hashes)"
        assert not re.search(r"^--(extra-)?index-url|^--find-links", text, re.M), (
            f"{lock} names this machine's index"
        )
    assert re.search(r"^USER\s+lynx", dockerfile, re.M), "the image runs as root"


# --- The local target in the stack: its queue, its address, its sandbox (issues 10 and 11) ----------------

WORKER_CONFINEMENT = {"apparmor=unconfined", "systempaths=unconfined"}


def test_the_worker_consumes_the_local_queue_that_web_and_beat_send_local_work_to():
    services = _compose()["services"]
    # web dispatches operations and beat sends reconcile: all three must name the same queue.
    named = {services[name]["environment"]["LYNX_LOCAL_QUEUE"] for name in ("web", "worker", "beat")}
    assert named == {"local"}
    command = services["worker"]["command"]
    assert command[command.index("-Q") + 1].split(",") == [DEFAULT_QUEUE, "local"]
    # The same queues as the worker `make run`, the tests and the bench start.
    default_argv = celery_worker_argv("lynx@%h", concurrency=4)
    assert default_argv[default_argv.index("-Q") + 1].split(",") == [DEFAULT_QUEUE, local_queue()]


def test_the_worker_serves_scoring_uris_the_web_container_can_reach_without_publishing_them():
    services = _compose()["services"]
    env = services["worker"]["environment"]
    assert env["LYNX_LOCAL_BIND_HOST"] == "0.0.0.0"
    # The worker's service name: what the web container resolves on compose's network.
    assert env["LYNX_LOCAL_PUBLIC_HOST"] == "worker" and "worker" in services
    assert "ports" not in services["worker"], "replica ports are for the web container, not the internet"
    # Only the worker binds beyond loopback; the rest keep the defaults (they start no replicas).
    for name in ("web", "beat", "migrate"):
        assert "LYNX_LOCAL_BIND_HOST" not in services[name]["environment"], name


def test_only_the_worker_gets_what_the_replica_sandbox_needs():
    services = _compose()["services"]
    worker = services["worker"]
    # Root, so replicas can drop to uid 65534; CAP_SYS_ADMIN for namespaces and mounts; AppArmor's mount ban
    # and the masked /proc paths lifted. Nothing broader: seccomp stays on, the container is not privileged.
    assert worker["user"] == "0:0"
    assert worker["cap_add"] == ["SYS_ADMIN"]
    assert set(worker["security_opt"]) == WORKER_CONFINEMENT
    assert not worker.get("privileged") and not any("seccomp" in opt for opt in worker["security_opt"])
    for name in ("web", "beat", "migrate"):
        service = services[name]
        assert "user" not in service, f"{name} must run as the image's unprivileged user"
        assert (
            not service.get("cap_add") and not service.get("security_opt") and not service.get("privileged")
        )


def test_the_image_installs_bubblewrap_and_still_runs_as_lynx():
    dockerfile = (ROOT / "Dockerfile").read_text()
    install = re.search(r"apt-get install -y --no-install-recommends bubblewrap", dockerfile)
    assert install, "the image has no bubblewrap: production would refuse every local deploy"
    user = re.search(r"^USER\s+lynx\s*$", dockerfile, re.M)
    assert user and install.start() < user.start()  # installed as root, before the image drops to lynx
    assert "rm -rf /var/lib/apt/lists" in dockerfile
