"""The dashboard part of `make bench`, against a PostgreSQL database it creates and drops:

1. time from submitting a local deployment of the demo model (deployment_create + a real Celery worker) to
   Healthy;
2. test-scoring through the dashboard page (a live gunicorn) against a direct POST to the scoring URI;
3. with 10,000 deployments and 200,000 audit events: response times of the busiest pages over HTTP, and
   their SQL query counts (Django's test client, in this process);
4. resident memory of the web server, the Celery worker and a demo replica, and whether TensorFlow is
   loaded in the first two.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import requests

from lynx.process_args import celery_worker_argv, embedded_redis_argv
from scoring import control

from .htmlform import form_data
from .report import Report

REPO = Path(__file__).resolve().parent.parent
DEPLOYMENTS, AUDIT_EVENTS = 10_000, 200_000
PASSWORD = "bench-password-not-secret"
SECTION_DEPLOY = "local deployment of the demo model: submit -> Healthy"
SECTION_TEST = "test scoring: demo model, one 64x64 PNG"
SECTION_PAGES = f"dashboard with {DEPLOYMENTS:,} deployments and {AUDIT_EVENTS:,} audit events (PostgreSQL)"
SECTION_API = f"API with {DEPLOYMENTS:,} deployments and {AUDIT_EVENTS:,} audit events (PostgreSQL, a token)"
SECTION_MEMORY = "memory: resident MB"
API_SAMPLES = 50  # requests per endpoint and repeat: p50 and p90 of these


def _wait(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _loads_tensorflow(pid: int) -> bool:
    try:
        return "tensorflow" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


class Processes:
    """Every process this part starts, stopped in reverse order (process groups of their own)."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        process = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            os.killpg(process.pid, 15)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()

    def stop_all(self) -> None:
        for process in reversed(self.started):
            self.stop(process)


def _create_database(server: str) -> str:
    import psycopg

    name = f"lynx_bench_{os.getpid()}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    return name


def _drop_database(server: str, name: str) -> None:
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _login(base: str, username: str) -> requests.Session:
    session = requests.Session()
    page = session.get(f"{base}/login/", timeout=30)
    fields = form_data(page.text, must_have="username")
    fields.update(username=username, password=PASSWORD)
    response = session.post(f"{base}/login/", data=fields, headers={"Referer": f"{base}/login/"}, timeout=30)
    if "sessionid" not in session.cookies:
        raise RuntimeError(f"could not log in to the dashboard ({response.status_code})")
    return session


