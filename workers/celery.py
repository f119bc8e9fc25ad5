"""The Celery app. Settings come from Django's settings (CELERY_* names)."""

import os

from celery import Celery

from workers.queues import DEFAULT_QUEUE

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lynx.settings")

app = Celery("lynx")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"], related_name="tasks")


@app.on_after_configure.connect
def _survive_broker_outages(sender: Celery, **_: object) -> None:
    """A broker restart (every deploy) is waited out, never fatal: the worker and beat retry forever, and
    every socket has a bound, so neither a publish in a web request nor a health check hangs on it."""
    conf = sender.conf
    conf.worker_consumer = "workers.consumer:Consumer"  # see workers/consumer.py: kombu 5.7.0's crash
    conf.broker_connection_retry = True
    conf.broker_connection_retry_on_startup = True
    conf.broker_connection_max_retries = None  # Celery's default gives up after 100 attempts
    conf.broker_connection_timeout = 4
    conf.broker_transport_options = {
        "socket_connect_timeout": 3,
        "socket_timeout": 5,  # longer than the 1 s BRPOP; bounds a publish on a silent, half-open connection
        **(conf.broker_transport_options or {}),
    }


@app.on_after_configure.connect
def _route_local_work(sender: Celery, **_: object) -> None:
    """Local replicas live on one host: what touches them must run there, whichever worker is free.

    Operations are routed one by one (operation_dispatch: its cluster's target decides). Of the reconciler,
    only `reconcile_local` goes to the local queue: it reads every local state directory and signals the
    supervisors, which only that host can do. `reconcile` (Azure's services, over HTTPS) and the lost steps
    both reclaim (dispatched again through operation_dispatch, so routed like any step) can run anywhere:
    on the default queue they go on while the local host is down.
    """
    # Must be imported here: settings are read once Celery has configured itself from them.
    from django.conf import settings

    sender.conf.task_default_queue = DEFAULT_QUEUE
    sender.conf.task_routes = {"workers.tasks.reconcile_local": {"queue": settings.LYNX_LOCAL_QUEUE}}


@app.on_after_finalize.connect
def _install_schedule(sender: Celery, **_: object) -> None:
    from workers.schedule import beat_schedule

    sender.conf.beat_schedule = beat_schedule()
