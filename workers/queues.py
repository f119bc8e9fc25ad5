"""The Celery queues Lynx routes to. Read by the settings, the Celery app and the command lines that start
workers, so it imports nothing of Lynx."""

from __future__ import annotations

import os

# Celery's own default queue: every task not routed elsewhere (Azure work, the sync, the sweeps).
DEFAULT_QUEUE = "celery"


def local_queue() -> str:
    """The queue of the host that runs local replicas: LYNX_LOCAL_QUEUE, as settings.LYNX_LOCAL_QUEUE."""
    return os.environ.get("LYNX_LOCAL_QUEUE") or "local"