def run(
    report: Report,
    *,
    var_dir: Path,
    repeats: int,
    database_server: str,
    log: Callable[[str], None],
    pages: bool = True,
) -> None:
    """pages=False stops after the test-scoring measurement (no 10,000-deployment data set, no web memory)."""

    try:
        database = _create_database(database_server)
    except Exception as error:  # no PostgreSQL here: say so, measure the rest of the bench
        report.note(f"dashboard part skipped: cannot create a database on {database_server}: {error}")
        return
    bench_dir = var_dir / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    socket_path = bench_dir / "redis.sock"
    socket_path.unlink(missing_ok=True)
    env = dict(
        os.environ,
        DATABASE_URL=f"{database_server}/{database}",
        REDIS_URL=f"unix://{socket_path}",
        LYNX_VAR_DIR=str(var_dir),
        DJANGO_SETTINGS_MODULE="lynx.settings",
        PYTHONUNBUFFERED="1",
        LYNX_API_RATE="1000000/m",  # the bench measures the API, not its rate limit
    )
    os.environ.update({key: env[key] for key in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")})
    processes = Processes()
    processes.start(
        embedded_redis_argv(socket_path),
        env,
        bench_dir / "redis.log",
    )
    local_dir = var_dir / "local"
    try:
        _wait(socket_path.exists, 20, "the embedded Redis")
        _run(report, env=env, processes=processes, repeats=repeats, bench_dir=bench_dir, log=log, pages=pages)
    finally:
        processes.stop_all()
        control.stop_all(local_dir)
        from django.db import connections

        connections.close_all()
        _drop_database(database_server, database)


def _run(
    report: Report, *, env: dict, processes: Processes, repeats: int, bench_dir: Path, log, pages: bool
) -> None:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.management import call_command

    from deployments.environments import default_entry_script, default_environment_yaml
    from deployments.management.commands.lynx_seed import build_demo_model
    from deployments.models import Deployment, Operation
    from deployments.services import cluster_create, deployment_create, deployment_delete
    from deployments.services.prices import vm_prices_seed
    from deployments.services.registered_models import model_register
    from deployments.states import ServiceState

    log("migrating the bench database...")
    call_command("migrate", verbosity=0)
    vm_prices_seed()
    users = get_user_model()
    deployer = users.objects.create_user("bench-deployer", "deployer@example.com", PASSWORD)
    deployer.groups.add(Group.objects.get_or_create(name="deployer")[0])

    worker = processes.start(
        celery_worker_argv(f"bench{os.getpid()}@%h", concurrency=1, standalone=True),
        env,
        bench_dir / "celery-worker.log",
    )
    _wait(
        lambda: " ready." in (bench_dir / "celery-worker.log").read_text(errors="replace"), 120, "the worker"
    )

    log("provisioning a local cluster and registering the demo model...")
    operation = cluster_create(user=deployer, name="bench-local")
    finished = ("succeeded", "failed")
    _wait(lambda: Operation.objects.get(pk=operation.pk).state in finished, 120, "the cluster", 0.1)
    cluster = operation.cluster
    cluster.refresh_from_db()
    with _quiet_stdout():  # the model build prints its metrics
        built = build_demo_model(Path(os.environ["LYNX_VAR_DIR"]) / "cache" / "demo-model")
    model = model_register(
        user=None, name="digits", source_dir=built / "model", labels=(built / "labels.txt").read_text()
    )

    # 1. submit -> Healthy, measured from just before deployment_create (what the deploy button calls).
    kept = None
    for repeat in range(repeats):
        started = time.monotonic()
        operation = deployment_create(
            user=deployer,
            name=f"demo-{repeat}",
            cluster=cluster,
            model=model,
            entry_script=default_entry_script(),
            environment_yaml=default_environment_yaml(),
        )

        def settled(pk=operation.deployment_id, op=operation.pk):
            state = Deployment.objects.filter(pk=pk).values_list("state", flat=True).first()
            return state == ServiceState.HEALTHY or Operation.objects.get(pk=op).state == "failed"

        _wait(settled, 180, "the deployment", 0.02)
        elapsed = time.monotonic() - started
        deployment = Deployment.objects.get(pk=operation.deployment_id)
        if deployment.state != ServiceState.HEALTHY:
            raise RuntimeError(f"the demo deployment failed: {Operation.objects.get(pk=operation.pk).error}")
        report.add(SECTION_DEPLOY, "submit -> Healthy", "seconds", elapsed)
        log(f"demo deployment {repeat + 1}/{repeats}: Healthy after {elapsed:.1f} s")
        if kept is None:
            kept = deployment
            continue
        gone = deployment_delete(user=deployer, deployment=deployment)
        _wait(lambda op=gone.pk: Operation.objects.get(pk=op).state in finished, 120, "the deletion", 0.1)

    status = control.read_status(Path(os.environ["LYNX_VAR_DIR"]) / "local" / "services" / kept.name) or {}
    replica = (status.get("replicas") or [{}])[0]
    workers_rss = sum(psutil.Process(pid).memory_info().rss for pid in replica.get("worker_pids", []))
    report.add(
        SECTION_MEMORY, "demo replica: gunicorn worker (TensorFlow + model)", "MB", workers_rss / 2**20
    )
    report.add(SECTION_MEMORY, "demo replica: arbiter + worker", "MB", replica.get("rss_bytes", 0) / 2**20)
    # File-backed pages (TensorFlow's shared library, mostly) are page cache the kernel can drop and every
    # replica shares; how many of them a process maps also depends on the page cache's state (see
    # docs/PERFORMANCE.md). The anonymous part is the replica's own.
    infos = [
        psutil.Process(pid).memory_info()
        # server_pid: the gunicorn arbiter; "pid" is the bwrap process around a sandboxed replica.
        for pid in [replica.get("server_pid") or replica.get("pid"), *replica.get("worker_pids", [])]
        if pid
    ]
    report.add(
        SECTION_MEMORY,
        "demo replica: arbiter + worker, anonymous (not file-backed)",
        "MB",
        sum(info.rss - info.shared for info in infos) / 2**20,
    )
    celery = psutil.Process(worker.pid)
    for index, process in enumerate([celery, *celery.children(recursive=True)]):
        what = "Celery worker: main process" if index == 0 else f"Celery worker: pool process {index}"
        report.add(
            SECTION_MEMORY,
            what,
            "MB",
            process.memory_info().rss / 2**20,
            note="TensorFlow loaded" if _loads_tensorflow(process.pid) else "no TensorFlow",
        )
    processes.stop(worker)  # from here on a deploy POST only queues its first step

    port = control.free_port()
    web = processes.start(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "lynx.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            "4",
            "--graceful-timeout",
            "5",
        ],
        env,
        bench_dir / "web.log",
    )
    base = f"http://127.0.0.1:{port}"

    def web_up() -> bool:
        try:
            requests.get(f"{base}/login/", timeout=2)  # any answer: /healthz is 503 without a worker
        except requests.RequestException:
            return False
        return True

    _wait(web_up, 60, "the web server", 0.2)
    session = _login(base, deployer.username)

    # 2. test scoring through the dashboard page vs. straight to the scoring URI, alternating.
    log("test scoring: dashboard vs direct...")
    from deployments.crypto import decrypt
    from scoring.demo_model import load_split, render_digit

    image = render_digit(load_split()[2][0], fmt="PNG")
    key = decrypt(kept.primary_key_encrypted)
    direct = requests.Session()
    test_url = f"{base}/deployments/{kept.pk}/test/"
    token = form_data(session.get(test_url, timeout=30).text, must_have="csrfmiddlewaretoken")[
        "csrfmiddlewaretoken"
    ]

    def post_direct() -> float:
        began = time.perf_counter()
        response = direct.post(
            kept.scoring_uri, data=image, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        response.raise_for_status()
        return (time.perf_counter() - began) * 1000

    def post_dashboard(partial: bool) -> float:
        # partial: what the page's script sends (fetch, X-Lynx-Partial), answered with the result fragment;
        # otherwise the form posted without JavaScript, answered with the whole page.
        headers = {"Referer": test_url, **({"X-Lynx-Partial": "test-outcome"} if partial else {})}
        began = time.perf_counter()
        response = session.post(
            test_url,
            data={"csrfmiddlewaretoken": token},
            files={"image": ("digit.png", image, "image/png")},
            headers=headers,
            timeout=30,
        )
        response.raise_for_status()
        if 'id="scores"' not in response.text:
            raise RuntimeError(f"the test-scoring page did not show scores: {response.text[:300]}")
        return (time.perf_counter() - began) * 1000

    for _ in range(3):
        post_direct(), post_dashboard(True), post_dashboard(False)
    for _ in range(repeats):
        triples = [(post_direct(), post_dashboard(True), post_dashboard(False)) for _ in range(30)]
        straight, through, page = (statistics.median(t[i] for t in triples) for i in range(3))
        report.add(SECTION_TEST, "direct POST to the scoring URI", "median ms", straight)
        report.add(SECTION_TEST, "through the test page (its script: fetch, fragment)", "median ms", through)
        report.add(SECTION_TEST, "through the test page without JavaScript", "median ms", page)
        report.ratio("dashboard_overhead_ms", through - straight, "ms")
        report.ratio("dashboard_overhead_no_js_ms", page - straight, "ms")
    if not pages:
        return

    # 3. the pages at scale.
    log(f"adding {DEPLOYMENTS:,} deployments and {AUDIT_EVENTS:,} audit events...")
    from django.db import connection

    from .dataset import populate

    began = time.monotonic()
    dataset = populate(deployments=DEPLOYMENTS, audit_events=AUDIT_EVENTS)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")  # what autovacuum does to a table this size soon after
    log(f"  ...in {time.monotonic() - began:.0f} s")
    _pages(report, session=session, base=base, dataset=dataset, repeats=repeats, deployer=deployer)
    _api(report, base=base, dataset=dataset, repeats=repeats, deployer=deployer)

    workers = psutil.Process(web.pid).children(recursive=True)
    for process in workers:
        report.add(
            SECTION_MEMORY,
            "web server: gunicorn worker (after the pages above)",
            "MB",
            process.memory_info().rss / 2**20,
            note="TensorFlow loaded" if _loads_tensorflow(process.pid) else "no TensorFlow",
        )


def _pages(report: Report, *, session: requests.Session, base: str, dataset, repeats: int, deployer) -> None:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    pages = {
        "overview": "/",
        "deployment page": f"/deployments/{dataset.busy.pk}/",
        "audit log, first page": "/audit/",
        "audit log, filtered": f"/audit/?person={dataset.person}&action=deployment",
        "deploy POST": "/deployments/new/",
    }

    def deploy_fields(html: str) -> dict[str, str]:
        fields = form_data(html, must_have="entry_script")
        name = f"post-{uuid.uuid4().hex[:8]}"
        fields.update(name=name, cluster=str(dataset.cluster.pk), model=str(dataset.model.pk))
        return fields

    def timed(name: str) -> float:
        """One request over HTTP; for the deploy POST, the form is fetched first (not timed)."""
        url = base + pages[name]
        if name == "deploy POST":
            fields = deploy_fields(session.get(url, timeout=60).text)
            began = time.perf_counter()
            response = session.post(
                url, data=fields, headers={"Referer": url}, timeout=60, allow_redirects=False
            )
            expected = 302
        else:
            began = time.perf_counter()
            response = session.get(url, timeout=60)
            expected = 200
        elapsed = (time.perf_counter() - began) * 1000
        if response.status_code != expected:
            raise RuntimeError(f"{name}: {response.status_code} {response.text[:300]}")
        return elapsed

    for name in pages:
        timed(name), timed(name)  # warm: templates compiled, the database's caches filled
    for _ in range(repeats):
        for name in pages:
            report.add(SECTION_PAGES, name, "median ms", statistics.median(timed(name) for _ in range(10)))

    # Query counts in this process (the same database), with the test client.
    client = Client()
    client.force_login(deployer)
    for name, path in pages.items():
        fields = deploy_fields(client.get(path).content.decode()) if name == "deploy POST" else None
        if fields is None:
            client.get(path)
        with CaptureQueriesContext(connection) as queries:
            response = client.post(path, fields) if fields is not None else client.get(path)
        if response.status_code not in (200, 302):
            raise RuntimeError(f"{name}: {response.status_code}")
        report.add(SECTION_PAGES, name, "SQL queries", len(queries.captured_queries))


def _api(report: Report, *, base: str, dataset, repeats: int, deployer) -> None:
    """p50/p90 of the API's reads (and a deploy) over HTTP with a token, at the same scale as the pages."""
    from api.tokens import token_create
    from deployments.models import AuditEvent

    secret = token_create(actor=deployer, owner=deployer, name=f"bench-{uuid.uuid4().hex[:6]}").secret
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {secret}"
    deep = AuditEvent.objects.order_by("pk").values_list("pk", flat=True)[AUDIT_EVENTS // 2]
    reads = {
        "GET /deployments (first page)": "/api/v1/deployments?limit=50",
        "GET /deployments/{busy}": f"/api/v1/deployments/{dataset.busy.name}",
        "GET /audit (first page)": "/api/v1/audit?limit=50",
        "GET /audit (filtered)": f"/api/v1/audit?actor={dataset.person}&action=deployment",
        "GET /audit (a page 100,000 rows in)": f"/api/v1/audit?limit=50&cursor={deep}",
        "GET /operations": "/api/v1/operations?limit=50",
        "GET /costs": "/api/v1/costs",
    }

    def timed(name: str) -> float:
        began = time.perf_counter()
        if name == "POST /deployments (deploy)":
            response = api.post(
                f"{base}/api/v1/deployments",
                json={
                    "name": f"api-{uuid.uuid4().hex[:8]}",
                    "model": dataset.model.name,
                    "model_version": dataset.model.version,
                    "cluster": dataset.cluster.name,
                },
                timeout=60,
            )
            expected = 202
        else:
            response = api.get(base + reads[name], timeout=60)
            expected = 200
        elapsed = (time.perf_counter() - began) * 1000
        if response.status_code != expected:
            raise RuntimeError(f"API {name}: {response.status_code} {response.text[:300]}")
        return elapsed

    names = [*reads, "POST /deployments (deploy)"]
    for name in names:
        timed(name), timed(name)  # warm
    for _ in range(repeats):
        for name in names:
            samples = sorted(timed(name) for _ in range(API_SAMPLES if name in reads else 10))
            report.add(SECTION_API, name, "p50 ms", statistics.median(samples))
            report.add(SECTION_API, name, "p90 ms", samples[int(len(samples) * 0.9) - 1])
