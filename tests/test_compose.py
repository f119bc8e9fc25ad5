"""Docker cannot run here, so check what can be: every service's command names something real."""

import importlib.util
from pathlib import Path

import yaml

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
