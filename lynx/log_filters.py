"""Logging filters for Lynx's console."""

from __future__ import annotations

import logging

# Periodic housekeeping runs every 2 s (reconcile_local) and 10 s (reconcile): Celery's "sent", "received"
# and "succeeded" lines for it would bury everything else `make run` prints. Their failures still show.
HOUSEKEEPING_TASKS = ("workers.tasks.reconcile",)


class QuietHousekeeping(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or not record.name.startswith("celery"):
            return True
        message = record.getMessage()
        return not any(task in message for task in HOUSEKEEPING_TASKS)
