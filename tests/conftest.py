"""Shared fixtures: real services only. PostgreSQL/Redis when DATABASE_URL/REDIS_URL name them,
else SQLite and an embedded redis-server; real Celery worker processes; real replicas."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from django.conf import settings

from lynx.process_args import celery_beat_argv, celery_worker_argv, embedded_redis_argv

BASE_DIR = Path(__file__).resolve().parent.parent
T = TypeVar("T")


@pytest.fixture(scope="session", autouse=True)
def broker() -> Iterator[str]:
    """The broker every test talks to: REDIS_URL's Redis, or an embedded one on a unix socket."""
    if os.environ.get("REDIS_URL"):
        yield settings.REDIS_URL
        return

    sock = settings.EMBEDDED_REDIS_SOCKET
    sock.unlink(missing_ok=True)
    proc = subprocess.Popen(
        embedded_redis_argv(sock, settings.VAR_DIR),
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            if redis.Redis(unix_socket_path=str(sock)).ping():
                break
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    yield settings.REDIS_URL
    proc.terminate()
    proc.wait(10)


@pytest.fixture(autouse=True)
def _clean_broker(broker: str) -> None:
    """Every test starts with an empty queue: no task left over from another test."""
    redis.Redis.from_url(broker).flushdb()


@pytest.fixture(autouse=True)
def _roles(request: pytest.FixtureRequest) -> None:
    """The role groups come from a data migration, which a transactional test's flush removes."""
    if "django_db_setup" in request.fixturenames or request.node.get_closest_marker("django_db"):
        from django.contrib.auth.models import Group

        for name in ("viewer", "deployer", "admin"):
            Group.objects.get_or_create(name=name)


def _user(django_user_model, username: str, role: str | None, superuser: bool = False):
    from django.contrib.auth.models import Group

    if superuser:
        return django_user_model.objects.create_superuser(
            username, f"{username}@example.com", "pw-" + username
        )
    user = django_user_model.objects.create_user(username, f"{username}@example.com", "pw-" + username)
    if role:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


@pytest.fixture
def deployer(db, django_user_model):
    return _user(django_user_model, "dana", "deployer")


@pytest.fixture
def teammate(db, django_user_model):
    return _user(django_user_model, "theo", "deployer")


@pytest.fixture
def viewer(db, django_user_model):
    return _user(django_user_model, "vera", "viewer")


@pytest.fixture
def admin_user(db, django_user_model):
    return _user(django_user_model, "ada", "admin", superuser=True)


@pytest.fixture
def outsider(db, django_user_model):
    """Logged in, but in no group: reads like a viewer, changes nothing."""
    return _user(django_user_model, "otto", None)


@pytest.fixture(scope="session")
def demo_model_files() -> Path:
    """The demo model, trained once per recipe version (cached under var/)."""
    from deployments.management.commands.lynx_seed import build_demo_model

    return build_demo_model(settings.VAR_DIR / "cache" / "demo-model")


@pytest.fixture
def demo_model(request: pytest.FixtureRequest, demo_model_files: Path):
    """The demo model registered as digits:1 (in whichever database mode the test uses)."""
    transactional = {"transactional_db", "live_server", "celery_processes"} & set(request.fixturenames)
    request.getfixturevalue("transactional_db" if transactional else "db")
    from deployments.services.registered_models import model_register

    return model_register(
        user=None,
        name="digits",
        source_dir=demo_model_files / "model",
        labels=(demo_model_files / "labels.txt").read_text(),
    )


@pytest.fixture
def stop_local_replicas() -> Iterator[None]:
    """Whatever a test deploys locally is stopped afterwards, even when the test fails."""
    yield
    from scoring import control

    control.stop_all(settings.LYNX_LOCAL_DIR)


def worker_env() -> dict[str, str]:
    """The environment a worker process needs to share this test session's database and broker."""
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        url = f"sqlite:///{db['NAME']}"
    else:
        auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        url = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    # azure-ai-ml writes "the current cloud" (AZUREML_CURRENT_CLOUD) into this process's environment
    # whenever a test makes an MLClient; that is the SDK's process state, not configuration, and a worker
    # that inherits it looks that cloud up before registering its own ("Unknown cloud environment").
    # Workers start without it, as they do outside the tests.
    inherited = {k: v for k, v in os.environ.items() if k != "AZUREML_CURRENT_CLOUD"}
    return dict(
        inherited,
        DATABASE_URL=url,
        REDIS_URL=settings.REDIS_URL,
        LYNX_VAR_DIR=str(settings.VAR_DIR),
        LYNX_OPERATION_LEASE_SECONDS=str(settings.LYNX_OPERATION_LEASE_SECONDS),
        LYNX_POLL_SECONDS="0.5",
        LYNX_RECONCILE_SECONDS="2",
        DJANGO_SETTINGS_MODULE="lynx.settings",
        PYTHONUNBUFFERED="1",
    )


class CeleryProcess:
    """A real `celery worker` (or `beat`) process."""

    def __init__(self, role: str, name: str, log: Path) -> None:
        if role == "worker":
            argv = celery_worker_argv(f"{name}@%h", concurrency=1, standalone=True)
        else:
            argv = celery_beat_argv(log.with_suffix(".schedule"))
        self.log = log
        self.proc = subprocess.Popen(
            argv,
            cwd=BASE_DIR,
            env=worker_env(),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            if " ready." in text or "beat: Starting" in text:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery exited:\n{text[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"celery did not start:\n{self.log.read_text(errors='replace')[-3000:]}")

    def kill(self) -> None:
        """SIGKILL, as the kernel's OOM killer or a pulled plug would."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def celery_processes(transactional_db, tmp_path: Path) -> Iterator:
    """Start real Celery processes on demand: `start("worker")`, `start("beat")`."""
    started: list[CeleryProcess] = []

    def start(role: str = "worker", name: str | None = None) -> CeleryProcess:
        name = name or f"{role}{len(started)}"
        process = CeleryProcess(role, name, tmp_path / f"{name}.log")
        started.append(process)
        process.wait_ready()
        return process

    yield start
    for process in reversed(started):
        process.stop()


def run_in_new_loop(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """`asyncio.run(main())` in a thread of its own: once a browser test has run, Playwright's sync API keeps
    an event loop running in the main thread for the rest of the session, and asyncio.run refuses to start
    a second one there."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(main())).result()


def wait_for(predicate, timeout: float = 60, interval: float = 0.3, message: str = "condition"):
    """Poll until `predicate()` is truthy; every wait in the suite is bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {message}")


def digit_images(label: int, count: int = 5, fmt: str = "PNG") -> list[bytes]:
    """Held-out handwritten digits of one class, encoded as a client would send them."""
    from scoring.demo_model import load_split, render_digit

    _, _, x_test, y_test = load_split()
    return [render_digit(x, fmt=fmt) for x in x_test[y_test == label][:count]]


# --- the browser: one Playwright + Debian chromium for the whole session --------------------------------
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser() -> Iterator:
    if not os.path.exists(CHROMIUM) and not shutil.which("chromium"):
        message = "Debian's chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an asyncio loop running in this thread; the tests' own ORM calls are
    # still synchronous, which Django would otherwise refuse (Django's documented escape hatch).
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-gpu",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


def wait_for_operation(page, timeout_ms: int = 180_000) -> str:
    """Wait on an operation's page until its live progress says it finished; its final state."""
    page.wait_for_selector("#operation[data-finished=true]", timeout=timeout_ms)
    return page.inner_text("#op-state")


def _logged_in_pages(browser, live_server, **context_options) -> Iterator:
    """`open_as(username, password)`: a fresh browser context (own cookies), logged in through the form."""
    contexts = []

    def open_as(username: str, password: str):
        context = browser.new_context(base_url=live_server.url, **context_options)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto("/login/")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_url(live_server.url + "/")
        return page

    yield open_as
    for context in contexts:
        context.close()


@pytest.fixture
def new_page(browser, live_server):
    """Open a fresh browser context (its own cookies) logged in as `user`."""
    yield from _logged_in_pages(browser, live_server, viewport={"width": 1280, "height": 900})


@pytest.fixture
def no_js_page(browser, live_server):
    """`open_as(username, password)`: a page logged in with JavaScript off, as some users browse."""
    yield from _logged_in_pages(browser, live_server, java_script_enabled=False)
