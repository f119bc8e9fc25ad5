"""Celery tasks the domain asks for, by name.

The domain never imports `workers` (workers import the domain): a step is handed to a worker by sending
the task's name through Celery's current app, which the Django project (`lynx/__init__.py`) sets up in
every process. The names are the tasks in `workers/tasks.py`.
"""

from __future__ import annotations

from typing import Any

from celery import current_app

ADVANCE_OPERATION = "workers.tasks.advance_operation"
SYNC_AZURE = "workers.tasks.sync_azure"
SYNC_AZURE_WORKSPACE = "workers.tasks.sync_azure_workspace"


def task_send(name: str, *args: Any, countdown: float = 0, queue: str | None = None) -> None:
    """Put a task on the broker. Raises kombu's OperationalError when the broker cannot be reached."""
    options: dict[str, Any] = {"countdown": countdown} if countdown else {}
    if queue:
        options["queue"] = queue
    current_app.send_task(name, args=args, **options)
